//! `GET /containers/json` and its filters.

use super::*;
use hull_runtime::container::health::Schedule;

/// `GET /containers/json?all=…&filters=…&limit=…`.
pub(in crate::server) async fn list(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request);
    let all = query.flag("all");
    let filters = Filters::parse(query.get("filters"), daemon.images())?;
    let limit: Option<usize> = query
        .number("limit")?
        .filter(|&l: &i64| l > 0)
        .map(|l| l as usize);
    let mut summaries = Vec::new();
    let link_names = daemon.containers().link_names();
    for container in daemon.containers().list() {
        let record = container.record();
        if !scope.sees(&record.config.labels) {
            continue;
        }
        let wanted_by_status = all || record.state.running() || filters.has("status");
        if !wanted_by_status || !filters.accepts(&record) {
            continue;
        }
        let mut summary = summary(daemon, &record);
        // The operator sees every tenant's `web`: each by its qualified name.
        if let (Scope::Operator, Some(namespace)) = (scope, &record.namespace) {
            summary.names = vec![format!("/{namespace}/{}", record.name)];
        } else if let Some(names) = link_names.get(&record.id) {
            // Docker lists a linked container by its links' names too.
            summary.names.extend(names.iter().cloned());
        }
        summaries.push(summary);
        if limit.is_some_and(|l| summaries.len() >= l) {
            break;
        }
    }
    Ok(json_response(StatusCode::OK, &summaries))
}

/// Parses docker's `filters` query, `{"name":["web"]}` or the older
/// `{"name":{"web":true}}`, into each key's values.
pub(in crate::server) fn parse_filters(
    text: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
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
        const KNOWN: [&str; 7] = [
            "id", "name", "status", "label", "ancestor", "exited", "health",
        ];
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
                "status" => record.state.status_name() == value,
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
                "health" => health_text(record) == value,
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

pub(super) fn rfc3339(time: Option<SystemTime>) -> String {
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
        Status::Running if state.paused => format!("Up {} (Paused)", since(state.started_at)),
        Status::Running => match health_text(record) {
            "none" => format!("Up {}", since(state.started_at)),
            "starting" => format!("Up {} (health: starting)", since(state.started_at)),
            health => format!("Up {} ({health})", since(state.started_at)),
        },
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

/// Docker's word for a container's health in `ps` and its `health`
/// filter: `none` without a health check or before its first run.
fn health_text(record: &Record) -> &'static str {
    match (&record.config.healthcheck, &record.state.health) {
        (Some(config), Some(health)) if Schedule::of(config).is_some() => health.status.as_str(),
        _ => "none",
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
        state: record.state.status_name().into(),
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
pub(super) fn networks_json(
    daemon: &Daemon,
    record: &Record,
) -> BTreeMap<String, serde_json::Value> {
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
            "Gateway": if address.is_empty() { String::new() } else { hull_net::user_gateway().to_string() },
            "IPAddress": address, "IPPrefixLen": if address.is_empty() { 0 } else { 24 },
            "MacAddress": "", "Aliases": null,
        }),
        NetworkMode::Network(id) => {
            let network = containers.networks().get(id).ok();
            // A pod's containers share the pod's address, keyed by its id.
            let key = record.config.pod.as_ref().map_or(&record.id, |p| &p.pod);
            let endpoint = network.as_ref().and_then(|n| n.endpoints.get(key));
            match (network.as_ref(), endpoint) {
                (Some(network), Some(endpoint)) => endpoint_json(network, endpoint, &record.id),
                _ => serde_json::json!({"NetworkID": id}),
            }
        }
    };
    let mut value = value;
    // The interface has the MAC the client asked for, where it runs.
    if let (Some(mac), false) = (record.config.mac_address(), address.is_empty()) {
        value["MacAddress"] = mac.into();
    }
    let mut networks = BTreeMap::from([(name, value)]);
    if record.config.pod.is_none() {
        for network in containers.secondary_networks(&record.id) {
            if let Some(endpoint) = network.endpoints.get(&record.id) {
                networks.insert(
                    network.name.clone(),
                    endpoint_json(&network, endpoint, &record.id),
                );
            }
        }
    }
    networks
}

/// A container's endpoint on a user-defined network, as docker shows it.
fn endpoint_json(
    network: &hull_net::NetworkRecord,
    endpoint: &hull_net::Endpoint,
    container_id: &str,
) -> serde_json::Value {
    serde_json::json!({
        "NetworkID": network.id,
        "EndpointID": endpoint.id,
        "Gateway": network.gateway.to_string(),
        "IPAddress": endpoint.address.to_string(),
        "IPPrefixLen": network.subnet.prefix(),
        "MacAddress": endpoint.mac,
        "Aliases": endpoint.aliases,
        "DNSNames": [endpoint.container_name.clone(), container_id[..12].to_owned()],
    })
}
