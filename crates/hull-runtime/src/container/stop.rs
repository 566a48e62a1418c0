//! Signals, `stop`, `kill` and `rm`: ending a container's process, and its
//! VM when the guest does not answer. A silent or hostile agent never
//! holds any of them up past its request's deadline: its VM is then
//! stopped outright (QMP `quit`, then SIGKILL).

use std::sync::Arc;
use std::time::Duration;

use hull_proto::Request;
use hull_vm::Hypervisor;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{lock, Container, ContainerError, Containers, Snapshot, Status};
use crate::agent::AgentError;
use crate::run::remove_dir;

/// Docker's default grace period for `stop`.
const DEFAULT_STOP_TIMEOUT: u32 = 10;
/// How long a killed process may take to be reported gone before its VM is
/// killed outright.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long a VM stopped outright may take to be recorded gone: QMP's
/// `quit`, SIGKILL after it, and the supervisor's bookkeeping.
const HALT_GRACE: Duration = Duration::from_secs(15);

impl Container {
    /// Sends `signal` to the main process.
    pub async fn signal(&self, signal: i32) -> Result<(), ContainerError> {
        let agent = self.running_agent()?;
        let request = Request::Signal {
            container: self.id.clone(),
            process: "init".into(),
            signal,
        };
        match agent.request_done(&request).await {
            Ok(()) => Ok(()),
            // It exited between our look and the agent's.
            Err(AgentError::Refused(refusal))
                if refusal.kind == hull_proto::ErrorKind::NotFound =>
            {
                Err(ContainerError::NotRunning(self.id.clone()))
            }
            Err(err) => Err(err.into()),
        }
    }

    fn stop_signal(&self) -> i32 {
        self.config()
            .stop_signal
            .as_deref()
            .and_then(|s| parse_signal(s).ok())
            .unwrap_or(libc::SIGTERM)
    }

    /// Stops the VM at once, when the guest does not answer: its
    /// supervisor halts it and records the exit.
    fn kill_vm(&self) {
        if let Some(run) = lock(&self.run).as_ref() {
            run.kill.cancel();
        }
    }

    /// Halts the VM and waits until its supervisor recorded the exit.
    async fn halt_and_wait(
        &self,
        changes: &mut watch::Receiver<Snapshot>,
        exited: impl Fn(&Snapshot) -> bool,
    ) {
        self.kill_vm();
        if tokio::time::timeout(HALT_GRACE, changes.wait_for(exited))
            .await
            .is_err()
        {
            warn!(container = %self.id, "the halted VM's exit was not recorded in time");
        }
    }
}

/// Whether `err` says the agent cannot take a signal any more: it did not
/// answer in time, or its channel is gone.
fn agent_unreachable(err: &ContainerError) -> bool {
    matches!(err, ContainerError::Agent(agent) if agent.is_unreachable())
}

impl<H: Hypervisor> Containers<H> {
    /// Stops the main process: its stop signal, then SIGKILL after `timeout`
    /// seconds. Returns false if it was not running.
    pub async fn stop(
        &self,
        container: &Arc<Container>,
        timeout: Option<u32>,
    ) -> Result<bool, ContainerError> {
        let _op = container.ops.lock().await;
        self.resume_paused(container).await?;
        let stopped = self.stop_locked(container, timeout).await?;
        if stopped {
            // As docker's: once stop returns, the container publishes no
            // port, and a user-mode VM's ports close with its QEMU.
            container.vm_gone().await;
            self.emit(container, "stop", &[]);
        }
        // One stopped while it waited to restart leaves its pod's VM idle.
        self.settle_pod_of(container).await;
        Ok(stopped)
    }

    pub(super) async fn stop_locked(
        &self,
        container: &Arc<Container>,
        timeout: Option<u32>,
    ) -> Result<bool, ContainerError> {
        let state = container.state();
        if state.status == Status::Restarting {
            container.update(|s| {
                s.stopped_by_user = true;
                s.status = Status::Exited;
            });
            return Ok(true);
        }
        if !state.running() {
            return Ok(false);
        }
        container.update(|s| s.stopped_by_user = true);
        let timeout = timeout
            .or(container.config().stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let mut changes = container.changes.subscribe();
        let exits = state.exits;
        let exited = |s: &Snapshot| s.state.exits > exits || s.removed;
        if timeout > 0 {
            let signal = container.stop_signal();
            self.emit(container, "kill", &[("signal", signal.to_string())]);
            match container.signal(signal).await {
                Ok(()) | Err(ContainerError::NotRunning(_)) => {}
                Err(err) if agent_unreachable(&err) => {
                    warn!(container = %container.id, error = %err, "the guest does not take the stop signal; stopping its VM");
                    container.halt_and_wait(&mut changes, exited).await;
                    return Ok(true);
                }
                Err(err) => {
                    warn!(container = %container.id, error = %err, "cannot send the stop signal")
                }
            }
            let waited = tokio::time::timeout(
                Duration::from_secs(u64::from(timeout)),
                changes.wait_for(exited),
            );
            if waited.await.is_ok() {
                return Ok(true);
            }
            info!(container = %container.id, timeout, "the container ignored its stop signal; killing it");
        }
        self.kill_and_wait(container, &mut changes, exited).await;
        Ok(true)
    }

    async fn kill_and_wait(
        &self,
        container: &Arc<Container>,
        changes: &mut watch::Receiver<Snapshot>,
        exited: impl Fn(&Snapshot) -> bool + Copy,
    ) {
        self.emit(container, "kill", &[("signal", libc::SIGKILL.to_string())]);
        match container.signal(libc::SIGKILL).await {
            Ok(()) | Err(ContainerError::NotRunning(_)) => {
                if tokio::time::timeout(KILL_GRACE, changes.wait_for(exited))
                    .await
                    .is_ok()
                {
                    return;
                }
                warn!(container = %container.id, "the killed container did not exit; stopping its VM");
            }
            Err(err) => {
                warn!(container = %container.id, error = %err, "cannot kill the main process; stopping its VM")
            }
        }
        container.halt_and_wait(changes, exited).await;
    }

    /// Sends `signal` to the main process; a user's kill keeps restart
    /// policies from starting the container again, as in docker. A SIGKILL
    /// that the guest does not take stops the VM.
    pub async fn kill(
        &self,
        container: &Arc<Container>,
        signal: i32,
    ) -> Result<(), ContainerError> {
        let state = container.state();
        if !state.running() {
            return Err(ContainerError::NotRunning(container.id.clone()));
        }
        self.resume_paused(container).await?;
        if signal == libc::SIGKILL {
            container.update(|s| s.stopped_by_user = true);
        }
        if signal == libc::SIGKILL && state.status == Status::Running {
            // As docker's, a SIGKILL returns once the container is gone, so
            // that an inspect right after it shows the exit; a guest that
            // does not take it has its VM stopped.
            let mut changes = container.changes.subscribe();
            let exits = state.exits;
            self.kill_and_wait(container, &mut changes, move |s| {
                s.state.exits > exits || s.removed
            })
            .await;
            return Ok(());
        }
        self.emit(container, "kill", &[("signal", signal.to_string())]);
        container.signal(signal).await
    }

    /// Removes a container, its logs and its writable layer. A running one
    /// is killed first when `force`, refused otherwise.
    pub async fn remove(
        &self,
        container: &Arc<Container>,
        force: bool,
    ) -> Result<(), ContainerError> {
        if let Some(membership) = &container.config().pod {
            if let Ok(pod) = self.pods.get(&membership.pod) {
                return Err(ContainerError::PodMember {
                    container: container.name(),
                    pod: pod.name().to_owned(),
                });
            }
        }
        self.remove_unchecked(container, force).await
    }

    /// Removes a container, whether or not a pod holds it.
    pub(super) async fn remove_unchecked(
        &self,
        container: &Arc<Container>,
        force: bool,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let state = container.state();
        if state.running() {
            if !force {
                return Err(ContainerError::RemoveRunning(container.name()));
            }
            // Killed regardless: a VM that will not go on is killed too.
            let _ = self.resume_paused(container).await;
            container.update(|s| s.stopped_by_user = true);
            if state.status == Status::Running {
                let mut changes = container.changes.subscribe();
                let exits = state.exits;
                self.kill_and_wait(container, &mut changes, move |s| {
                    s.state.exits > exits || s.removed
                })
                .await;
            }
        }
        // Its writable disk and network go with it: not under a VM still
        // powering off.
        container.vm_gone().await;
        self.remove_now(container);
        Ok(())
    }

    pub(super) fn remove_now(&self, container: &Arc<Container>) {
        if container.changes.borrow().removed {
            return;
        }
        container.update(|s| s.status = Status::Removing);
        lock(&self.table).remove(&container.id);
        self.networks.forget(&container.id);
        remove_dir(&container.dir);
        container.changes.send_modify(|s| s.removed = true);
        self.emit(container, "destroy", &[]);
        info!(container = %container.id, "container removed");
    }
}

/// A signal by number or by name, with or without `SIG` (`9`, `KILL`, `SIGUSR1`).
pub fn parse_signal(text: &str) -> Result<i32, ContainerError> {
    let invalid = || ContainerError::InvalidSignal(text.to_owned());
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=64).contains(&number) {
            Ok(number)
        } else {
            Err(invalid())
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(invalid()),
    };
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        for bad in ["0", "65", "NOPE", ""] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
