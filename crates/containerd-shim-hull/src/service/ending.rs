//! Ending the sandbox's processes and containers: signals, deletes, and
//! the VM's power-off with its last container. A guest that stops
//! answering does not hold any of them up: a SIGKILL it cannot take halts
//! its VM (as hulld's kill does), and the power-off halts a VM whose guest
//! does not go.

use std::time::SystemTime;

use hull_proto::Request;
use tracing::warn;

use super::{describe, rootfs, Service, ServiceError};
use crate::events::Event;
use crate::sandbox::SandboxError;
use crate::state::{agent_process_id, Container, Exited};

impl Service {
    /// Signals a process. One not started yet ends at once, as a runc
    /// container killed before its start does. A SIGKILL that a silent
    /// guest does not take halts the sandbox's VM, as hulld's kill does:
    /// every container in it is then reported exited.
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), ServiceError> {
        let started = self.with_process(id, exec_id, |p, _| {
            if p.exited().is_some() {
                return Err(ServiceError::Finished(describe(id, exec_id)));
            }
            if p.pid.is_none() {
                let exited = Exited {
                    status: 128 + signal,
                    at: SystemTime::now(),
                };
                p.exit.send_replace(Some(exited));
                return Ok(false);
            }
            Ok(true)
        })?;
        if !started {
            return Ok(());
        }
        let request = Request::Signal {
            container: id.to_owned(),
            process: agent_process_id(exec_id).to_owned(),
            signal: signal as i32,
        };
        let sandbox = self.sandbox()?;
        match sandbox.request_done(&request).await {
            Err(err) if halts_vm(signal, &err) => {
                warn!(container = id, error = %err, "the guest does not take SIGKILL; halting its VM");
                sandbox.halt().await;
                Ok(())
            }
            other => other.map_err(ServiceError::from_sandbox),
        }
    }

    /// Forgets an exited process; for the init process, the container with
    /// it: the agent unmounts what it mounted for it, its disk leaves the
    /// VM, and its image and the host's directories it shared are gone.
    pub async fn delete(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<(u32, Option<Exited>), ServiceError> {
        let (pid, exited, container) = self.forget(id, exec_id)?;
        let Some(container) = container else {
            return Ok((pid, exited));
        };
        if let Some(sandbox) = self.sandbox.get() {
            sandbox.remove_container(id, &container.disk).await;
            // The workloads left add up to a new hold.
            if container.workload && !self.containers().is_empty() {
                self.rehold_guest(sandbox, id).await;
            }
        }
        let _ = std::fs::remove_file(&container.image);
        let _ = rootfs::unmount(&container.bundle.join("rootfs"));
        self.events.publish(Event::Delete {
            container: id.to_owned(),
            pid,
            exited,
        });
        Ok((pid, exited))
    }

    /// Takes an exited process out of the table, and with the init
    /// process its container, which it returns.
    fn forget(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Result<(u32, Option<Exited>, Option<Container>), ServiceError> {
        let mut containers = self.containers();
        let container = containers
            .get_mut(id)
            .ok_or_else(|| ServiceError::NoContainer(id.to_owned()))?;
        let process = container
            .processes
            .get(exec_id)
            .ok_or_else(|| ServiceError::NoProcess {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
            })?;
        let (pid, exited) = (process.pid.unwrap_or(0), process.exited());
        if process.pid.is_some() && exited.is_none() {
            return Err(ServiceError::StillRunning(describe(id, exec_id)));
        }
        if !exec_id.is_empty() {
            container.processes.remove(exec_id);
            return Ok((pid, exited, None));
        }
        Ok((pid, exited, containers.remove(id)))
    }

    /// Powers the VM off once no container is left; says whether the shim
    /// may exit.
    pub async fn shutdown(&self) -> bool {
        if !self.containers().is_empty() {
            return false;
        }
        if let Some(sandbox) = self.sandbox.get() {
            sandbox.shutdown().await;
        }
        true
    }
}

/// Whether a signal the guest failed to take with `err` halts the VM:
/// a SIGKILL, which must end the process, to an agent that cannot take it.
fn halts_vm(signal: u32, err: &SandboxError) -> bool {
    signal == libc::SIGKILL as u32
        && matches!(err, SandboxError::Agent(agent) if agent.is_unreachable())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hull_proto::Response;
    use hull_runtime::AgentError;

    use super::*;

    #[test]
    fn only_a_sigkill_the_agent_cannot_take_halts_the_vm() {
        let silent = || {
            SandboxError::Agent(AgentError::Deadline {
                request: "Signal",
                vm: "shim-x".into(),
                after: Duration::from_secs(10),
            })
        };
        let kill = libc::SIGKILL as u32;
        assert!(halts_vm(kill, &silent()));
        assert!(halts_vm(
            kill,
            &SandboxError::Agent(AgentError::Disconnected)
        ));
        assert!(!halts_vm(libc::SIGTERM as u32, &silent()));
        let refused = SandboxError::Agent(AgentError::UnexpectedResponse(Response::Done));
        assert!(
            !halts_vm(kill, &refused),
            "an agent that answers is not halted"
        );
    }
}
