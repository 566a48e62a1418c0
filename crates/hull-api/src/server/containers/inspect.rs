//! `GET /containers/{id}/json`.

use super::list::{networks_json, rfc3339};
use super::settings;
use super::*;
use crate::types::container::{HealthBody, HealthLogEntry};
use hull_runtime::container::health::Health;

/// Docker's `Mounts` of inspect. A tenant sees its volumes by its own
/// names, and not where their disks lie on the host.
pub(super) fn mounts_json(
    daemon: &Daemon,
    volumes: &[VolumeMount],
    scope: Scope<'_>,
) -> Vec<serde_json::Value> {
    volumes
        .iter()
        .map(|mount| {
            let (kind, name, source) = match &mount.source {
                VolumeSource::Volume { name } | VolumeSource::Anonymous { name } => {
                    let path = match scope {
                        Scope::Operator => daemon
                            .containers()
                            .volumes()
                            .get(name)
                            .map(|v| v.path.display().to_string())
                            .unwrap_or_default(),
                        Scope::Tenant(_) => String::new(),
                    };
                    ("volume", shown(scope, name), path)
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

/// A volume's name as `scope` calls it.
fn shown<'n>(scope: Scope<'_>, name: &'n str) -> &'n str {
    scope.unqualify(name).unwrap_or(name)
}

/// Docker's `HostConfig.Binds`: named volumes and host paths, by the
/// names `scope` gives them.
fn binds(volumes: &[VolumeMount], scope: Scope<'_>) -> Option<Vec<String>> {
    let binds: Vec<String> = volumes
        .iter()
        .filter_map(|m| {
            let source = match &m.source {
                VolumeSource::Volume { name } => shown(scope, name).to_owned(),
                VolumeSource::Bind { path } => path.display().to_string(),
                VolumeSource::Anonymous { .. } => return None,
            };
            let mode = if m.read_only { ":ro" } else { "" };
            Some(format!("{source}:{}{mode}", m.target))
        })
        .collect();
    Some(binds).filter(|b| !b.is_empty())
}

/// Docker's `Ports` map of inspect: each container port with its bindings.
pub(super) fn ports_map(
    ports: &[PortBinding],
    fill_ip: bool,
) -> BTreeMap<String, serde_json::Value> {
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

/// `GET /containers/{id}/json`.
/// A tenant (`scope`) sees its volumes by its own names, and none of the
/// host's paths.
pub(in crate::server) fn inspect(
    daemon: &Daemon,
    reference: &str,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
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
            status: state.status_name().into(),
            running: state.status == Status::Running,
            paused: state.paused,
            restarting: state.status == Status::Restarting,
            oom_killed: false,
            dead: false,
            pid: state.pid,
            exit_code: state.exit_code,
            // The runtime words a failed start with the store's names.
            error: scope.unqualify_text(&state.error),
            started_at: rfc3339(state.started_at),
            finished_at: rfc3339(state.finished_at),
            health: state
                .health
                .as_ref()
                .filter(|_| config.healthcheck.is_some())
                .map(health_body),
        },
        image: config.image_id.clone(),
        resolv_conf_path: String::new(),
        hostname_path: String::new(),
        hosts_path: String::new(),
        log_path: match scope {
            Scope::Operator => container.log_path().display().to_string(),
            Scope::Tenant(_) => String::new(),
        },
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
            binds: binds(&config.volumes, scope),
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
            other: serde_json::Map::new(),
        },
        mounts: mounts_json(daemon, &config.volumes, scope),
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
            healthcheck: config.healthcheck.clone(),
            other: serde_json::Map::new(),
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
    let mut body = with_client_settings(body, config);
    // Docker shows links by the containers' current names.
    let links = daemon.containers().links_shown(&container);
    let links = Some(links).filter(|l| !l.is_empty());
    body.host_config
        .other
        .insert("Links".into(), serde_json::json!(links));
    Ok(json_response(StatusCode::OK, &body))
}

/// Docker's `State.Health`.
fn health_body(health: &Health) -> HealthBody {
    HealthBody {
        status: health.status.as_str().into(),
        failing_streak: health.failing_streak,
        log: health
            .log
            .iter()
            .map(|result| HealthLogEntry {
                start: rfc3339(Some(result.start)),
                end: rfc3339(Some(result.end)),
                exit_code: result.exit_code,
                output: result.output.clone(),
            })
            .collect(),
    }
}

/// Adds to `body` the settings the client gave that Hull keeps only to
/// show them, and docker's defaults for the rest.
fn with_client_settings(
    mut body: ContainerInspect,
    config: &hull_runtime::container::ContainerConfig,
) -> ContainerInspect {
    let stored = &config.client_settings;
    let log = stored
        .get(settings::HOST_CONFIG)
        .and_then(|host| host.get("LogConfig"))
        .and_then(|log| serde_json::from_value(log.clone()).ok());
    if let Some(log) = log {
        body.host_config.log_config = log;
    }
    let computed = serde_json::to_value(&body.host_config).expect("inspect bodies serialize");
    body.host_config.other = settings::host_config_extra(&computed, stored);
    let computed = serde_json::to_value(&body.config).expect("inspect bodies serialize");
    body.config.other = settings::config_extra(&computed, stored);
    body
}
