//! Hyper.sh's floating IPs: `POST /fips/allocate?count=`, `/fips/attach?ip=
//! &container=`, `/fips/detach?container=`, `/fips/release?ip=`,
//! `/fips/name?ip=&name=` and `GET /fips`; `service=NAME` in place of
//! `container=` attaches to (and detaches from) a service. A tenant sees
//! and changes only its own FIPs and attaches them only to its own
//! containers and services; another's answers as one that does not exist.
//! Allocations count against the tenant's `fips` quota.

use hull_net::fip::{self, FipError, Holder, Owner};
use hull_net::{NetworkError, Protocol};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::containers::{no_content, parse_filters, Query};
use super::scope::{self, Scope};
use super::tenancy::admit;
use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;

impl From<FipError> for ApiError {
    fn from(error: FipError) -> Self {
        let status = match &error {
            FipError::NotFound(_) | FipError::NoneAttached(_) => StatusCode::NOT_FOUND,
            FipError::Invalid(_)
            | FipError::InvalidName(_)
            | FipError::Count(_)
            | FipError::NotBridged(_) => StatusCode::BAD_REQUEST,
            FipError::Attached { .. } | FipError::HasOne { .. } | FipError::InUse { .. } => {
                StatusCode::CONFLICT
            }
            FipError::Exhausted { .. } | FipError::NoPool | FipError::NoUplink(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            FipError::Write { .. } | FipError::Read { .. } | FipError::Host { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, error.to_string())
    }
}

/// The ports a tenant's container published: a tenant's `-p` publishes
/// nothing on the host's addresses, only on the container's FIP, so the
/// API keeps them here (`80/tcp,53/udp`) rather than in the runtime's ports.
pub(super) const PORTS_LABEL: &str = "sh.hull.fip-ports";
/// A tenant's container publishes at most this many ports.
const MAX_PORTS: usize = 256;

/// Takes a tenant's `HostConfig.PortBindings` out of a create request:
/// its container ports are what a FIP attached to it will open, at the
/// same port numbers (a FIP is the container's own address). The label's
/// value, empty for none.
pub(super) fn take_tenant_ports(raw: &mut Value) -> Result<String, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let Some(bindings) = raw
        .get_mut("HostConfig")
        .and_then(Value::as_object_mut)
        .and_then(|host| host.remove("PortBindings"))
    else {
        return Ok(String::new());
    };
    let bindings = match bindings {
        Value::Object(map) => map,
        Value::Null => return Ok(String::new()),
        _ => return Err(bad("invalid PortBindings: expected an object".into())),
    };
    if bindings.len() > MAX_PORTS {
        return Err(bad(format!(
            "a container publishes at most {MAX_PORTS} ports"
        )));
    }
    let mut ports = Vec::new();
    for (key, hosts) in &bindings {
        let parsed = hull_net::parse_publish(key).map_err(|e| bad(e.to_string()))?;
        let [binding] = parsed.as_slice() else {
            return Err(bad(format!("invalid port {key:?}: one port per entry")));
        };
        for host in hosts.as_array().into_iter().flatten() {
            let field = |name: &str| host.get(name).and_then(Value::as_str).unwrap_or_default();
            let own_port = binding.container_port.to_string();
            if !matches!(field("HostIp"), "" | "0.0.0.0")
                || !(field("HostPort").is_empty() || field("HostPort") == own_port)
            {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "publishing ports on the host's addresses is not open to tenants: a tenant's container publishes its ports only on its floating IP, at their own numbers (use -p {own_port})"
                    ),
                ));
            }
        }
        ports.push(binding.key());
    }
    ports.sort();
    ports.dedup();
    Ok(ports.join(","))
}

/// The ports a FIP attached to `container` opens: a tenant's from its
/// label, the operator's those it publishes.
fn ports_of(container: &hull_runtime::Container) -> Vec<(Protocol, u16)> {
    let config = container.config();
    match config.labels.get(PORTS_LABEL) {
        Some(list) => list
            .split(',')
            .filter_map(|key| hull_net::parse_publish(key).ok())
            .flatten()
            .map(|p| (p.protocol, p.container_port))
            .collect(),
        None => config
            .ports
            .iter()
            .map(|p| (p.protocol, p.container_port))
            .collect(),
    }
}

fn from_network(error: NetworkError) -> ApiError {
    match error {
        NetworkError::Fip(error) => error.into(),
        other => other.into(),
    }
}

fn owner<'a>(scope: Scope<'a>) -> Owner<'a> {
    match scope {
        Scope::Operator => Owner::Operator,
        Scope::Tenant(tenant) => Owner::Tenant(tenant),
    }
}

fn required(query: &Query, key: &str) -> Result<String, ApiError> {
    query
        .get(key)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("missing query parameter {key}"),
            )
        })
}

fn ip_of(query: &Query) -> Result<std::net::Ipv4Addr, ApiError> {
    Ok(fip::parse_ip(&required(query, "ip")?)?)
}

fn is_true(query: &Query, key: &str) -> bool {
    matches!(query.get(key), Some("1" | "true" | "True"))
}

/// Every `/fips` request, for `scope`.
pub(super) async fn route<B>(
    daemon: &Daemon,
    scope: Scope<'_>,
    request: Request<B>,
) -> Result<Response<Body>, ApiError> {
    let path = super::strip_version(request.uri().path()).to_owned();
    let method = request.method().clone();
    let query = Query::of(&request);
    let networks = daemon.containers().networks();
    match (&method, path.as_str()) {
        (&Method::GET, "/fips") => list(daemon, scope, &query),
        (&Method::POST, "/fips/allocate") => {
            let text = required(&query, "count")?;
            let count = text
                .parse::<u64>()
                .map_err(|_| FipError::Count(text.chars().take(32).collect()))?;
            let pick = is_true(&query, "pick");
            let allocated = match scope {
                Scope::Operator => networks.allocate_fips(Owner::Operator, count, pick)?,
                Scope::Tenant(tenant) => {
                    // Held until the FIPs are recorded: two allocations
                    // at once cannot both fit in the last of the quota.
                    let _admitted = admit(
                        daemon,
                        tenant,
                        "fips",
                        count,
                        |q| q.fips,
                        || networks.fips_of(tenant),
                    )
                    .await?;
                    networks.allocate_fips(Owner::Tenant(tenant), count, pick)?
                }
            };
            let ips: Vec<String> = allocated.iter().map(ToString::to_string).collect();
            Ok(json_response(StatusCode::CREATED, &ips))
        }
        (&Method::POST, "/fips/attach") => {
            let ip = ip_of(&query)?;
            let force = is_true(&query, "force");
            if let Some(service) = query.get("service").filter(|s| !s.is_empty()) {
                attach_to_service(daemon, scope, service, ip, force)?;
                return Ok(no_content());
            }
            let container = scope::container_id(daemon, scope, &required(&query, "container")?)?;
            let found = daemon.containers().get_visible(&container, |_| true)?;
            let ports = ports_of(&found);
            networks
                .attach_fip(
                    owner(scope),
                    ip,
                    Holder::Container(&container),
                    &ports,
                    force,
                )
                .map_err(from_network)?;
            Ok(no_content())
        }
        (&Method::POST, "/fips/detach") => {
            if let Some(service) = query.get("service").filter(|s| !s.is_empty()) {
                detach_from_service(daemon, scope, service)?;
                return Ok(no_content());
            }
            let container = scope::container_id(daemon, scope, &required(&query, "container")?)?;
            networks
                .detach_fip(Holder::Container(&container))
                .map_err(from_network)?;
            Ok(no_content())
        }
        (&Method::POST, "/fips/release") => {
            networks.release_fip(owner(scope), ip_of(&query)?)?;
            Ok(no_content())
        }
        (&Method::POST, "/fips/name") => {
            let name = query.get("name").unwrap_or_default().to_owned();
            networks.name_fip(owner(scope), ip_of(&query)?, &name)?;
            Ok(no_content())
        }
        _ => Err(super::not_found(&method, &path)),
    }
}

/// The id of `scope`'s service `name`; another owner's is not found.
fn service_id(daemon: &Daemon, scope: Scope<'_>, name: &str) -> Result<String, ApiError> {
    let owner = match scope {
        Scope::Operator => None,
        Scope::Tenant(tenant) => Some(tenant),
    };
    Ok(daemon
        .containers()
        .networks()
        .services()
        .get(owner, name)?
        .id)
}

/// Attaches `ip` to `scope`'s service `name`: its port at the FIP reaches
/// its balancer, and its replicas go out from it.
pub(super) fn attach_to_service(
    daemon: &Daemon,
    scope: Scope<'_>,
    name: &str,
    ip: std::net::Ipv4Addr,
    force: bool,
) -> Result<(), ApiError> {
    let id = service_id(daemon, scope, name)?;
    daemon
        .containers()
        .networks()
        .attach_fip(owner(scope), ip, Holder::Service(&id), &[], force)
        .map_err(from_network)
}

pub(super) fn detach_from_service(
    daemon: &Daemon,
    scope: Scope<'_>,
    name: &str,
) -> Result<std::net::Ipv4Addr, ApiError> {
    let id = service_id(daemon, scope, name)?;
    daemon
        .containers()
        .networks()
        .detach_fip(Holder::Service(&id))
        .map_err(|e| match e {
            // Named as the user knows it.
            hull_net::NetworkError::Fip(FipError::NoneAttached(_)) => {
                FipError::NoneAttached(format!("service {name}")).into()
            }
            other => from_network(other),
        })
}

/// `GET /fips`: Hyper.sh's fields (`fip`, `name`, `container`, `service`),
/// and for the operator each FIP's `tenant`. `filters={"dangling":["true"]}`
/// keeps those attached to nothing.
fn list(daemon: &Daemon, scope: Scope<'_>, query: &Query) -> Result<Response<Body>, ApiError> {
    let filters = parse_filters(query.get("filters"))?;
    let dangling = match filters.get("dangling").map(Vec::as_slice) {
        None | Some([]) => None,
        Some([value]) if value == "true" || value == "1" => Some(true),
        Some([value]) if value == "false" || value == "0" => Some(false),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid filter dangling={other:?}: true or false"),
            ))
        }
    };
    let containers = daemon.containers();
    let services = containers.networks().services().list();
    let listed: Vec<serde_json::Value> = containers
        .networks()
        .list_fips(owner(scope))
        .into_iter()
        .filter(|record| dangling.is_none_or(|d| d == record.holder().is_none()))
        .map(|record| {
            let container = record
                .container
                .as_deref()
                .and_then(|id| containers.get_visible(id, |_| true).ok())
                .map(|c| match scope {
                    Scope::Operator => c.qualified_name(),
                    Scope::Tenant(_) => c.name(),
                })
                .unwrap_or_default();
            let service = record
                .service
                .as_deref()
                .and_then(|id| services.iter().find(|s| s.id == id))
                .map(|s| s.spec.name.clone())
                .unwrap_or_default();
            let mut entry = serde_json::json!({
                "fip": record.ip.to_string(),
                "name": record.name,
                "container": container,
                "service": service,
            });
            if scope == Scope::Operator {
                entry["tenant"] = record.owner.unwrap_or_default().into();
            }
            entry
        })
        .collect();
    Ok(json_response(StatusCode::OK, &listed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(body: &str) -> Result<(String, Value), ApiError> {
        let mut raw: Value = serde_json::from_str(body).unwrap();
        take_tenant_ports(&mut raw).map(|ports| (ports, raw))
    }

    #[test]
    fn a_tenants_ports_are_taken_for_its_fip_and_never_reach_the_host() {
        let (ports, raw) = take(
            r#"{"HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":""}],"53/udp":[{"HostPort":"53"}],"8081":[]}}}"#,
        )
        .unwrap();
        assert_eq!(ports, "53/udp,80/tcp,8081/tcp");
        assert!(raw["HostConfig"].get("PortBindings").is_none());
        assert_eq!(take(r#"{"Image":"x"}"#).unwrap().0, "");
        assert_eq!(
            take(r#"{"HostConfig":{"PortBindings":null}}"#).unwrap().0,
            ""
        );
    }

    #[test]
    fn host_addresses_other_ports_and_hostile_keys_are_refused() {
        for (body, status) in [
            (
                r#"{"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}"#,
                403,
            ),
            (
                r#"{"HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"127.0.0.1"}]}}}"#,
                403,
            ),
            (r#"{"HostConfig":{"PortBindings":{"80-90/tcp":[]}}}"#, 400),
            (r#"{"HostConfig":{"PortBindings":{"0/tcp":[]}}}"#, 400),
            (r#"{"HostConfig":{"PortBindings":{"80/sctp":[]}}}"#, 400),
            (r#"{"HostConfig":{"PortBindings":{"a,b":[]}}}"#, 400),
            (r#"{"HostConfig":{"PortBindings":[1]}}"#, 400),
        ] {
            let refused = take(body).unwrap_err();
            assert_eq!(refused.status.as_u16(), status, "{body}");
        }
        let many: serde_json::Map<String, Value> = (1..=MAX_PORTS as u16 + 1)
            .map(|p| (format!("{p}/tcp"), Value::Array(Vec::new())))
            .collect();
        let mut raw = serde_json::json!({"HostConfig": {"PortBindings": many}});
        assert!(take_tenant_ports(&mut raw).is_err());
    }
}
