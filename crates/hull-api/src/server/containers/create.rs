//! `POST /containers/create`: docker's create request into the runtime's
//! options.

use super::*;
use crate::server::scope::OWNER_LABEL;
use hull_runtime::container::health;
use hull_runtime::container::logs::LogError;

/// The VM size that holds docker's `Memory` and `NanoCpus`; `None` without them.
pub(in crate::server) fn vm_size(host: &HostConfig) -> Result<Option<VmSize>, ApiError> {
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

/// `POST /containers/create?name=…`.
pub(in crate::server) async fn create(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(&request);
    let name = query.get("name").map(str::to_owned);
    let body: ContainerCreate = read_json(request).await?;
    let options = create_options(body, name)?;
    create_with(daemon, options).await
}

/// Creates the container and answers docker's `201 {"Id": …}`.
pub(in crate::server) async fn create_with(
    daemon: &Daemon,
    options: CreateOptions,
) -> Result<Response<Body>, ApiError> {
    let groups = crate::server::sg::check_create(daemon, &options.labels, &options.network)?;
    let container = daemon.containers().create(options).await?;
    let joined = crate::server::sg::join(daemon, &container, groups);
    if let Err(err) = joined {
        // The container is not made unless it is ruled as asked.
        let removed = daemon.containers().remove(&container, true).await;
        if let Err(why) = removed {
            tracing::warn!(container = %container.id, error = %why, "cannot remove a container whose security groups failed");
        }
        return Err(err);
    }
    Ok(json_response(
        StatusCode::CREATED,
        &ContainerCreated {
            id: container.id.clone(),
            warnings: Vec::new(),
        },
    ))
}

/// A list among the client's `HostConfig` settings, each item read by
/// `item` (`None`: not what `what` says); null or absent is empty.
fn host_list(
    settings: &hull_runtime::container::ClientSettings,
    key: &str,
    what: &str,
    item: impl Fn(&serde_json::Value) -> Option<String>,
) -> Result<Vec<String>, ApiError> {
    let Some(value) = settings
        .get(super::settings::HOST_CONFIG)
        .and_then(|host| host.get(key))
    else {
        return Ok(Vec::new());
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid {key} {value}: {what}"),
        )
    };
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => {
            items.iter().map(|i| item(i).ok_or_else(invalid)).collect()
        }
        _ => Err(invalid()),
    }
}

/// `HostConfig.GroupAdd`: group names or gids, as strings (docker's) or
/// numbers.
fn group_add(settings: &hull_runtime::container::ClientSettings) -> Result<Vec<String>, ApiError> {
    host_list(
        settings,
        "GroupAdd",
        "a list of group names or ids",
        |group| match group {
            serde_json::Value::String(name) if !name.is_empty() => Some(name.clone()),
            serde_json::Value::Number(id) if id.as_u64().is_some() => Some(id.to_string()),
            _ => None,
        },
    )
}

/// A list of strings among the client's `HostConfig` settings (`Links`,
/// `VolumesFrom`, `ExtraHosts`).
fn host_strings(
    settings: &hull_runtime::container::ClientSettings,
    key: &str,
) -> Result<Vec<String>, ApiError> {
    host_list(settings, key, "a list of strings", |item| {
        item.as_str().map(str::to_owned)
    })
}

/// `--link`, `--volumes-from` and `--add-host`, read and checked.
#[allow(clippy::type_complexity)]
fn links_and_hosts(
    settings: &hull_runtime::container::ClientSettings,
) -> Result<(Vec<(String, String)>, Vec<String>, Vec<(String, String)>), ApiError> {
    use hull_runtime::container::links;
    let bad = |e: links::LinkError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string());
    let links = host_strings(settings, "Links")?
        .iter()
        .map(|text| links::parse_link(text).map_err(bad))
        .collect::<Result<_, _>>()?;
    let volumes_from = host_strings(settings, "VolumesFrom")?;
    for text in &volumes_from {
        links::parse_volumes_from(text).map_err(bad)?;
    }
    let hosts = host_strings(settings, "ExtraHosts")?
        .iter()
        .map(|text| links::parse_extra_host(text).map_err(bad))
        .collect::<Result<_, _>>()?;
    Ok((links, volumes_from, hosts))
}

pub(in crate::server) fn create_options(
    body: ContainerCreate,
    name: Option<String>,
) -> Result<CreateOptions, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    if body.image.is_empty() {
        return Err(bad("no image given: set Image".into()));
    }
    let mut host = body.host_config.unwrap_or_default();
    let mut client_settings =
        super::settings::from_create(std::mem::take(&mut host.other), body.other, host.privileged)?;
    let volumes = volume_mounts(&body.volumes, &host)?;
    let (links, volumes_from, extra_hosts) = links_and_hosts(&client_settings)?;
    // It lands in /etc/hostname and /etc/hosts, and sethostname takes 64 bytes.
    let hostname_ok = body.hostname.len() <= 64
        && (body.hostname.is_empty()
            || hull_runtime::container::links::is_host_name(&body.hostname));
    if !hostname_ok {
        return Err(bad(format!(
            "invalid hostname {:?}: at most 64 letters, digits, '-', '.' or '_'",
            body.hostname
        )));
    }
    // Kept as sent: inspect shows them and links name them.
    if let Some(exposed) = body.exposed_ports.filter(|ports| !ports.is_empty()) {
        client_settings
            .entry(super::settings::CONFIG.into())
            .or_default()
            .insert("ExposedPorts".into(), serde_json::json!(exposed));
    }
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
    // The other user-defined networks of EndpointsConfig (API 1.44's
    // `--network a --network b`) are joined besides.
    let secondary_networks = endpoints
        .iter()
        .filter(|(name, _)| **name != mode)
        .filter(|(name, _)| !matches!(name.as_str(), "" | "default" | "bridge" | "none" | "host"))
        .map(|(name, settings)| Ok((name.clone(), endpoint_options(settings)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
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
    if let Some(mac) = hull_runtime::container::mac_address_in(&client_settings) {
        if !hull_runtime::container::valid_mac(mac) {
            return Err(bad(format!(
                "invalid MAC address {mac:?}: six hex octets, unicast (02:42:ac:11:00:0a)"
            )));
        }
    }
    let rlimits = host
        .ulimits
        .iter()
        .flatten()
        .map(Ulimit::to_rlimit)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let log = host.log_config.clone().unwrap_or_default();
    let log_options = log.config.unwrap_or_default();
    let kind = if log.kind.is_empty() {
        "json-file"
    } else {
        &log.kind
    };
    let log =
        hull_runtime::container::logs::LogConfig::from_docker(kind, &log_options).map_err(|e| {
            match e {
                // docker's own words, which clients match, then what to do.
                // Exactly docker's words, which clients compare whole;
                // the README says which drivers Hull has.
                LogError::Driver(driver) => bad(format!(
                    "logger: no log driver named '{driver}' is registered"
                )),
                other => bad(other.to_string()),
            }
        })?;
    // Docker shows the options as given, not as Hull reads them.
    if host.log_config.is_some() {
        client_settings
            .entry(super::settings::HOST_CONFIG.into())
            .or_default()
            .insert(
                "LogConfig".into(),
                serde_json::json!({"Type": kind, "Config": log_options}),
            );
    }
    // `--entrypoint ""` arrives as `[""]`: it clears the image's entrypoint.
    let entrypoint = body
        .entrypoint
        .map(|e| e.into_iter().filter(|part| !part.is_empty()).collect());
    let labels = body.labels.unwrap_or_default();
    if let Some(healthcheck) = &body.healthcheck {
        health::validate(healthcheck).map_err(|e| bad(e.to_string()))?;
    }
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
            groups: group_add(&client_settings)?,
        },
        hostname: Some(body.hostname).filter(|h| !h.is_empty()),
        open_stdin: body.open_stdin,
        stdin_once: body.stdin_once,
        attach_stdin: body.attach_stdin,
        attach_stdout: body.attach_stdout,
        attach_stderr: body.attach_stderr,
        // An owned container's name is unique among its owner's.
        namespace: labels.get(OWNER_LABEL).cloned(),
        image_id: None,
        labels,
        restart,
        auto_remove: host.auto_remove,
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout,
        pod: None,
        size,
        limits: Limits::from_docker(host.memory, host.nano_cpus),
        endpoint,
        secondary_networks,
        network,
        ports,
        volumes,
        log,
        client_settings,
        healthcheck: body.healthcheck,
        links,
        volumes_from,
        extra_hosts,
    })
}

/// How a container joins a network: docker's `EndpointSettings`.
pub(in crate::server) fn endpoint_options(
    settings: &EndpointSettings,
) -> Result<EndpointOptions, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use hull_runtime::volume::VolumeSource;

    #[test]
    fn nulls_where_docker_takes_them_read_as_absent() {
        let body = br#"{"Image":"busybox","Tty":null,"Cmd":null,"Labels":{"a":"b"},
            "HostConfig":{"AutoRemove":null,"Privileged":null,"Memory":null,"CpuShares":null,
            "LogConfig":{"Type":null,"Config":null},"RestartPolicy":null},"MacAddress":null}"#;
        let body: ContainerCreate = super::super::parse_json(body).unwrap();
        let options = create_options(body, None).unwrap();
        assert!(!options.auto_remove);
        assert!(!options.process.tty);
        let kept: Vec<_> = options
            .client_settings
            .values()
            .flat_map(|s| s.keys())
            .collect();
        assert_eq!(kept, ["LogConfig"], "nulls are not kept");
        for bad in [&b"{"[..], b"[1", b"{\"Image\":1}"] {
            assert!(super::super::parse_json::<ContainerCreate>(bad).is_err());
        }
    }

    #[test]
    fn settings_hull_only_shows_back_are_kept_from_the_create() {
        let body: ContainerCreate = serde_json::from_str(
            r#"{"Image":"busybox","MacAddress":"02:42:ac:11:00:0a","HostConfig":
               {"CpuShares":512,"Init":true,"PidMode":"host","Privileged":true}}"#,
        )
        .unwrap();
        let settings = create_options(body, None).unwrap().client_settings;
        assert_eq!(settings["HostConfig"]["CpuShares"], 512);
        assert_eq!(settings["HostConfig"]["Init"], true);
        assert_eq!(settings["HostConfig"]["Privileged"], true);
        assert_eq!(settings["Config"]["MacAddress"], "02:42:ac:11:00:0a");
        let body: ContainerCreate =
            serde_json::from_str(r#"{"Image":"busybox","HostConfig":{"Runtime":"kata"}}"#).unwrap();
        assert!(create_options(body, None).is_err());
        for hostname in ["a b", "x\n10.0.0.1 evil", &"h".repeat(65)] {
            let text = serde_json::json!({"Image": "busybox", "Hostname": hostname}).to_string();
            let body: ContainerCreate = serde_json::from_str(&text).unwrap();
            assert!(create_options(body, None).is_err(), "{hostname:?}");
        }
    }

    #[test]
    fn a_healthcheck_is_read_and_checked_as_docker_checks_it() {
        let body: ContainerCreate = super::super::parse_json(
            br#"{"Image":"busybox","Healthcheck":{"Test":["CMD-SHELL","true"],
                "Interval":1000000000,"Retries":null,"StartPeriod":null}}"#,
        )
        .unwrap();
        let healthcheck = create_options(body, None).unwrap().healthcheck.unwrap();
        assert_eq!(healthcheck.test, ["CMD-SHELL", "true"]);
        assert_eq!(
            (healthcheck.interval, healthcheck.retries),
            (1_000_000_000, 0)
        );
        let body: ContainerCreate =
            super::super::parse_json(br#"{"Image":"busybox","Healthcheck":null}"#).unwrap();
        assert!(create_options(body, None).unwrap().healthcheck.is_none());
        for bad in [
            r#"{"Test":["CMD","true"],"Interval":10}"#,
            r#"{"Test":["CMD","true"],"Retries":-1}"#,
            r#"{"Test":["CMD"]}"#,
            r#"{"Test":["EXEC","true"]}"#,
        ] {
            let text = format!(r#"{{"Image":"busybox","Healthcheck":{bad}}}"#);
            let body: ContainerCreate = super::super::parse_json(text.as_bytes()).unwrap();
            assert!(create_options(body, None).is_err(), "{bad}");
        }
        for malformed in [
            &br#"{"Image":"busybox","Healthcheck":{"Interval":"1s"}}"#[..],
            br#"{"Image":"busybox","Healthcheck":{"Test":"true"}}"#,
        ] {
            assert!(super::super::parse_json::<ContainerCreate>(malformed).is_err());
        }
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
