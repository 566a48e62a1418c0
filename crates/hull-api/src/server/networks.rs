//! `/networks`: user-defined bridge networks, and docker's predefined
//! `bridge` (Hull's user-mode default) and `none`, in the Engine API's shapes.

use std::collections::BTreeMap;

use super::RequestBody;
use hull_net::{NetworkError, NetworkMode, NetworkOptions, NetworkRecord};
use hull_runtime::ContainerError;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::containers::{endpoint_options, parse_filters, read_json, Query};
use super::scope::{Scope, OWNER_LABEL};
use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::container::EndpointSettings;

impl From<NetworkError> for ApiError {
    fn from(error: NetworkError) -> Self {
        ContainerError::Network(error).into()
    }
}

/// The predefined networks: name, driver, and the network mode they are.
const PREDEFINED: [(&str, &str, NetworkMode); 2] = [
    ("bridge", "bridge", NetworkMode::User),
    ("none", "null", NetworkMode::None),
];

/// A predefined network's id: stable, and shaped as docker's.
fn predefined_id(name: &str) -> String {
    format!("{:0<64}", hex::encode(name))
}

/// `POST /networks/create`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkCreate {
    name: String,
    driver: String,
    internal: bool,
    attachable: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    driver: String,
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: String,
    gateway: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
}

/// `POST /networks/{id}/connect` and `/disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Connect {
    container: String,
    endpoint_config: Option<EndpointSettings>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn record_json(daemon: &Daemon, network: &NetworkRecord) -> serde_json::Value {
    let containers: BTreeMap<String, serde_json::Value> = network
        .endpoints
        .iter()
        .filter(|(id, _)| {
            daemon
                .containers()
                .get(id)
                .is_ok_and(|c| c.state().running())
        })
        .map(|(id, endpoint)| {
            let value = json!({
                "Name": endpoint.container_name,
                "EndpointID": endpoint.id,
                "MacAddress": endpoint.mac,
                "IPv4Address": format!("{}/{}", endpoint.address, network.subnet.prefix()),
                "IPv6Address": "",
            });
            (id.clone(), value)
        })
        .collect();
    json!({
        "Name": network.name,
        "Id": network.id,
        "Created": humantime::format_rfc3339_nanos(network.created).to_string(),
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": {},
            "Config": [{"Subnet": network.subnet.to_string(), "Gateway": network.gateway.to_string()}],
        },
        "Internal": network.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": network.options,
        "Labels": network.labels,
    })
}

fn predefined_json(
    daemon: &Daemon,
    name: &str,
    driver: &str,
    mode: &NetworkMode,
) -> serde_json::Value {
    let containers: BTreeMap<String, serde_json::Value> = daemon
        .containers()
        .list()
        .into_iter()
        .filter(|c| c.config().network == *mode && c.state().running())
        .map(|c| {
            let address = c.state().ip_address;
            let value = json!({
                "Name": c.name(),
                "EndpointID": "",
                "MacAddress": "",
                "IPv4Address": if address.is_empty() { String::new() } else { format!("{address}/24") },
                "IPv6Address": "",
            });
            (c.id.clone(), value)
        })
        .collect();
    let config = if *mode == NetworkMode::User {
        json!([{"Subnet": "10.0.2.0/24", "Gateway": hull_net::user_gateway().to_string()}])
    } else {
        json!([])
    };
    json!({
        "Name": name,
        "Id": predefined_id(name),
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": {},
        "Labels": {},
    })
}

/// Every network `scope` sees, predefined ones first. A tenant sees its
/// own network only: the predefined ones hold the operator's containers.
fn all_networks(daemon: &Daemon, scope: Scope<'_>) -> Vec<(bool, serde_json::Value)> {
    let predefined = PREDEFINED
        .iter()
        .filter(|_| scope == Scope::Operator)
        .map(|(name, driver, mode)| (true, predefined_json(daemon, name, driver, mode)));
    let custom = daemon
        .containers()
        .networks()
        .list()
        .into_iter()
        .filter(|n| scope.sees(&n.labels))
        .map(|n| (false, record_json(daemon, &n)));
    predefined.chain(custom).collect()
}

/// Whether a network passes docker's `GET /networks` filters.
fn accepts(
    filters: &BTreeMap<String, Vec<String>>,
    builtin: bool,
    network: &serde_json::Value,
) -> bool {
    let text = |key: &str| network[key].as_str().unwrap_or_default().to_owned();
    filters.iter().all(|(key, values)| {
        let matches = |value: &String| match key.as_str() {
            "name" => text("Name").contains(value.as_str()),
            "id" => text("Id").starts_with(value.as_str()),
            "driver" => text("Driver") == *value,
            "scope" => value == "local",
            "type" => (value == "builtin") == builtin,
            "dangling" => {
                let unused = network["Containers"]
                    .as_object()
                    .is_none_or(|c| c.is_empty());
                (value == "true" || value == "1") == (unused && !builtin)
            }
            "label" => match value.split_once('=') {
                Some((k, v)) => network["Labels"][k].as_str() == Some(v),
                None => network["Labels"].get(value.as_str()).is_some(),
            },
            _ => false,
        };
        // Docker ANDs its label filters and ORs the values of others.
        values.is_empty()
            || if key == "label" {
                values.iter().all(matches)
            } else {
                values.iter().any(matches)
            }
    })
}

/// `GET /networks`.
pub(super) fn list(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let filters = parse_filters(Query::of(request).get("filters"))?;
    let networks: Vec<serde_json::Value> = all_networks(daemon, scope)
        .into_iter()
        .filter(|(builtin, n)| accepts(&filters, *builtin, n))
        .map(|(_, n)| n)
        .collect();
    Ok(json_response(StatusCode::OK, &networks))
}

/// The network a path names among those `scope` sees: a predefined one by
/// name or id, or a user-defined one by name, id or id prefix. One a
/// tenant does not see answers as one that does not exist.
fn find(daemon: &Daemon, reference: &str, scope: Scope<'_>) -> Result<serde_json::Value, ApiError> {
    if scope == Scope::Operator {
        for (name, driver, mode) in &PREDEFINED {
            if reference == *name || reference == predefined_id(name) {
                return Ok(predefined_json(daemon, name, driver, mode));
            }
        }
    }
    let networks = daemon.containers().networks();
    let network = match scope {
        Scope::Operator => networks.get(reference)?,
        // Among its own only, so that an id prefix matches no other's.
        Scope::Tenant(_) => networks
            .list()
            .into_iter()
            .filter(|n| scope.sees(&n.labels))
            .find(|n| n.name == reference || n.id.starts_with(reference) && !reference.is_empty())
            .ok_or_else(|| NetworkError::UnknownNetwork(reference.to_owned()))?,
    };
    Ok(record_json(daemon, &network))
}

/// `GET /networks/{id}`.
pub(super) fn inspect(
    daemon: &Daemon,
    reference: &str,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &find(daemon, reference, scope)?,
    ))
}

/// `POST /networks/create`.
pub(super) async fn create(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let create: NetworkCreate = read_json(request).await?;
    if create.name.is_empty() {
        return Err(bad("no network name given: set Name"));
    }
    if !matches!(create.driver.as_str(), "" | "bridge") {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "plugin \"{}\" not found: Hull's networks use the bridge driver",
                create.driver
            ),
        ));
    }
    if create.enable_ipv6 {
        return Err(bad(
            "IPv6 networks are not supported: Hull's networks are IPv4",
        ));
    }
    let configs = create.ipam.and_then(|i| i.config).unwrap_or_default();
    if configs.len() > 1 {
        return Err(bad("a Hull network has one subnet: give one IPAM config"));
    }
    let mut options = NetworkOptions {
        name: create.name,
        internal: create.internal,
        labels: create.labels.unwrap_or_default(),
        options: create.options.unwrap_or_default(),
        ..Default::default()
    };
    if let Some(config) = configs.into_iter().next() {
        if !config.ip_range.is_empty() {
            return Err(bad(
                "IPRange is not supported: addresses come from the whole subnet",
            ));
        }
        if !config.subnet.is_empty() {
            options.subnet = Some(config.subnet.parse()?);
        }
        if !config.gateway.is_empty() {
            let gateway = config
                .gateway
                .parse()
                .map_err(|_| bad(format!("invalid gateway {:?}", config.gateway)))?;
            options.gateway = Some(gateway);
        }
    }
    let _ = create.attachable;
    let network = daemon.containers().networks().create(options)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"Id": network.id, "Warning": ""}),
    ))
}

fn refuse_predefined(reference: &str, what: &str) -> Result<(), ApiError> {
    if let Some((name, _, _)) = PREDEFINED
        .iter()
        .find(|(name, _, _)| reference == *name || reference == predefined_id(name))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name} is a pre-defined network and cannot be {what}"),
        ));
    }
    Ok(())
}

/// `DELETE /networks/{id}`.
pub(super) fn remove(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    refuse_predefined(reference, "removed")?;
    daemon.containers().networks().remove(reference)?;
    Ok(super::containers::no_content())
}

/// `POST /networks/{id}/connect`.
pub(super) async fn connect(
    daemon: &Daemon,
    reference: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    refuse_predefined(
        reference,
        "connected to: only user-defined networks are joined after create",
    )?;
    let body: Connect = read_json(request).await?;
    let container = daemon.containers().get(&body.container)?;
    // A tenant's container joins only its tenant's network, and no
    // operator's container a tenant's: the operator cannot bridge them.
    let network = daemon.containers().networks().get(reference)?;
    let owner = |labels: &BTreeMap<String, String>| labels.get(OWNER_LABEL).cloned();
    if owner(&container.config().labels) != owner(&network.labels) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "container {} and network {} have different owners: a tenant's containers join only their tenant's network",
                container.name(),
                network.name
            ),
        ));
    }
    let options = match &body.endpoint_config {
        Some(settings) => endpoint_options(settings)?,
        None => Default::default(),
    };
    daemon
        .containers()
        .connect(reference, &container, options)
        .await?;
    Ok(json_response(StatusCode::OK, &json!(null)))
}

/// `POST /networks/{id}/disconnect`.
pub(super) async fn disconnect(
    daemon: &Daemon,
    reference: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    refuse_predefined(reference, "disconnected from")?;
    let body: Connect = read_json(request).await?;
    let container = daemon.containers().get(&body.container)?;
    daemon
        .containers()
        .disconnect(reference, &container)
        .await?;
    Ok(json_response(StatusCode::OK, &json!(null)))
}

/// `POST /networks/prune`: the user-defined networks no container is on,
/// of those the `label` filters (`label!` negated) pick.
pub(super) fn prune(
    daemon: &Daemon,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let filters = parse_filters(Query::of(request).get("filters"))?;
    if let Some(key) = filters
        .keys()
        .find(|k| !matches!(k.as_str(), "label" | "label!"))
    {
        return Err(bad(format!(
            "invalid filter {key:?}: networks are pruned by label"
        )));
    }
    let labelled = |network: &NetworkRecord, filter: &str| match filter.split_once('=') {
        Some((key, value)) => network.labels.get(key).is_some_and(|v| v == value),
        None => network.labels.contains_key(filter),
    };
    let networks = daemon.containers().networks();
    let deleted: Vec<String> = networks
        .list()
        .into_iter()
        .filter(|n| n.endpoints.is_empty())
        .filter(|n| {
            let wanted = filters
                .get("label")
                .into_iter()
                .flatten()
                .all(|f| labelled(n, f));
            let unwanted = filters
                .get("label!")
                .into_iter()
                .flatten()
                .any(|f| labelled(n, f));
            wanted && !unwanted
        })
        .filter_map(|n| networks.remove(&n.id).ok().map(|n| n.name))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"NetworksDeleted": deleted}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_as_dockers_do() {
        let network = json!({"Name": "proj_default", "Id": "abc123", "Driver": "bridge",
            "Labels": {"com.docker.compose.project": "proj"}, "Containers": {}});
        let filters =
            |key: &str, value: &str| BTreeMap::from([(key.to_owned(), vec![value.to_owned()])]);
        assert!(accepts(&filters("name", "proj"), false, &network));
        assert!(!accepts(&filters("name", "other"), false, &network));
        assert!(accepts(&filters("id", "abc"), false, &network));
        assert!(accepts(
            &filters("label", "com.docker.compose.project=proj"),
            false,
            &network
        ));
        assert!(accepts(
            &filters("label", "com.docker.compose.project"),
            false,
            &network
        ));
        assert!(!accepts(
            &filters("label", "com.docker.compose.project=x"),
            false,
            &network
        ));
        assert!(accepts(&filters("type", "custom"), false, &network));
        assert!(!accepts(&filters("type", "custom"), true, &network));
        assert!(accepts(&filters("dangling", "true"), false, &network));
        assert_eq!(predefined_id("bridge").len(), 64);
    }
}
