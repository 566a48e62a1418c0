//! A tenant's share of the host: the lock that holds a quota's count to
//! the change it admits, what the tenant uses now, and the removal of all
//! it owns.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hull_cloud::quota::Quota;
use hyper::StatusCode;
use serde::Serialize;

use hull_runtime::pod::PodRecord;
use hull_runtime::volume::snapshot::Snapshot;
use hull_runtime::volume::Volume;

use super::scope::Scope;
use super::ApiError;
use crate::daemon::Daemon;

/// Request bodies one tenant may hold in memory at once (each at most
/// the signed-body limit), so that no tenant fills the host's memory.
pub const MAX_BODIES_PER_TENANT: usize = 16;

/// Per tenant: one lock, held from a quota's count to the change it
/// admits, so two concurrent requests cannot both take the last unit; and
/// the slots of the request bodies it holds in memory.
#[derive(Default)]
pub struct Admission {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    bodies: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Admission {
    /// A slot for one of the tenant's request bodies, while it is held;
    /// `None` when all its slots are taken.
    pub(super) fn body_slot(&self, tenant: &str) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slots = self
            .bodies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(MAX_BODIES_PER_TENANT)))
            .clone();
        slots.try_acquire_owned().ok()
    }

    pub(super) async fn lock(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(tenant.to_owned())
            .or_default()
            .clone();
        gate.lock_owned().await
    }
}

/// Waits for the tenant's admission lock and checks that one more of
/// `what` fits its quota beside the `used` it has; the lock comes back to
/// be held until the object is made.
pub(super) async fn admit_one(
    daemon: &Daemon,
    tenant: &str,
    what: &str,
    limit_of: impl FnOnce(&Quota) -> Option<u64>,
    used: impl FnOnce() -> u64,
) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
    admit(daemon, tenant, what, 1, limit_of, used).await
}

/// As [`admit_one`], for `asked` more of `what` at once (a pod's containers).
pub(super) async fn admit(
    daemon: &Daemon,
    tenant: &str,
    what: &str,
    asked: u64,
    limit_of: impl FnOnce(&Quota) -> Option<u64>,
    used: impl FnOnce() -> u64,
) -> Result<tokio::sync::OwnedMutexGuard<()>, ApiError> {
    let admitted = daemon.admission().lock(tenant).await;
    if let Some(limit) = limit_of(&quota_of(daemon, tenant)?) {
        let used = used();
        if used + asked > limit {
            return Err(over_quota(what, used, asked, limit, "remove some"));
        }
    }
    Ok(admitted)
}

pub(super) fn quota_of(daemon: &Daemon, tenant: &str) -> Result<Quota, ApiError> {
    Ok(daemon
        .tenants()
        .tenant(tenant)
        .map_err(ApiError::from)?
        .quota)
}

/// The tenant's containers.
pub(super) fn owned<'a>(
    daemon: &'a Daemon,
    tenant: &'a str,
) -> impl Iterator<Item = Arc<hull_runtime::Container>> + 'a {
    daemon
        .containers()
        .list()
        .into_iter()
        .filter(move |c| c.namespace().as_deref() == Some(tenant))
}

pub(super) fn over_quota(what: &str, used: u64, asked: u64, limit: u64, free: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "quota exceeded: {what} in use {used}, asked {asked}, limit {limit}; {free}, or ask the operator for a larger quota"
        ),
    )
}

/// What a tenant holds now, counted as its quota counts it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Use {
    pub containers: u64,
    pub running: u64,
    /// The memory of its running containers' sizes, in MiB.
    pub memory_mib: u64,
    pub cpus: u64,
    pub volumes: u64,
    pub snapshots: u64,
    /// Distinct images it keeps.
    pub images: u64,
}

pub(super) fn use_of(daemon: &Daemon, tenant: &str) -> Use {
    let mut used = Use::default();
    for container in owned(daemon, tenant) {
        used.containers += 1;
        if container.state().running() {
            used.running += 1;
        }
        if holds(daemon, &container) {
            let size = size_of(daemon, &container);
            used.memory_mib += u64::from(size.memory_mib);
            used.cpus += u64::from(size.vcpus);
        }
    }
    let scope = Scope::Tenant(tenant);
    used.volumes = owned_volumes(daemon, scope).len() as u64;
    used.snapshots = owned_snapshots(daemon, scope).len() as u64;
    used.images = daemon
        .tenants()
        .tenant_image_count(tenant)
        .unwrap_or_default();
    used
}

/// The volumes `scope` sees.
pub(super) fn owned_volumes(daemon: &Daemon, scope: Scope<'_>) -> Vec<Volume> {
    let mut volumes = daemon.containers().volumes().list();
    volumes.retain(|v| scope.unqualify(&v.record.name).is_some());
    volumes
}

/// The snapshots `scope` sees.
pub(super) fn owned_snapshots(daemon: &Daemon, scope: Scope<'_>) -> Vec<Snapshot> {
    let mut snapshots = daemon.containers().volumes().snapshots();
    snapshots.retain(|s| scope.unqualify(&s.record.name).is_some());
    snapshots
}

/// Whether the container holds its size on the host: while it runs, and
/// a pod's container while any of its pod's runs, as the pod's VM holds
/// them all, so that one that exited lends no room to the others.
pub(super) fn holds(daemon: &Daemon, container: &hull_runtime::Container) -> bool {
    container.state().running()
        || with_pod(daemon, container)
            .iter()
            .any(|member| member.state().running())
}

/// The containers of the container's pod; none for one of no pod.
pub(super) fn with_pod(
    daemon: &Daemon,
    container: &hull_runtime::Container,
) -> Vec<Arc<hull_runtime::Container>> {
    let containers = daemon.containers();
    container
        .config()
        .pod
        .and_then(|membership| containers.pod(&membership.pod).ok())
        .map(|pod| containers.pod_members(&pod))
        .unwrap_or_default()
}

/// A container's VM size; the daemon's default for one made without.
pub(super) fn size_of(
    daemon: &Daemon,
    container: &hull_runtime::Container,
) -> hull_runtime::size::VmSize {
    container.config().size.unwrap_or_else(|| {
        let (vcpus, memory_mib) = daemon.vm_size();
        hull_runtime::size::VmSize { vcpus, memory_mib }
    })
}

/// The tenant's pods.
pub(super) fn owned_pods(daemon: &Daemon, tenant: &str) -> Vec<Arc<PodRecord>> {
    let mut pods = daemon.containers().pods();
    pods.retain(|p| p.namespace.as_deref() == Some(tenant));
    pods
}

/// Removes everything the tenant owns: its pods and containers (stopped
/// first), then its volumes and snapshots. The first failure ends it, named.
pub(super) async fn remove_all(daemon: &Daemon, tenant: &str) -> Result<(), ApiError> {
    let containers = daemon.containers();
    let networks = containers.networks();
    // Services first, or their replicas would be made again.
    for service in owned_services(daemon, tenant) {
        networks.remove_service(Some(tenant), &service)?;
    }
    // A pod's containers go only with their pod.
    for pod in owned_pods(daemon, tenant) {
        containers.remove_pod(&pod, true).await?;
    }
    for container in owned(daemon, tenant) {
        containers.remove(&container, true).await?;
    }
    let scope = Scope::Tenant(tenant);
    let volumes = containers.volumes();
    for snapshot in volumes.snapshots() {
        if scope.unqualify(&snapshot.record.name).is_some() {
            volumes.remove_snapshot(&snapshot.record.name)?;
        }
    }
    for volume in volumes.list() {
        if scope.unqualify(&volume.record.name).is_some() {
            containers.remove_volume(&volume.record.name)?;
        }
    }
    // Detached with their containers: released back to the pool.
    let owner = hull_net::fip::Owner::Tenant(tenant);
    for fip in networks.list_fips(owner) {
        networks.release_fip(owner, fip.ip)?;
    }
    Ok(())
}

fn owned_services(daemon: &Daemon, tenant: &str) -> Vec<String> {
    let networks = daemon.containers().networks();
    let services = networks.services().list();
    let owned = services
        .into_iter()
        .filter(|s| s.owner.as_deref() == Some(tenant));
    owned.map(|s| s.spec.name).collect()
}

/// Refuses to forget a tenant that still owns objects: they would linger,
/// unreachable, and return to a new tenant of the same name.
pub(super) fn check_owns_nothing(daemon: &Daemon, tenant: &str) -> Result<(), ApiError> {
    let used = use_of(daemon, tenant);
    let services = owned_services(daemon, tenant).len();
    let fips = daemon.containers().networks().fips_of(tenant);
    if used.containers + used.volumes + used.snapshots + fips == 0 && services == 0 {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "tenant {tenant} still owns {} containers, {} volumes, {} snapshots, {services} services and {fips} floating IPs: remove them first, or remove the tenant with --force to remove them too",
            used.containers, used.volumes, used.snapshots
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_a_bounded_number_of_bodies_and_others_are_not_held_back() {
        let admission = Admission::default();
        let held: Vec<_> = (0..MAX_BODIES_PER_TENANT)
            .map(|_| admission.body_slot("acme").expect("a free slot"))
            .collect();
        assert!(admission.body_slot("acme").is_none(), "past the bound");
        assert!(
            admission.body_slot("beta").is_some(),
            "another tenant's own"
        );
        drop(held);
        assert!(admission.body_slot("acme").is_some(), "slots come back");
    }
}
