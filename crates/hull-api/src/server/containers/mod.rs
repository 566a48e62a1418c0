//! `/containers/...`: create, list, inspect, start, stop, restart, kill,
//! wait, remove, rename, prune, resize and logs, in the Engine API's shapes.
//! Creating, listing, inspecting and logs each have a module of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::RequestBody;
use bytes::Bytes;
use hull_runtime::container::EndpointOptions;
use hull_runtime::container::{parse_signal, LogFilter, Record, RestartPolicy as Policy, Status};
use hull_runtime::{
    Container, ContainerError, ContainerUpdate, CreateOptions, ProcessOptions, RunError,
    WaitCondition,
};
use hyper::{Request, Response, StatusCode};

use super::scope::Scope;
use super::stream::{channel_body, stdcopy, CONTENT_MULTIPLEXED, CONTENT_RAW};
use super::{error_chain, full, json_response, ApiError, Body};
use crate::daemon::Daemon;
use hull_net::{NetworkError, NetworkMode, PortBinding, Protocol};
use hull_runtime::size::{Limits, VmSize};
use hull_runtime::volume::{self, VolumeMount, VolumeSource};

use crate::types::container::{
    ContainerCreate, ContainerCreated, ContainerInspect, ContainerStateBody, ContainerSummary,
    ContainerUpdate as ContainerUpdateBody, ContainerUpdated, ContainersPruned, EndpointSettings,
    HostConfig, InspectConfig, InspectHostConfig, InspectNetworkSettings, LogConfig, RestartPolicy,
    SummaryHostConfig, SummaryNetworks, WaitError, WaitResponse,
};
use crate::types::ulimit::Ulimit;
use crate::units::{human_duration, unix_seconds};

mod changes;
mod create;
mod inspect;
mod list;
mod logs;
mod settings;

pub(super) use changes::changes;
pub(super) use create::{create, create_options, create_with, endpoint_options, vm_size};
pub(super) use inspect::inspect;
pub(super) use list::{list, parse_filters};
pub(super) use logs::{logs, timestamp};

impl From<ContainerError> for ApiError {
    fn from(error: ContainerError) -> Self {
        // The image store has its own mapping (404 for a missing image).
        let error = match error {
            ContainerError::Image(store) => return store.into(),
            other => other,
        };
        let status = match &error {
            ContainerError::NotFound(_) | ContainerError::ExecNotFound(_) => StatusCode::NOT_FOUND,
            ContainerError::Pod(hull_runtime::pod::PodError::NotFound(_)) => StatusCode::NOT_FOUND,
            ContainerError::NameInUse { .. }
            | ContainerError::NotRunning(_)
            | ContainerError::RemoveRunning(_)
            | ContainerError::PodMember { .. }
            | ContainerError::PodNetwork { .. }
            | ContainerError::PodRunning(_)
            | ContainerError::Pod(hull_runtime::pod::PodError::NameInUse { .. })
            | ContainerError::ExecAlreadyRan(_)
            | ContainerError::Paused(_)
            | ContainerError::AlreadyPaused(_)
            | ContainerError::NotPaused(_)
            | ContainerError::PodPause { .. } => StatusCode::CONFLICT,
            ContainerError::Network(NetworkError::UnknownNetwork(_)) => StatusCode::NOT_FOUND,
            ContainerError::Link(error) => link_status(error),
            ContainerError::Network(
                NetworkError::InUse { .. }
                | NetworkError::Exists(_)
                | NetworkError::AlreadyConnected { .. }
                | NetworkError::TooManyNetworks { .. }
                | NetworkError::FirstNetwork { .. }
                | NetworkError::NoBridges { .. }
                | NetworkError::AddressInUse { .. }
                | NetworkError::Overlap { .. },
            ) => StatusCode::CONFLICT,
            ContainerError::Network(NetworkError::Host { .. } | NetworkError::Io { .. }) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ContainerError::InvalidName(_)
            | ContainerError::InvalidSignal(_)
            | ContainerError::Spec(_)
            | ContainerError::Size(_)
            | ContainerError::Network(_) => StatusCode::BAD_REQUEST,
            ContainerError::PodLimits { .. } => StatusCode::CONFLICT,
            ContainerError::Volume(hull_runtime::volume::VolumeError::NotFound(_)) => {
                StatusCode::NOT_FOUND
            }
            ContainerError::Volume(hull_runtime::volume::VolumeError::InUse { .. })
            | ContainerError::VolumeBusy { .. } => StatusCode::CONFLICT,
            ContainerError::Volume(_) => StatusCode::BAD_REQUEST,
            ContainerError::Snapshot(error) => snapshot_status(error),
            ContainerError::Run(
                RunError::CommandNotFound(_)
                | RunError::CommandNotExecutable(_)
                | RunError::InvalidProcess(_),
            ) => StatusCode::BAD_REQUEST,
            ContainerError::Run(RunError::Admission(_)) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error_chain(&error))
    }
}

fn link_status(error: &hull_runtime::container::links::LinkError) -> StatusCode {
    use hull_runtime::container::links::LinkError;
    match error {
        LinkError::NoSuchLink { .. } => StatusCode::NOT_FOUND,
        LinkError::NotRunning { .. } | LinkError::DefaultName => StatusCode::CONFLICT,
        // Not 404: the docker CLI reads a create's 404 as a missing image
        // and pulls it.
        LinkError::NoTarget(_)
        | LinkError::NoVolumesFrom(_)
        | LinkError::Invalid(_)
        | LinkError::InvalidVolumesFrom(_)
        | LinkError::InvalidHost(_) => StatusCode::BAD_REQUEST,
    }
}

fn snapshot_status(error: &hull_runtime::volume::snapshot::SnapshotError) -> StatusCode {
    use hull_runtime::volume::{snapshot::SnapshotError, VolumeError};
    match error {
        SnapshotError::NotFound(_) | SnapshotError::Volume(VolumeError::NotFound(_)) => {
            StatusCode::NOT_FOUND
        }
        SnapshotError::Exists(_)
        | SnapshotError::VolumeExists(_)
        | SnapshotError::Freeze { .. } => StatusCode::CONFLICT,
        SnapshotError::InvalidName(_) | SnapshotError::Volume(_) => StatusCode::BAD_REQUEST,
        SnapshotError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The query parameters of a request.
pub(crate) struct Query(BTreeMap<String, String>);

impl Query {
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        Self(
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        // Go's strconv.ParseBool, as docker reads flags; and "yes".
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "True" | "TRUE" | "yes")
        )
    }

    pub(super) fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, format!("invalid {key}: {v:?}"))
                })
            })
            .transpose()
    }
}

pub(super) async fn read_json<T: serde::de::DeserializeOwned + Default>(
    mut request: Request<RequestBody>,
) -> Result<T, ApiError> {
    let body = super::body_bytes(&mut request).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&body)
}

/// Parses a request body as docker does: a member that is `null` is as
/// good as absent (Go leaves the field at its zero value), so clients that
/// send `"AutoRemove": null` are not refused.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}"))
    };
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(malformed)?;
    drop_null_members(&mut value);
    serde_json::from_value(value).map_err(malformed)
}

/// Removes the members whose value is `null` from every object in `value`.
/// serde_json bounds the nesting it parses, and so this recursion.
fn drop_null_members(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            members.retain(|_, member| !member.is_null());
            members.values_mut().for_each(drop_null_members);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_null_members),
        _ => {}
    }
}

pub(super) fn no_content() -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// 204 when a start or stop changed something, 304 when it was already so.
fn changed(changed: bool) -> Response<Body> {
    if changed {
        return no_content();
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response
}

/// The container named by `/containers/{reference}/…`.
pub(super) fn container(daemon: &Daemon, reference: &str) -> Result<Arc<Container>, ApiError> {
    Ok(daemon.containers().get(reference)?)
}

/// The runtime that boots VMs: setting it up can fail (a missing kernel).
pub(super) async fn runtime(
    daemon: &Daemon,
) -> Result<Arc<hull_runtime::Runtime<hull_vm::Qemu>>, ApiError> {
    daemon
        .runtime()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))
}

/// `POST /containers/{id}/pause`: its VM frozen.
pub(super) async fn pause(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    daemon.containers().pause(&container).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/unpause`.
pub(super) async fn unpause(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    daemon.containers().unpause(&container).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/start`.
pub(super) async fn start(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let runtime = runtime(daemon).await?;
    let started = daemon.containers().start(&runtime, &container).await?;
    Ok(changed(started))
}

/// `POST /containers/{id}/stop?t=…`.
pub(super) async fn stop(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let timeout = stop_timeout(&Query::of(request))?;
    let stopped = daemon.containers().stop(&container, timeout).await?;
    Ok(changed(stopped))
}

pub(super) fn stop_timeout(query: &Query) -> Result<Option<u32>, ApiError> {
    // `-1` means wait forever in docker; a day is as good here.
    let seconds: Option<i64> = query.number("t")?;
    Ok(seconds.map(|s| if s < 0 { 86_400 } else { s.min(86_400) as u32 }))
}

/// `POST /containers/{id}/restart?t=…`.
pub(super) async fn restart(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let timeout = stop_timeout(&Query::of(request))?;
    let runtime = runtime(daemon).await?;
    daemon
        .containers()
        .restart(&runtime, &container, timeout)
        .await?;
    Ok(no_content())
}

/// `POST /containers/{id}/kill?signal=…`.
pub(super) async fn kill(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let signal = match Query::of(request).get("signal").filter(|s| !s.is_empty()) {
        Some(signal) => parse_signal(signal)?,
        None => parse_signal("KILL")?,
    };
    daemon
        .containers()
        .kill(&container, signal)
        .await
        .map_err(|err| match err {
            ContainerError::NotRunning(id) => ApiError::new(
                StatusCode::CONFLICT,
                format!("Cannot kill container: {reference}: Container {id} is not running"),
            ),
            other => other.into(),
        })?;
    Ok(no_content())
}

/// `POST /containers/{id}/wait?condition=…`: the headers go out at once,
/// the body when the condition is met, as docker's client expects.
pub(super) async fn wait(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let condition = match Query::of(request).get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid condition: {other:?}"),
            ))
        }
    };
    let (tx, mut response) = channel_body(1);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    let tenant = match scope {
        Scope::Operator => None,
        Scope::Tenant(tenant) => Some(tenant.to_owned()),
    };
    tokio::spawn(async move {
        let (code, error) = container.wait(condition).await;
        // The runtime words a failed start with the store's names.
        let scope = tenant.as_deref().map_or(Scope::Operator, Scope::Tenant);
        let error = scope.unqualify_text(&error);
        let body = WaitResponse {
            status_code: i64::from(code),
            error: (!error.is_empty()).then_some(WaitError { message: error }),
        };
        let mut bytes = serde_json::to_vec(&body).expect("wait bodies serialize");
        bytes.push(b'\n');
        let _ = tx.send(Bytes::from(bytes)).await;
    });
    Ok(response)
}

/// `DELETE /containers/{id}?force=…`.
pub(super) async fn remove(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let query = Query::of(request);
    daemon
        .containers()
        .remove(&container, query.flag("force"))
        .await?;
    if query.flag("v") {
        daemon
            .containers()
            .remove_anonymous_volumes(&container.config());
    }
    Ok(no_content())
}

/// `DELETE /containers/{id}/{alias}?link=true`: removes the container's
/// link `alias`; both containers stay.
pub(super) async fn remove_link(
    daemon: &Daemon,
    reference: &str,
    alias: &str,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    daemon.containers().remove_link(&container, alias).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/rename?name=…`.
pub(super) fn rename(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request);
    let name = query
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "no new name given"))?;
    daemon.containers().rename(reference, name)?;
    Ok(no_content())
}

/// `POST /containers/{id}/update`: memory and CPU limits, within the
/// container's VM size, and the restart policy. What a VM cannot honour is
/// named in the answer's warnings.
pub(super) async fn update(
    daemon: &Daemon,
    reference: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    let body: ContainerUpdateBody = read_json(request).await?;
    if let Some(labels) = &body.labels {
        crate::server::sg::relabel(daemon, &container, labels)?;
        let rest = ContainerUpdateBody {
            labels: None,
            ..body.clone()
        };
        if serde_json::to_value(&rest).ok()
            == serde_json::to_value(ContainerUpdateBody::default()).ok()
        {
            return Ok(json_response(StatusCode::OK, &ContainerUpdated::default()));
        }
    }
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let mut nano_cpus = body.nano_cpus.filter(|n| *n > 0);
    if let Some(quota) = body.cpu_quota.filter(|q| *q > 0) {
        if nano_cpus.is_some() {
            return Err(bad(
                "conflicting options: CPU quota and NanoCpus cannot both be set".into(),
            ));
        }
        // Docker's default period is 100 ms.
        let period = body.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
        nano_cpus = Some(quota.saturating_mul(1000) / period * 1_000_000);
    }
    let restart = match body.restart_policy.filter(|p| !p.name.is_empty()) {
        Some(policy) => Some(
            Policy::from_docker(&policy.name, policy.maximum_retry_count)
                .ok_or_else(|| bad(format!("invalid restart policy '{}'", policy.name)))?,
        ),
        None => None,
    };
    if restart.is_some_and(|r| r != Policy::No) && container.config().auto_remove {
        return Err(bad(
            "Restart policy cannot be updated because AutoRemove is enabled for the container"
                .into(),
        ));
    }
    let mut warnings = Vec::new();
    let mut ignored = |field: &str, set: bool, why: &str| {
        if set {
            warnings.push(format!("Hull ignores {field}: {why}"));
        }
    };
    let positive = |value: Option<i64>| value.is_some_and(|v| v > 0);
    ignored("MemorySwap", positive(body.memory_swap), "a VM has no swap");
    ignored(
        "MemoryReservation",
        positive(body.memory_reservation),
        "a VM's memory is its own",
    );
    ignored(
        "CpuShares",
        positive(body.cpu_shares),
        "a VM's vCPUs are its own",
    );
    ignored(
        "CpusetCpus",
        body.cpuset_cpus.as_deref().is_some_and(|c| !c.is_empty()),
        "the host does not pin a VM's vCPUs",
    );
    ignored("BlkioWeight", positive(body.blkio_weight), "not supported");
    ignored("PidsLimit", positive(body.pids_limit), "not supported");
    let (vcpus, memory_mib) = daemon.vm_size();
    let number = |value: Option<i64>| value.map(serde_json::Value::from);
    let client_settings = settings::from_update(&[
        ("CpuShares", number(body.cpu_shares)),
        (
            "CpusetCpus",
            body.cpuset_cpus.clone().map(serde_json::Value::from),
        ),
        ("CpuPeriod", number(body.cpu_period)),
        ("CpuQuota", number(body.cpu_quota)),
        ("MemorySwap", number(body.memory_swap)),
        ("MemoryReservation", number(body.memory_reservation)),
        ("BlkioWeight", number(body.blkio_weight)),
        ("PidsLimit", number(body.pids_limit)),
    ]);
    let update = ContainerUpdate {
        limits: Limits::from_docker(body.memory, nano_cpus),
        restart,
        client_settings,
    };
    daemon
        .containers()
        .update(&container, VmSize { vcpus, memory_mib }, update)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &ContainerUpdated { warnings },
    ))
}

/// `POST /containers/prune`: removes every stopped container.
pub(super) async fn prune(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for container in daemon.containers().list() {
        let state = container.state();
        if state.running() {
            continue;
        }
        let size = dir_size(container.dir());
        if daemon.containers().remove(&container, false).await.is_ok() {
            deleted.push(container.id.clone());
            reclaimed += size;
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &ContainersPruned {
            containers_deleted: deleted,
            space_reclaimed: reclaimed,
        },
    ))
}

/// Bytes a directory's files take on disk (sparse files count what they use).
fn dir_size(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .map(|meta| meta.blocks() * 512)
        .sum()
}

/// `POST /containers/{id}/resize?h=…&w=…`.
pub(super) async fn resize(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let (rows, cols) = terminal_size(&Query::of(request))?;
    container.resize(rows, cols).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}

pub(super) fn terminal_size(query: &Query) -> Result<(u16, u16), ApiError> {
    let rows: Option<u16> = query.number("h")?;
    let cols: Option<u16> = query.number("w")?;
    Ok((rows.unwrap_or(24), cols.unwrap_or(80)))
}
