//! A tenant's pods: named in its own namespace, each container under its
//! owner label and counted as a container of its own size (the pod's VM
//! holds their sum), run from the tenant's own images on the tenant's own
//! network, and with nothing in the pod file that reaches the host.
//!
//! The file is read as plain YAML before it is read as a pod, so that what
//! is not the tenant's to do (a hostPath, a privileged container) is
//! refused as such (403), not as a file Hull cannot read (400).

use std::collections::BTreeMap;

use hull_net::NetworkMode;
use hull_runtime::container::{MemberOptions, PodOptions};
use hull_runtime::pod::{self, PodSpec};
use hull_runtime::size::{self, VmSize, SIZES};
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::scope::{self, Scope, OWNER_LABEL};
use super::tenancy::{admit, owned};
use super::tenant_containers::{forbidden, size_name, DEFAULT_SIZE, SIZE_LABEL};
use super::{pods, tenant_net, ApiError, Body, RequestBody};
use crate::daemon::Daemon;

/// Resources a tenant's container may name: what its size is made of.
const RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// `POST /hull/pods/create` for a tenant.
pub(super) async fn create(
    daemon: &Daemon,
    tenant: &str,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let text = pods::pod_file_text(&mut request).await?;
    // A file that is not plain YAML is refused rather than left unchecked.
    let raw: Value = serde_norway::from_str(&text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the pod file is not a valid pod: {e}"),
        )
    })?;
    refuse_host_access(&raw)?;
    let mut spec = pod::parse(&text)?;
    // Of what reaches the host, the parsed pod can hold only published
    // ports: checked again on what will run, whatever the YAML read.
    if let Some(container) = spec.containers.iter().find(|c| !c.ports.is_empty()) {
        return Err(ports_refused(&container.name));
    }
    let sizes = member_sizes(&raw, &spec)?;
    spec.size = Some(vm_size(&sizes)?);
    spec.labels
        .insert(OWNER_LABEL.to_owned(), tenant.to_owned());
    let network = tenant_net::tenant_network(daemon, tenant)?;
    let mut members = Vec::new();
    for (container, size) in spec.containers.iter().zip(&sizes) {
        // The tenant runs only images it pulled or loaded, by its own names.
        let image_id =
            scope::image_visible(daemon, Scope::Tenant(tenant), &container.image).await?;
        members.push(MemberOptions {
            image_id: Some(image_id),
            size: Some(*size),
            labels: BTreeMap::from([
                (OWNER_LABEL.to_owned(), tenant.to_owned()),
                (SIZE_LABEL.to_owned(), size_name(*size)),
            ]),
        });
    }
    let _admitted = admit(
        daemon,
        tenant,
        "containers",
        spec.containers.len() as u64,
        |q| q.containers,
        || owned(daemon, tenant).count() as u64,
    )
    .await?;
    let options = PodOptions {
        namespace: Some(tenant.to_owned()),
        network: NetworkMode::Network(network),
        members,
    };
    let record = daemon.containers().create_pod(spec, options).await?;
    Ok(pods::created(&record))
}

/// Each container's size, as a tenant's container is sized: the one its
/// own resources need, else the size label's (`sh_hyper_instancetype`,
/// among the pod's labels or annotations), else S4.
fn member_sizes(raw: &Value, spec: &PodSpec) -> Result<Vec<VmSize>, ApiError> {
    let annotations = raw.pointer("/metadata/annotations");
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    if annotation(pod::file::SIZE_ANNOTATION).is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "a tenant's pod is sized by its containers, not by {}: name their size in the label {SIZE_LABEL}, or give their resources",
                pod::file::SIZE_ANNOTATION
            ),
        ));
    }
    let named = spec
        .labels
        .get(SIZE_LABEL)
        .map(String::as_str)
        .or_else(|| annotation(SIZE_LABEL).and_then(Value::as_str))
        .unwrap_or(DEFAULT_SIZE);
    let named =
        size::named(named).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(spec
        .containers
        .iter()
        .map(|c| c.wants.unwrap_or(named))
        .collect())
}

/// The pod's VM: room for each of its containers' sizes, as the quota
/// counts them and the meter bills them.
fn vm_size(sizes: &[VmSize]) -> Result<VmSize, ApiError> {
    let (_, largest) = SIZES[SIZES.len() - 1];
    let vcpus: u64 = sizes.iter().map(|s| u64::from(s.vcpus)).sum();
    let memory_mib: u64 = sizes.iter().map(|s| u64::from(s.memory_mib)).sum();
    if vcpus > u64::from(largest.vcpus) || memory_mib > u64::from(largest.memory_mib) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "the pod's containers need {vcpus} vCPUs and {memory_mib} MiB together: a pod's VM holds at most {largest}"
            ),
        ));
    }
    Ok(VmSize {
        vcpus: vcpus as u32,
        memory_mib: memory_mib as u32,
    })
}

/// The entries of the array `key` of `value`, if it is one.
fn array<'v>(value: &'v Value, key: &str) -> impl Iterator<Item = &'v Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn text<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Refuses what would reach past the pod's VM: the host's namespaces,
/// files, devices, privileges and addresses.
fn refuse_host_access(raw: &Value) -> Result<(), ApiError> {
    let spec = raw.get("spec").unwrap_or(&Value::Null);
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(forbidden(format!(
                "{key} is not open to tenants: a tenant's pod keeps its own namespaces in its own VM"
            )));
        }
    }
    for volume in array(spec, "volumes") {
        if volume.get("hostPath").is_some() {
            return Err(forbidden(format!(
                "volume {:?} is a hostPath: the host's files are not open to tenants; use an emptyDir",
                text(volume, "name")
            )));
        }
    }
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for container in array(spec, key) {
            refuse_container_host_access(container)?;
        }
    }
    Ok(())
}

fn refuse_container_host_access(container: &Value) -> Result<(), ApiError> {
    let name = text(container, "name");
    let security = container.get("securityContext").unwrap_or(&Value::Null);
    if security.get("privileged").and_then(Value::as_bool) == Some(true) {
        return Err(forbidden(format!(
            "container {name:?} is privileged: privileged containers are not open to tenants; a tenant's container runs unprivileged in its own VM"
        )));
    }
    let capabilities = security.get("capabilities").unwrap_or(&Value::Null);
    if array(capabilities, "add").next().is_some() {
        return Err(forbidden(format!(
            "container {name:?} adds capabilities: they are not open to tenants"
        )));
    }
    if array(container, "volumeDevices").next().is_some() {
        return Err(forbidden(format!(
            "container {name:?} asks for volumeDevices: the host's devices are not open to tenants"
        )));
    }
    let resources = container.get("resources").unwrap_or(&Value::Null);
    for kind in ["limits", "requests"] {
        let asked = resources.get(kind).and_then(Value::as_object);
        for key in asked.into_iter().flat_map(|m| m.keys()) {
            if !RESOURCES.contains(&key.as_str()) {
                return Err(forbidden(format!(
                    "container {name:?} asks for {key:?}: the host's devices are not open to tenants; a tenant's container has the CPUs and memory of its size"
                )));
            }
        }
    }
    if array(container, "ports").any(|p| !p.get("hostPort").unwrap_or(&Value::Null).is_null()) {
        return Err(ports_refused(name));
    }
    Ok(())
}

fn ports_refused(container: &str) -> ApiError {
    forbidden(format!(
        "container {container:?} has a hostPort: publishing ports on the host's addresses is not open to tenants"
    ))
}

#[cfg(test)]
#[path = "tenant_pods_tests.rs"]
mod tests;
