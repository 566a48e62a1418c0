//! The sandbox's size and limits in terms of its containers: the VM's
//! size from its first container, and the hold its workloads add up to.

use std::sync::Arc;

use hull_runtime::size::Limits;
use tracing::{info, warn};

use super::{Service, ServiceError};
use crate::resources;
use crate::sandbox::{Sandbox, SandboxPlan};
use crate::spec::ContainerConfig;

impl Service {
    /// Boots the VM for the sandbox's first container: sized by the pod's
    /// annotations or the container's own limits, in the pod's network.
    pub(super) async fn boot_sandbox(
        &self,
        id: &str,
        config: &ContainerConfig,
    ) -> Result<Arc<Sandbox>, ServiceError> {
        let pod = resources::sandbox_limits(&config.annotations)?;
        let pod = if pod == Limits::default() {
            config.limits
        } else {
            pod
        };
        let plan = SandboxPlan {
            size: resources::vm_size(&self.config, &config.annotations, pod)?,
            netns: config.network_namespace.clone(),
        };
        let _ = self.pod_limits.set(pod);
        let grouping = config.grouping(id);
        let sandbox = Sandbox::boot(&self.config, &self.namespace, &grouping, &plan).await?;
        Ok(Arc::new(sandbox))
    }

    /// Holds the guest to what its containers' limits add up to.
    pub(super) async fn hold_guest(&self, sandbox: &Sandbox) -> Result<(), ServiceError> {
        let workloads: Vec<Limits> = self
            .containers()
            .values()
            .filter(|c| c.workload)
            .map(|c| c.limits)
            .collect();
        let pod = self.pod_limits.get().copied().unwrap_or_default();
        sandbox
            .hold(resources::guest_hold(pod, &workloads))
            .await
            .map_err(ServiceError::from_sandbox)
    }

    /// Holds the guest anew after container `id` came or went; a failure
    /// leaves the hold as it was, which costs no container its start.
    pub(super) async fn rehold_guest(&self, sandbox: &Sandbox, id: &str) {
        if let Err(err) = self.hold_guest(sandbox).await {
            let error = hull_runtime::error_chain(&err);
            warn!(
                container = id,
                error, "cannot hold the guest to the containers' limits"
            );
        }
    }

    /// Changes a container's limits (`ctr task update`, CRI's
    /// UpdateContainerResources), and so what the guest is held to, within
    /// the VM's size.
    pub async fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), ServiceError> {
        let update = resources::limits_of_update(resources_json)?;
        let sandbox = self.sandbox()?;
        {
            let mut containers = self.containers();
            let container = containers
                .get_mut(id)
                .ok_or_else(|| ServiceError::NoContainer(id.to_owned()))?;
            let limits = container.limits.updated(update);
            limits
                .check(sandbox.size())
                .map_err(|source| ServiceError::Update {
                    id: id.to_owned(),
                    source,
                })?;
            container.limits = limits;
        }
        info!(container = id, ?update, "resources updated");
        self.hold_guest(&sandbox).await
    }
}
