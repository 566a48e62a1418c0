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
