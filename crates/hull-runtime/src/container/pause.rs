//! `docker pause` and `unpause`: the container's VM is frozen whole (QMP
//! `stop`, `cont`), which no process in it can notice or resist, as the
//! cgroup freezer does for a container on a shared kernel. A paused
//! container runs no exec; stopping, killing or removing it lets its VM
//! go on first, so the guest can take the signal and power off.

use std::sync::Arc;

use hull_vm::Hypervisor;
use tracing::info;

use super::supervise::VmRequest;
use super::{lock, Container, ContainerError, Containers, RunHandle, Status};

impl RunHandle {
    /// Has the run's supervisor freeze or thaw its VM.
    async fn set_running(&self, running: bool) -> Result<(), ContainerError> {
        let Some(control) = &self.vm_requests else {
            return Ok(());
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let request = VmRequest::Running { running, done };
        if control.send(request).await.is_err() {
            // The run ended meanwhile: nothing is left to freeze.
            return Ok(());
        }
        result.await.unwrap_or(Ok(())).map_err(ContainerError::from)
    }
}

impl<H: Hypervisor> Containers<H> {
    /// Freezes a running container's VM.
    pub async fn pause(&self, container: &Arc<Container>) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let state = container.state();
        if state.status != Status::Running {
            return Err(ContainerError::NotRunning(container.id.clone()));
        }
        if state.paused {
            return Err(ContainerError::AlreadyPaused(container.id.clone()));
        }
        if let Some(membership) = container.config().pod {
            return Err(ContainerError::PodPause {
                container: container.id.clone(),
                pod: membership.pod,
            });
        }
        container.set_vm_running(false).await?;
        container.update(|s| s.paused = true);
        info!(container = %container.id, "container paused");
        self.emit(container, "pause", &[]);
        Ok(())
    }

    /// Lets a paused container's VM go on.
    pub async fn unpause(&self, container: &Arc<Container>) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        if !container.state().paused {
            return Err(ContainerError::NotPaused(container.id.clone()));
        }
        self.resume_paused(container).await?;
        info!(container = %container.id, "container unpaused");
        self.emit(container, "unpause", &[]);
        Ok(())
    }

    /// Before a container is stopped, killed or removed: a paused one's VM
    /// goes on, so its guest can take the signal (docker's order too).
    pub(super) async fn resume_paused(
        &self,
        container: &Arc<Container>,
    ) -> Result<(), ContainerError> {
        if container.state().paused {
            container.set_vm_running(true).await?;
            container.update(|s| s.paused = false);
        }
        Ok(())
    }
}

impl Container {
    async fn set_vm_running(&self, running: bool) -> Result<(), ContainerError> {
        // Not held across the wait: the supervisor takes the lock to end.
        let handle = lock(&self.run).clone();
        match handle {
            Some(handle) => handle.set_running(running).await,
            None => Err(ContainerError::NotRunning(self.id.clone())),
        }
    }

    /// Refuses what a frozen VM cannot do (an exec).
    pub(super) fn check_not_paused(&self) -> Result<(), ContainerError> {
        if self.state().paused {
            return Err(ContainerError::Paused(self.id.clone()));
        }
        Ok(())
    }
}
