//! A tenant's containers: created in its own namespace under its owner
//! label, in a Hyper.sh size, within its quota, and with no option that
//! reaches the host.
//!
//! The request is checked as JSON before it is read into docker's create
//! shape, so an option Hull would otherwise ignore (`Privileged`,
//! `Devices`) is refused rather than silently dropped.

use std::sync::Arc;

use hull_runtime::size::VmSize;
use hull_runtime::volume::{self, VolumeSource};
use hull_runtime::Container;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;

use super::containers::{self, Query};
use super::scope::{self, Scope, OWNER_LABEL};
use super::tenancy::{
    admit_one, holds, over_quota, owned, owned_volumes, quota_of, size_of, with_pod,
};
use super::{body_bytes, tenant_net, ApiError, Body, RequestBody};
use crate::daemon::Daemon;
use crate::types::container::ContainerCreate;

/// The label that names a container's size, as Hyper.sh's clients set it.
pub const SIZE_LABEL: &str = "sh_hyper_instancetype";
/// A tenant's container without a size gets Hyper.sh's default.
pub const DEFAULT_SIZE: &str = "S4";

/// `POST /containers/create` for a tenant.
pub(super) async fn create(
    daemon: &Daemon,
    tenant: &str,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let name = Query::of(&request).get("name").map(str::to_owned);
    let bytes = body_bytes(&mut request).await?;
    let mut raw: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    let fip_ports = super::fips::take_tenant_ports(&mut raw)?;
    refuse_host_access(&raw, &tenant_net::network_name(tenant))?;
    let mut body: ContainerCreate = serde_json::from_value(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid request: {e}")))?;
    let size = apply_size(&mut body)?;
    join_own_network(daemon, tenant, &mut body)?;
    let labels = body.labels.get_or_insert_with(Default::default);
    labels.insert(OWNER_LABEL.to_owned(), tenant.to_owned());
    labels.insert(SIZE_LABEL.to_owned(), size_name(size));
    labels.remove(super::fips::PORTS_LABEL);
    if !fip_ports.is_empty() {
        labels.insert(super::fips::PORTS_LABEL.to_owned(), fip_ports);
    }
    // The tenant runs only images it pulled or loaded, by its own names.
    let image_id = scope::image_visible(daemon, Scope::Tenant(tenant), &body.image).await?;
    let mut options = containers::create_options(body, name)?;
    options.namespace = Some(tenant.to_owned());
    options.image_id = Some(image_id);
    // The tenant's volume `data` is its own: `data@tenant` in the store.
    let scope = Scope::Tenant(tenant);
    for mount in &mut options.volumes {
        match &mut mount.source {
            VolumeSource::Volume { name } | VolumeSource::Anonymous { name } => {
                *name = scope.qualify(name);
            }
            VolumeSource::Bind { .. } => return Err(bind_refused()),
        }
    }

    let _admitted = admit_one(
        daemon,
        tenant,
        "containers",
        |q| q.containers,
        || owned(daemon, tenant).count() as u64,
    )
    .await?;
    // Named volumes made on first use count against the volume quota.
    let volumes = daemon.containers().volumes();
    let new_volumes = options
        .volumes
        .iter()
        .filter(
            |m| matches!(&m.source, VolumeSource::Volume { name } if volumes.get(name).is_err()),
        )
        .count() as u64;
    if let (Some(limit), true) = (quota_of(daemon, tenant)?.volumes, new_volumes > 0) {
        let used = owned_volumes(daemon, scope).len() as u64;
        if used + new_volumes > limit {
            return Err(over_quota(
                "volumes",
                used,
                new_volumes,
                limit,
                "remove some",
            ));
        }
    }
    containers::create_with(daemon, options).await
}

/// Starts (or restarts) the tenant's containers `ids` (one, or a pod's)
/// if their sizes fit in what the quota leaves beside what the tenant's
/// other containers hold.
pub(super) async fn start_within_quota<F, T>(
    daemon: &Daemon,
    tenant: &str,
    ids: &[String],
    start: F,
) -> Result<T, ApiError>
where
    F: std::future::Future<Output = Result<T, ApiError>>,
{
    let _admitted = daemon.admission().lock(tenant).await;
    let quota = quota_of(daemon, tenant)?;
    // A pod's container starts its pod's VM, which holds all of them.
    let mut starting: Vec<Arc<Container>> = Vec::new();
    for id in ids {
        let container = daemon.containers().get(id)?;
        let pod = with_pod(daemon, &container);
        let added = if pod.is_empty() { vec![container] } else { pod };
        for container in added {
            if !starting.iter().any(|c| c.id == container.id) {
                starting.push(container);
            }
        }
    }
    let (mut wanted_memory, mut wanted_cpus) = (0u64, 0u64);
    for container in &starting {
        let size = size_of(daemon, container);
        wanted_memory += u64::from(size.memory_mib);
        wanted_cpus += u64::from(size.vcpus);
    }
    let (mut memory, mut cpus) = (0u64, 0u64);
    let others = owned(daemon, tenant)
        .filter(|c| !starting.iter().any(|s| s.id == c.id) && holds(daemon, c));
    for other in others {
        let size = size_of(daemon, &other);
        memory += u64::from(size.memory_mib);
        cpus += u64::from(size.vcpus);
    }
    let freeing = "stop some of its containers";
    if let Some(limit) = quota.memory_mib {
        if memory + wanted_memory > limit {
            return Err(over_quota(
                "memory (MiB)",
                memory,
                wanted_memory,
                limit,
                freeing,
            ));
        }
    }
    if let Some(limit) = quota.cpus {
        if cpus + wanted_cpus > limit {
            return Err(over_quota("cpus", cpus, wanted_cpus, limit, freeing));
        }
    }
    start.await
}

/// Sets the request's `Memory` and `NanoCpus` to its size: the one its
/// own `Memory`/`NanoCpus` ask for, else the size label's, else S4.
fn apply_size(body: &mut ContainerCreate) -> Result<VmSize, ApiError> {
    let host = body.host_config.get_or_insert_with(Default::default);
    let size = match containers::vm_size(host)? {
        Some(size) => size,
        None => {
            let label = body.labels.as_ref().and_then(|l| l.get(SIZE_LABEL));
            hull_runtime::size::named(label.map_or(DEFAULT_SIZE, String::as_str))
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?
        }
    };
    let (memory, nano_cpus) = (
        host.memory.filter(|m| *m > 0),
        host.nano_cpus.filter(|n| *n > 0),
    );
    if memory.is_none() {
        host.memory = Some(i64::from(size.memory_mib) << 20);
    }
    if nano_cpus.is_none() {
        host.nano_cpus = Some(i64::from(size.vcpus) * 1_000_000_000);
    }
    Ok(size)
}

pub(super) fn size_name(size: VmSize) -> String {
    size.name().map_or_else(|| size.token(), str::to_owned)
}

pub(super) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// Refuses what would reach past the tenant's VM: the host's devices,
/// namespaces, files, addresses and networks.
pub(super) fn refuse_host_access(raw: &Value, own_network: &str) -> Result<(), ApiError> {
    let host = raw.get("HostConfig").unwrap_or(&Value::Null);
    let text = |key: &str| host.get(key).and_then(Value::as_str).unwrap_or_default();
    let listed = |key: &str| {
        host.get(key)
            .and_then(Value::as_array)
            .is_some_and(|items| !items.is_empty())
    };
    if host.get("Privileged").and_then(Value::as_bool) == Some(true) {
        return Err(forbidden(
            "--privileged is not open to tenants: a tenant's container runs unprivileged in its own VM",
        ));
    }
    for key in ["Devices", "DeviceRequests", "DeviceCgroupRules"] {
        if listed(key) {
            return Err(forbidden(format!(
                "{key}: the host's devices are not open to tenants"
            )));
        }
    }
    for key in [
        "PidMode",
        "IpcMode",
        "UTSMode",
        "UsernsMode",
        "CgroupnsMode",
    ] {
        let mode = text(key);
        if mode == "host" || mode.starts_with("container:") {
            return Err(forbidden(format!(
                "{key} {mode:?} is not open to tenants: each container keeps its own"
            )));
        }
    }
    check_network(raw, text("NetworkMode"), own_network)?;
    let published = host
        .get("PortBindings")
        .and_then(Value::as_object)
        .is_some_and(|ports| !ports.is_empty());
    if published || host.get("PublishAllPorts").and_then(Value::as_bool) == Some(true) {
        return Err(forbidden(
            "publishing ports on the host's addresses is not open to tenants",
        ));
    }
    if listed("VolumesFrom") {
        return Err(forbidden("--volumes-from is not open to tenants"));
    }
    for bind in host
        .get("Binds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let bind = bind.as_str().unwrap_or_default();
        // A malformed bind is the create path's 400; only its kind matters here.
        if let Ok(mount) = volume::parse_bind(bind, || "anonymous".to_owned()) {
            check_volume_source(&mount.source)?;
        }
    }
    for mount in host
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |key: &str| mount.get(key).and_then(Value::as_str).unwrap_or_default();
        match field("Type") {
            "bind" | "npipe" | "cluster" => return Err(bind_refused()),
            _ => {}
        }
    }
    Ok(())
}

fn check_volume_source(source: &VolumeSource) -> Result<(), ApiError> {
    match source {
        VolumeSource::Bind { .. } => Err(bind_refused()),
        VolumeSource::Volume { .. } | VolumeSource::Anonymous { .. } => Ok(()),
    }
}

fn bind_refused() -> ApiError {
    forbidden("bind mounts of the host's files are not open to tenants")
}

/// Puts the container on the tenant's own network (made on first use), or
/// none if it asked for none; the endpoint settings it gave for the
/// default network (aliases, an address) apply to its own.
fn join_own_network(
    daemon: &Daemon,
    tenant: &str,
    body: &mut ContainerCreate,
) -> Result<(), ApiError> {
    let host = body.host_config.get_or_insert_with(Default::default);
    let endpoints = body
        .networking_config
        .as_mut()
        .and_then(|n| n.endpoints_config.as_mut());
    let mut asked = host.network_mode.clone().unwrap_or_default();
    if asked.is_empty() {
        if let Some(only) = endpoints.as_ref().filter(|e| e.len() == 1) {
            asked = only.keys().next().cloned().unwrap_or_default();
        }
    }
    let network = tenant_net::tenant_network_for(daemon, tenant, &asked)?;
    // The tenant's network is the one it joins: no other endpoint stays.
    if let Some(endpoints) = endpoints {
        let settings = endpoints.remove(&asked);
        endpoints.clear();
        if let Some(settings) = settings {
            endpoints.insert(network.clone(), settings);
        }
    }
    host.network_mode = Some(network);
    Ok(())
}

/// A tenant's container joins its own network or none; the host's
/// network and the operator's networks are not its to join.
fn check_network(raw: &Value, mode: &str, own: &str) -> Result<(), ApiError> {
    let endpoints = raw
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object);
    let names =
        std::iter::once(mode).chain(endpoints.into_iter().flatten().map(|(k, _)| k.as_str()));
    for name in names {
        match name {
            "" | "default" | "bridge" | "none" => {}
            own_name if own_name == own => {}
            "host" => return Err(forbidden(
                "--network host is not open to tenants: a tenant's container has its own network",
            )),
            other => {
                return Err(forbidden(format!(
                    "network {other:?}: a tenant's containers join only the tenant's own network"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &str) -> Option<String> {
        let raw: Value = serde_json::from_str(body).unwrap();
        refuse_host_access(&raw, "tenant:acme").err().map(|e| {
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{body}");
            body.to_owned()
        })
    }

    #[test]
    fn options_that_reach_the_host_are_refused() {
        for host in [
            r#"{"Privileged":true}"#,
            r#"{"Devices":[{"PathOnHost":"/dev/kvm","PathInContainer":"/dev/kvm"}]}"#,
            r#"{"DeviceRequests":[{"Count":-1}]}"#,
            r#"{"PidMode":"host"}"#,
            r#"{"IpcMode":"host"}"#,
            r#"{"UTSMode":"host"}"#,
            r#"{"UsernsMode":"host"}"#,
            r#"{"PidMode":"container:abc"}"#,
            r#"{"NetworkMode":"host"}"#,
            r#"{"NetworkMode":"ops-net"}"#,
            r#"{"NetworkMode":"tenant:beta"}"#,
            r#"{"Binds":["/etc:/host-etc"]}"#,
            r#"{"Binds":["/:/host:ro"]}"#,
            r#"{"Mounts":[{"Type":"bind","Source":"/var","Target":"/v"}]}"#,
            r#"{"PortBindings":{"22/tcp":[{"HostPort":"22"}]}}"#,
            r#"{"PublishAllPorts":true}"#,
            r#"{"VolumesFrom":["other"]}"#,
        ] {
            let body = format!(r#"{{"Image":"busybox","HostConfig":{host}}}"#);
            assert!(refused(&body).is_some(), "{host} was allowed");
        }
        let body = r#"{"Image":"busybox","NetworkingConfig":{"EndpointsConfig":{"ops-net":{}}}}"#;
        assert!(refused(body).is_some());
    }

    #[test]
    fn what_stays_in_the_vm_is_allowed() {
        for host in [
            r#"{}"#,
            r#"{"Privileged":false,"Devices":[],"PortBindings":{}}"#,
            r#"{"NetworkMode":"default"}"#,
            r#"{"NetworkMode":"bridge"}"#,
            r#"{"NetworkMode":"none"}"#,
            r#"{"NetworkMode":"tenant:acme"}"#,
            r#"{"Binds":["/data","data:/d"],"Mounts":[{"Type":"tmpfs","Target":"/t"},{"Type":"volume","Target":"/v"}]}"#,
            r#"{"Mounts":[{"Type":"volume","Source":"shared","Target":"/v"}]}"#,
            r#"{"Memory":134217728,"RestartPolicy":{"Name":"always"}}"#,
        ] {
            let body = format!(r#"{{"Image":"busybox","HostConfig":{host}}}"#);
            assert_eq!(refused(&body), None, "{host}");
        }
        assert_eq!(refused(r#"{"Image":"busybox"}"#), None);
    }

    #[test]
    fn sizes_come_from_limits_then_the_label_then_the_default() {
        let size_of = |body: &str| {
            let mut body: ContainerCreate = serde_json::from_str(body).unwrap();
            let size = apply_size(&mut body).map(size_name).map_err(|e| e.message);
            let host = body.host_config.unwrap();
            (size, host.memory, host.nano_cpus)
        };
        assert_eq!(
            size_of(r#"{"Image":"b"}"#),
            (Ok("S4".into()), Some(512 << 20), Some(1_000_000_000))
        );
        assert_eq!(
            size_of(r#"{"Image":"b","Labels":{"sh_hyper_instancetype":"M2"}}"#),
            (Ok("M2".into()), Some(2048 << 20), Some(2_000_000_000))
        );
        // An explicit memory limit within a size keeps the limit.
        assert_eq!(
            size_of(r#"{"Image":"b","HostConfig":{"Memory":100000000}}"#),
            (Ok("S2".into()), Some(100_000_000), Some(1_000_000_000))
        );
        let (unknown, _, _) = size_of(r#"{"Image":"b","Labels":{"sh_hyper_instancetype":"XL9"}}"#);
        assert!(unknown.is_err());
        let (huge, _, _) = size_of(r#"{"Image":"b","HostConfig":{"NanoCpus":64000000000}}"#);
        assert!(huge.is_err());
    }

    #[test]
    fn over_quota_names_the_quota_the_use_and_the_limit() {
        let message = over_quota("containers", 10, 1, 10, "remove some").message;
        assert!(message.contains("containers"), "{message}");
        assert!(message.contains("in use 10"), "{message}");
        assert!(message.contains("limit 10"), "{message}");
    }
}
