//! Stopping a VM whose guest will not stop itself: QMP `quit`, then SIGKILL
//! of the hypervisor if it does not go in time (a stopped or hung QEMU
//! answers no QMP).

use std::time::Duration;

use hull_vm::Vm;
use tracing::{debug, warn};

/// How long the hypervisor gets to quit when asked before it is killed.
pub const QUIT_GRACE: Duration = Duration::from_secs(3);

/// Stops `vm` now and returns once it is gone. The guest gets no say.
pub async fn halt<V: Vm>(vm: &V) {
    let mut exit = vm.exit();
    if exit.borrow().is_some() {
        return;
    }
    let mut quit_exit = vm.exit();
    let quit = async {
        if let Err(err) = vm.quit().await {
            debug!(vm = vm.id(), error = %err, "QMP quit failed");
        }
        let _ = quit_exit.wait_for(Option::is_some).await;
    };
    if tokio::time::timeout(QUIT_GRACE, quit).await.is_err() {
        warn!(vm = vm.id(), "the hypervisor did not quit; killing it");
        vm.kill();
    }
    let _ = exit.wait_for(Option::is_some).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use hull_vm::{DiskConfig, VmExit};
    use tokio::net::UnixStream;
    use tokio::sync::watch;

    use super::*;

    /// A hypervisor process as `halt` sees it: one that quits when asked,
    /// or a stopped one that answers nothing and only dies of SIGKILL.
    struct FakeVm {
        answers_qmp: bool,
        killed: AtomicBool,
        exit: watch::Sender<Option<VmExit>>,
    }

    impl FakeVm {
        fn new(answers_qmp: bool) -> Self {
            Self {
                answers_qmp,
                killed: AtomicBool::new(false),
                exit: watch::channel(None).0,
            }
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the fake VM does not do that")]
    struct Unsupported;

    impl Vm for FakeVm {
        type Error = Unsupported;
        fn id(&self) -> &str {
            "fake"
        }
        fn take_control_channel(&mut self) -> Option<UnixStream> {
            None
        }
        fn exit(&self) -> watch::Receiver<Option<VmExit>> {
            self.exit.subscribe()
        }
        fn kill(&self) {
            self.killed.store(true, Ordering::SeqCst);
            self.exit.send_replace(Some(VmExit::Killed(libc::SIGKILL)));
        }
        async fn quit(&self) -> Result<(), Unsupported> {
            if !self.answers_qmp {
                std::future::pending::<()>().await;
            }
            self.exit.send_replace(Some(VmExit::Exited(0)));
            Ok(())
        }
        fn is_detached(&self) -> bool {
            true
        }
        fn console_tail(&self) -> String {
            String::new()
        }
        async fn attach_disk(&self, _: &DiskConfig) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
        async fn detach_disk(&self, _: &str) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
        async fn plug_nic(&self, _: usize, _: &str) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
        async fn unplug_nic(&self, _: usize) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
        async fn set_guest_memory(&self, _: u64) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
        async fn set_running(&self, _: bool) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
        async fn save_state(&self, _: &std::path::Path) -> Result<(), Unsupported> {
            Err(Unsupported)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hypervisor_that_quits_is_not_killed() {
        let vm = FakeVm::new(true);
        halt(&vm).await;
        assert_eq!(*vm.exit.borrow(), Some(VmExit::Exited(0)));
        assert!(!vm.killed.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hypervisor_that_answers_no_qmp_is_killed_after_the_grace() {
        let vm = FakeVm::new(false);
        let started = tokio::time::Instant::now();
        halt(&vm).await;
        assert!(vm.killed.load(Ordering::SeqCst));
        // On the test's paused clock: it had its grace before the kill.
        assert!(started.elapsed() >= QUIT_GRACE);
    }
}
