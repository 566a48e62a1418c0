//! `/containers/...`: create, list, inspect, start, stop, restart, kill,
//! wait, remove, rename, prune, resize and logs, in the Engine API's shapes.

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

use super::stream::{channel_body, stdcopy, CONTENT_MULTIPLEXED, CONTENT_RAW};
use super::{error_chain, full, json_response, ApiError, Body};
use crate::daemon::Daemon;
use hull_runtime::network::{NetworkError, NetworkMode, PortBinding, Protocol};
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
            | ContainerError::PodRunning(_)
            | ContainerError::Pod(hull_runtime::pod::PodError::NameInUse { .. })
            | ContainerError::ExecAlreadyRan(_) => StatusCode::CONFLICT,
            ContainerError::Network(NetworkError::UnknownNetwork(_)) => StatusCode::NOT_FOUND,
            ContainerError::Network(
                NetworkError::InUse { .. }
                | NetworkError::Exists(_)
                | NetworkError::AlreadyConnected { .. }
                | NetworkError::OneNetwork { .. }
                | NetworkError::Running(_)
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

/// The VM size that holds docker's `Memory` and `NanoCpus`; `None` without them.
fn vm_size(host: &HostConfig) -> Result<Option<VmSize>, ApiError> {
    let memory = host.memory.filter(|m| *m > 0);
    let nano_cpus = host.nano_cpus.filter(|n| *n > 0);
    if memory.is_none() && nano_cpus.is_none() {
        return Ok(None);
    }
    let memory_mib = memory.map_or(0, |bytes| (bytes as u64).div_ceil(1 << 20));
    let cpus = nano_cpus.map_or(0.0, |n| n as f64 / 1e9);
    hull_runtime::size::fitting(cpus, memory_mib)
        .map(Some)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The container's volumes: `Binds` (`-v`), `Mounts` (`--mount` of type
/// volume or bind), and an anonymous volume for each of `Volumes` (the
/// image's and `-v /path`) that neither mounts.
fn volume_mounts(
    anonymous: &Option<BTreeMap<String, serde_json::Value>>,
    host: &HostConfig,
) -> Result<Vec<VolumeMount>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let new_name = || hull_runtime::new_container_id();
    let mut mounts = Vec::new();
    for bind in host.binds.iter().flatten() {
        mounts.push(volume::parse_bind(bind, new_name).map_err(|e| bad(e.to_string()))?);
    }
    for mount in host.mounts.iter().flatten() {
        let field = |name: &str| mount.get(name).and_then(|v| v.as_str()).unwrap_or_default();
        let target = field("Target");
        if !target.starts_with('/') {
            return Err(bad(format!(
                "invalid mount target {target:?}: it must be absolute"
            )));
        }
        let source = match (field("Type"), field("Source")) {
            ("volume", "") => VolumeSource::Anonymous { name: new_name() },
            ("volume", name) => VolumeSource::Volume { name: name.into() },
            ("bind", path) if path.starts_with('/') => VolumeSource::Bind { path: path.into() },
            ("bind", path) => {
                return Err(bad(format!(
                    "invalid mount source {path:?}: it must be absolute"
                )))
            }
            (kind, _) => return Err(bad(format!("mounts of type {kind:?} are not supported"))),
        };
        mounts.push(VolumeMount {
            source,
            target: target.to_owned(),
            read_only: mount
                .get("ReadOnly")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
        });
    }
    for target in anonymous.iter().flat_map(|v| v.keys()) {
        if !mounts.iter().any(|m| &m.target == target) {
            mounts.push(volume::parse_bind(target, new_name).map_err(|e| bad(e.to_string()))?);
        }
    }
    Ok(mounts)
}

/// Docker's `Mounts` of inspect.
fn mounts_json(daemon: &Daemon, volumes: &[VolumeMount]) -> Vec<serde_json::Value> {
    volumes
        .iter()
        .map(|mount| {
            let (kind, name, source) = match &mount.source {
                VolumeSource::Volume { name } | VolumeSource::Anonymous { name } => {
                    let path = daemon
                        .containers()
                        .volumes()
                        .get(name)
                        .map(|v| v.disk.display().to_string())
                        .unwrap_or_default();
                    ("volume", name.as_str(), path)
                }
                VolumeSource::Bind { path } => ("bind", "", path.display().to_string()),
            };
            let mut json = serde_json::json!({
                "Type": kind,
                "Source": source,
                "Destination": mount.target,
                "Mode": if mount.read_only { "ro" } else { "" },
                "RW": !mount.read_only,
                "Propagation": "",
            });
            if kind == "volume" {
                json["Name"] = name.into();
                json["Driver"] = "local".into();
            }
            json
        })
        .collect()
}

/// Docker's `PortBindings`: `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`.
fn port_bindings(
    bindings: Option<&BTreeMap<String, serde_json::Value>>,
) -> Result<Vec<PortBinding>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let mut ports = Vec::new();
    for (key, hosts) in bindings.into_iter().flatten() {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        let container_port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(format!("invalid container port {key:?}")))?;
        let protocol = Protocol::parse(protocol).map_err(|e| bad(e.to_string()))?;
        let hosts: Vec<serde_json::Value> = match hosts {
            serde_json::Value::Null => vec![serde_json::Value::Null],
            serde_json::Value::Array(hosts) if hosts.is_empty() => vec![serde_json::Value::Null],
            serde_json::Value::Array(hosts) => hosts.clone(),
            other => return Err(bad(format!("invalid port binding for {key}: {other}"))),
        };
        for host in hosts {
            let field = |name: &str| host.get(name).and_then(|v| v.as_str()).unwrap_or_default();
            let host_port = match field("HostPort") {
                "" => 0,
                text => text
                    .parse::<u16>()
                    .map_err(|_| bad(format!("invalid host port {text:?} for {key}")))?,
            };
            let host_ip = field("HostIp").to_owned();
            if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(format!("invalid host address {host_ip:?} for {key}")));
            }
            ports.push(PortBinding {
                protocol,
                host_ip,
                host_port,
                container_port,
            });
        }
    }
    Ok(ports)
}

/// Docker's `Ports` map of inspect: each container port with its bindings.
fn ports_map(ports: &[PortBinding], fill_ip: bool) -> BTreeMap<String, serde_json::Value> {
    let mut map: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for port in ports {
        let host_ip = if port.host_ip.is_empty() && fill_ip {
            "0.0.0.0"
        } else {
            port.host_ip.as_str()
        };
        let host_port = if port.host_port == 0 {
            String::new()
        } else {
            port.host_port.to_string()
        };
        map.entry(port.key())
            .or_default()
            .push(serde_json::json!({"HostIp": host_ip, "HostPort": host_port}));
    }
    map.into_iter()
        .map(|(key, hosts)| (key, serde_json::Value::Array(hosts)))
        .collect()
}

/// The query parameters of a request.
pub(super) struct Query(BTreeMap<String, String>);

impl Query {
    pub(super) fn of<B>(request: &Request<B>) -> Self {
        Self(
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True" | "yes"))
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
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
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

/// `POST /containers/create?name=…`.
pub(super) async fn create(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(&request);
    let name = query.get("name").map(str::to_owned);
    let body: ContainerCreate = read_json(request).await?;
    let options = create_options(body, name)?;
    let container = daemon.containers().create(options).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &ContainerCreated {
            id: container.id.clone(),
            warnings: Vec::new(),
        },
    ))
}

fn create_options(body: ContainerCreate, name: Option<String>) -> Result<CreateOptions, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    if body.image.is_empty() {
        return Err(bad("no image given: set Image".into()));
    }
    let host = body.host_config.unwrap_or_default();
    let volumes = volume_mounts(&body.volumes, &host)?;
    let endpoints = body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default();
    // Without a NetworkMode, the one network of EndpointsConfig is it.
    let mode = match host.network_mode.as_deref().filter(|m| !m.is_empty()) {
        Some(mode) => mode.to_owned(),
        None if endpoints.len() == 1 => endpoints.keys().next().cloned().unwrap_or_default(),
        None => String::new(),
    };
    let network = NetworkMode::parse(&mode).map_err(|e| bad(e.to_string()))?;
    let endpoint = match endpoints.get(&mode) {
        Some(settings) => endpoint_options(settings)?,
        None => EndpointOptions::default(),
    };
    let ports = port_bindings(host.port_bindings.as_ref())?;
    if network == NetworkMode::None && !ports.is_empty() {
        return Err(bad(
            "conflicting options: port publishing and the container type network mode".into(),
        ));
    }
    let size = vm_size(&host)?;
    let policy = host.restart_policy.unwrap_or_default();
    let restart = Policy::from_docker(&policy.name, policy.maximum_retry_count)
        .ok_or_else(|| bad(format!("invalid restart policy '{}'", policy.name)))?;
    if host.auto_remove && restart != Policy::No {
        return Err(bad(
            "conflicting options: cannot specify both --restart and --rm".into(),
        ));
    }
    let rlimits = host
        .ulimits
        .iter()
        .flatten()
        .map(Ulimit::to_rlimit)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let log = host.log_config.clone().unwrap_or_default();
    let log = hull_runtime::container::logs::LogConfig::from_docker(
        &log.kind,
        &log.config.unwrap_or_default(),
    )
    .map_err(|e| bad(e.to_string()))?;
    // `--entrypoint ""` arrives as `[""]`: it clears the image's entrypoint.
    let entrypoint = body
        .entrypoint
        .map(|e| e.into_iter().filter(|part| !part.is_empty()).collect());
    Ok(CreateOptions {
        name,
        image: body.image,
        process: ProcessOptions {
            cmd: body.cmd.unwrap_or_default(),
            entrypoint,
            env: body.env.unwrap_or_default(),
            workdir: Some(body.working_dir).filter(|w| !w.is_empty()),
            user: Some(body.user).filter(|u| !u.is_empty()),
            tty: body.tty,
            rlimits,
        },
        hostname: Some(body.hostname).filter(|h| !h.is_empty()),
        open_stdin: body.open_stdin,
        stdin_once: body.stdin_once,
        attach_stdin: body.attach_stdin,
        attach_stdout: body.attach_stdout,
        attach_stderr: body.attach_stderr,
        labels: body.labels.unwrap_or_default(),
        restart,
        auto_remove: host.auto_remove,
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout,
        pod: None,
        size,
        limits: Limits::from_docker(host.memory, host.nano_cpus),
        endpoint,
        network,
        ports,
        volumes,
        log,
    })
}

/// `GET /containers/json?all=…&filters=…&limit=…`.
pub(super) async fn list(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    scope: super::scope::Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request);
    let all = query.flag("all");
    let filters = Filters::parse(query.get("filters"), daemon.images())?;
    let limit: Option<usize> = query
        .number("limit")?
        .filter(|&l: &i64| l > 0)
        .map(|l| l as usize);
    let mut summaries = Vec::new();
    for container in daemon.containers().list() {
        let record = container.record();
        if !scope.sees(&record.config.labels) {
            continue;
        }
        let wanted_by_status = all || record.state.running() || filters.has("status");
        if !wanted_by_status || !filters.accepts(&record) {
            continue;
        }
        summaries.push(summary(daemon, &record));
        if limit.is_some_and(|l| summaries.len() >= l) {
            break;
        }
    }
    Ok(json_response(StatusCode::OK, &summaries))
}

/// Parses docker's `filters` query, `{"name":["web"]}` or the older
/// `{"name":{"web":true}}`, into each key's values.
pub(super) fn parse_filters(text: Option<&str>) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid filters: {e}")))?;
    Ok(raw
        .into_iter()
        .map(|(key, values)| {
            let values = match values {
                serde_json::Value::Array(list) => list
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                serde_json::Value::Object(map) => map.into_iter().map(|(k, _)| k).collect(),
                _ => Vec::new(),
            };
            (key, values)
        })
        .collect())
}

/// The container filters of `GET /containers/json`.
struct Filters {
    values: BTreeMap<String, Vec<String>>,
    /// The image ids `ancestor` names, resolved once for every container.
    ancestor_ids: Vec<String>,
}

impl Filters {
    fn parse(text: Option<&str>, images: &hull_image::ImageStore) -> Result<Self, ApiError> {
        let values = parse_filters(text)?;
        const KNOWN: [&str; 6] = ["id", "name", "status", "label", "ancestor", "exited"];
        if let Some(other) = values.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid filter '{other}'"),
            ));
        }
        let ancestor_ids = values
            .get("ancestor")
            .into_iter()
            .flatten()
            .filter_map(|name| images.resolve(name).ok())
            .map(|image| image.id)
            .collect();
        Ok(Self {
            values,
            ancestor_ids,
        })
    }

    fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    fn accepts(&self, record: &Record) -> bool {
        self.values.iter().all(|(key, values)| {
            let matches = |value: &String| match key.as_str() {
                "id" => record.id.starts_with(value.as_str()),
                "name" => record.name.contains(value.trim_start_matches('/')),
                "status" => record.state.status.as_str() == value,
                "exited" => {
                    record.state.status == Status::Exited
                        && value.parse::<i32>() == Ok(record.state.exit_code)
                }
                "label" => match value.split_once('=') {
                    Some((k, v)) => record.config.labels.get(k).is_some_and(|l| l == v),
                    None => record.config.labels.contains_key(value.as_str()),
                },
                "ancestor" => {
                    record.config.image == *value
                        || self.ancestor_ids.contains(&record.config.image_id)
                }
                _ => false,
            };
            // Docker ANDs its label filters and ORs the values of others.
            if key == "label" {
                values.iter().all(matches)
            } else {
                values.iter().any(matches)
            }
        })
    }
}

fn rfc3339(time: Option<SystemTime>) -> String {
    match time {
        Some(time) => humantime::format_rfc3339_nanos(time).to_string(),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

/// Docker's `Status` column: "Up 5 seconds", "Exited (0) 2 minutes ago".
fn status_text(record: &Record, now: SystemTime) -> String {
    let since = |time: Option<SystemTime>| {
        human_duration(
            time.and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default(),
        )
    };
    let state = &record.state;
    match state.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", since(state.started_at)),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            state.exit_code,
            since(state.finished_at)
        ),
        Status::Exited => match state.finished_at {
            Some(_) => format!(
                "Exited ({}) {} ago",
                state.exit_code,
                since(state.finished_at)
            ),
            None => "Created".into(),
        },
        Status::Removing => "Removal In Progress".into(),
    }
}

fn command_line(record: &Record) -> String {
    record.config.process.args.join(" ")
}

fn summary(daemon: &Daemon, record: &Record) -> ContainerSummary {
    ContainerSummary {
        id: record.id.clone(),
        names: vec![format!("/{}", record.name)],
        image: record.config.image.clone(),
        image_id: record.config.image_id.clone(),
        command: command_line(record),
        created: unix_seconds(record.created),
        ports: record
            .state
            .ports
            .iter()
            .map(|p| {
                serde_json::json!({
                    "IP": if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() },
                    "PrivatePort": p.container_port,
                    "PublicPort": p.host_port,
                    "Type": p.protocol.to_string(),
                })
            })
            .collect(),
        labels: record.config.labels.clone(),
        state: record.state.status.as_str().into(),
        status: status_text(record, SystemTime::now()),
        host_config: SummaryHostConfig {
            network_mode: daemon.containers().network_name(&record.config.network),
        },
        network_settings: SummaryNetworks {
            networks: networks_json(daemon, record),
        },
        mounts: Vec::new(),
    }
}

/// `NetworkSettings.Networks`: the container's network by name, with its
/// address while it runs.
fn networks_json(daemon: &Daemon, record: &Record) -> BTreeMap<String, serde_json::Value> {
    let containers = daemon.containers();
    let name = containers.network_name(&record.config.network);
    let address = &record.state.ip_address;
    let value = match &record.config.network {
        NetworkMode::None => serde_json::json!({
            "NetworkID": "none", "EndpointID": "", "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "MacAddress": "", "Aliases": null,
        }),
        NetworkMode::User => serde_json::json!({
            "NetworkID": "bridge", "EndpointID": "",
            "Gateway": if address.is_empty() { String::new() } else { hull_runtime::network::user_gateway().to_string() },
            "IPAddress": address, "IPPrefixLen": if address.is_empty() { 0 } else { 24 },
            "MacAddress": "", "Aliases": null,
        }),
        NetworkMode::Network(id) => {
            let network = containers.networks().get(id).ok();
            let endpoint = network.as_ref().and_then(|n| n.endpoints.get(&record.id));
            match (network.as_ref(), endpoint) {
                (Some(network), Some(endpoint)) => serde_json::json!({
                    "NetworkID": network.id,
                    "EndpointID": endpoint.id,
                    "Gateway": network.gateway.to_string(),
                    "IPAddress": endpoint.address.to_string(),
                    "IPPrefixLen": network.subnet.prefix(),
                    "MacAddress": endpoint.mac,
                    "Aliases": endpoint.aliases,
                    "DNSNames": [endpoint.container_name.clone(), record.id[..12].to_owned()],
                }),
                _ => serde_json::json!({"NetworkID": id}),
            }
        }
    };
    BTreeMap::from([(name, value)])
}

/// How a container joins a network: docker's `EndpointSettings`.
pub(super) fn endpoint_options(settings: &EndpointSettings) -> Result<EndpointOptions, ApiError> {
    let address = settings
        .ipam_config
        .as_ref()
        .map(|ipam| ipam.ipv4_address.as_str())
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("invalid IPv4 address {a:?}"),
                )
            })
        })
        .transpose()?;
    Ok(EndpointOptions {
        aliases: settings.aliases.clone().unwrap_or_default(),
        address,
    })
}

/// The container named by `/containers/{reference}/…`.
fn container(daemon: &Daemon, reference: &str) -> Result<Arc<Container>, ApiError> {
    Ok(daemon.containers().get(reference)?)
}

/// `GET /containers/{id}/json`.
pub(super) fn inspect(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let record = container.record();
    let (config, state) = (&record.config, &record.state);
    let mut args = config.process.args.clone();
    let path = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let body = ContainerInspect {
        id: record.id.clone(),
        created: rfc3339(Some(record.created)),
        path,
        args,
        state: ContainerStateBody {
            status: state.status.as_str().into(),
            running: state.status == Status::Running,
            paused: false,
            restarting: state.status == Status::Restarting,
            oom_killed: false,
            dead: false,
            pid: state.pid,
            exit_code: state.exit_code,
            error: state.error.clone(),
            started_at: rfc3339(state.started_at),
            finished_at: rfc3339(state.finished_at),
        },
        image: config.image_id.clone(),
        resolv_conf_path: String::new(),
        hostname_path: String::new(),
        hosts_path: String::new(),
        log_path: container.log_path().display().to_string(),
        name: format!("/{}", record.name),
        restart_count: state.restart_count,
        driver: "erofs+overlay".into(),
        platform: "linux".into(),
        exec_ids: Some(container.execs()).filter(|e| !e.is_empty()),
        host_config: InspectHostConfig {
            network_mode: daemon.containers().network_name(&config.network),
            restart_policy: RestartPolicy {
                name: config.restart.docker_name().into(),
                maximum_retry_count: config.restart.max_retries(),
            },
            auto_remove: config.auto_remove,
            log_config: LogConfig {
                kind: "json-file".into(),
                config: config.log.docker_options(),
            },
            binds: Some(
                config
                    .volumes
                    .iter()
                    .filter_map(|m| {
                        let source = match &m.source {
                            VolumeSource::Volume { name } => name.clone(),
                            VolumeSource::Bind { path } => path.display().to_string(),
                            VolumeSource::Anonymous { .. } => return None,
                        };
                        let mode = if m.read_only { ":ro" } else { "" };
                        Some(format!("{source}:{}{mode}", m.target))
                    })
                    .collect(),
            )
            .filter(|b: &Vec<String>| !b.is_empty()),
            port_bindings: ports_map(&config.ports, false),
            memory: config.limits.memory_bytes.map_or_else(
                || config.size.map_or(0, |s| i64::from(s.memory_mib) << 20),
                |bytes| bytes as i64,
            ),
            nano_cpus: config.limits.nano_cpus.map_or_else(
                || {
                    config
                        .size
                        .map_or(0, |s| i64::from(s.vcpus) * 1_000_000_000)
                },
                |nano| nano as i64,
            ),
            ulimits: Some(
                config
                    .process
                    .rlimits
                    .iter()
                    .map(Ulimit::from_rlimit)
                    .collect(),
            )
            .filter(|u: &Vec<Ulimit>| !u.is_empty()),
        },
        mounts: mounts_json(daemon, &config.volumes),
        config: InspectConfig {
            hostname: config.hostname.clone(),
            domainname: String::new(),
            user: config.process.user.clone(),
            attach_stdin: config.attach_stdin,
            attach_stdout: config.attach_stdout,
            attach_stderr: config.attach_stderr,
            tty: config.process.tty,
            open_stdin: config.open_stdin,
            stdin_once: config.stdin_once,
            env: config.process.env.clone(),
            cmd: Some(config.cmd.clone()).filter(|c| !c.is_empty()),
            image: config.image.clone(),
            working_dir: config.process.cwd.clone(),
            entrypoint: Some(config.entrypoint.clone()).filter(|e| !e.is_empty()),
            labels: config.labels.clone(),
            stop_signal: config.stop_signal.clone(),
            stop_timeout: config.stop_timeout,
        },
        network_settings: {
            let networks = networks_json(daemon, &record);
            let field = |key: &str| {
                networks
                    .values()
                    .next()
                    .and_then(|n| n[key].as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            InspectNetworkSettings {
                ports: ports_map(&record.state.ports, true),
                ip_address: record.state.ip_address.clone(),
                gateway: field("Gateway"),
                mac_address: field("MacAddress"),
                networks,
            }
        },
    };
    Ok(json_response(StatusCode::OK, &body))
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
    tokio::spawn(async move {
        let (code, error) = container.wait(condition).await;
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
    let update = ContainerUpdate {
        limits: Limits::from_docker(body.memory, nano_cpus),
        restart,
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

/// `GET /containers/{id}/logs?follow&stdout&stderr&since&until&timestamps&tail`.
pub(super) async fn logs(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    let query = Query::of(request);
    let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail =
        match query.get("tail").unwrap_or("all") {
            "all" | "" => None,
            n => Some(n.parse::<usize>().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("invalid tail: {n:?}"))
            })?),
        };
    let filter = LogFilter {
        stdout,
        stderr,
        since: timestamp(query.get("since"))?,
        until: timestamp(query.get("until"))?,
        tail,
    };
    let timestamps = query.flag("timestamps");
    let tty = container.config().process.tty;
    let mut entries = container.logs(filter, query.flag("follow"));
    let (tx, mut response) = channel_body(16);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(if tty {
            CONTENT_RAW
        } else {
            CONTENT_MULTIPLEXED
        }),
    );
    tokio::spawn(async move {
        while let Some(entry) = entries.recv().await {
            let Ok(entry) = entry else { return };
            let mut line = Vec::with_capacity(entry.line.len() + 32);
            if timestamps {
                line.extend_from_slice(
                    humantime::format_rfc3339_nanos(entry.time)
                        .to_string()
                        .as_bytes(),
                );
                line.push(b' ');
            }
            line.extend_from_slice(&entry.line);
            let chunk = if tty {
                Bytes::from(line)
            } else {
                stdcopy(entry.stream, &line)
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// Docker's `since`/`until`: Unix seconds with an optional fraction.
pub(super) fn timestamp(value: Option<&str>) -> Result<Option<SystemTime>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_empty() && *v != "0") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid timestamp: {value:?}"),
        )
    };
    let (seconds, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let seconds: u64 = seconds.parse().map_err(|_| invalid())?;
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: u32 = format!("{digits:0<9}").parse().map_err(|_| invalid())?;
    Ok(Some(UNIX_EPOCH + Duration::new(seconds, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_take_fractions() {
        let at = timestamp(Some("1700000000.5")).unwrap().unwrap();
        assert_eq!(at, UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000));
        assert_eq!(timestamp(Some("0")).unwrap(), None);
        assert!(timestamp(Some("soon")).is_err());
    }

    #[test]
    fn restart_and_rm_conflict_and_bad_volumes_are_refused() {
        let body: ContainerCreate = serde_json::from_str(
            r#"{"Image":"busybox","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#,
        )
        .unwrap();
        assert!(create_options(body, None).is_err());
        for host in [
            r#"{"Binds":["rel/dir:/b"]}"#,
            r#"{"Binds":["data:b"]}"#,
            r#"{"Mounts":[{"Type":"tmpfs","Target":"/t"}]}"#,
            r#"{"Mounts":[{"Type":"bind","Source":"rel","Target":"/t"}]}"#,
        ] {
            let text = format!(r#"{{"Image":"busybox","HostConfig":{host}}}"#);
            let body: ContainerCreate = serde_json::from_str(&text).unwrap();
            assert!(create_options(body, None).is_err(), "{host}");
        }
        let body: ContainerCreate = serde_json::from_str(
            r#"{"Image":"busybox","Volumes":{"/cache":{}},"HostConfig":{"Binds":["/a:/b:ro","data:/d"]}}"#,
        )
        .unwrap();
        let volumes = create_options(body, None).unwrap().volumes;
        assert_eq!(volumes.len(), 3);
        assert_eq!(volumes[0].source, VolumeSource::Bind { path: "/a".into() });
        assert!(volumes[0].read_only);
        assert_eq!(
            volumes[1].source,
            VolumeSource::Volume {
                name: "data".into()
            }
        );
        assert_eq!(volumes[2].target, "/cache");
        let body: ContainerCreate =
            serde_json::from_str(r#"{"Image":"busybox","Entrypoint":[""],"Cmd":["ls"]}"#).unwrap();
        let options = create_options(body, None).unwrap();
        assert_eq!(options.process.entrypoint, Some(vec![]));
    }
}
