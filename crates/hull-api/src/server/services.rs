//! Services over the API: `GET /services`, `POST /services/create` (the
//! spec as JSON), `GET` and `DELETE /services/<name>`, and
//! `POST /services/<name>/scale?replicas=N`, `/rolling-update?image=`,
//! `/attach-fip?fip=IP[&force=1]` and `/detach-fip`. A service is its owner's: a
//! tenant's (on the tenant's own network) or the operator's (on the bridge
//! network it names); another owner's answers 404 as a missing one does.
//! Replicas are made and removed by the task in [`crate::service`],
//! those of a removed service too.

use http_body_util::BodyExt;
use hull_net::service::{spec::check_replicas, ServiceError, ServiceRecord, ServiceSpec};
use hull_net::NetworkError;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::containers::{no_content, Query};
use super::scope::Scope;
use super::{json_response, ApiError, Body, RequestBody};
use crate::daemon::Daemon;
use crate::service::{self, Replica};

/// A spec's JSON.
const MAX_BODY: usize = 64 * 1024;

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let status = match &error {
            ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
            ServiceError::Network(_, NetworkError::UnknownNetwork(_)) => StatusCode::NOT_FOUND,
            ServiceError::Network(_, NetworkError::Exhausted(_)) => StatusCode::CONFLICT,
            ServiceError::Exists(_) | ServiceError::Busy(_) => StatusCode::CONFLICT,
            ServiceError::Quota => StatusCode::FORBIDDEN,
            ServiceError::NoBridges(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServiceError::InvalidName(_)
            | ServiceError::Replicas(_)
            | ServiceError::Port { .. }
            | ServiceError::Algorithm(_)
            | ServiceError::Protocol(_)
            | ServiceError::HealthCheck(_)
            | ServiceError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, super::error_chain(&error))
    }
}

/// A service as `ls` and `inspect` show it.
#[derive(Debug, Serialize)]
struct View {
    id: String,
    name: String,
    network: String,
    address: String,
    service_port: u64,
    container_port: u64,
    protocol: hull_net::service::Protocol,
    algorithm: hull_net::service::Algorithm,
    session_affinity: bool,
    /// Carried by hulld's proxy rather than nftables.
    proxied: bool,
    health_check: hull_net::service::HealthCheck,
    image: String,
    cmd: Vec<String>,
    size: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    security_groups: Vec<String>,
    /// Wanted.
    replicas: u64,
    /// Taking connections.
    healthy: usize,
    /// The addresses the balancer sends new connections to.
    backends: Vec<std::net::Ipv4Addr>,
    members: Vec<Replica>,
    /// While a rolling update runs: the image it rolls back to.
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<String>,
    /// Its floating IP, the public address its port answers at.
    #[serde(skip_serializing_if = "Option::is_none")]
    fip: Option<std::net::Ipv4Addr>,
    /// Why the last replica could not be made, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn view(daemon: &Daemon, record: ServiceRecord) -> View {
    let members = service::replicas(daemon, &record);
    let backends = daemon.containers().networks().backends(&record.id);
    let healthy = members
        .iter()
        .filter(|r| r.address.is_some_and(|a| backends.contains(&a)))
        .count();
    let proxied = record.spec.proxied();
    let fip = daemon
        .containers()
        .networks()
        .fip_of(hull_net::fip::Holder::Service(&record.id));
    View {
        fip,
        error: daemon.services().failure(&record.id),
        rollback: record.rollback,
        id: record.id,
        address: record.vip.to_string(),
        network: record.spec.network,
        name: record.spec.name,
        service_port: record.spec.service_port,
        container_port: record.spec.container_port,
        protocol: record.spec.protocol,
        algorithm: record.spec.algorithm,
        session_affinity: record.spec.session_affinity,
        proxied,
        health_check: record.spec.health_check,
        image: record.spec.image,
        cmd: record.spec.cmd,
        size: record.spec.size,
        security_groups: record.spec.security_groups,
        replicas: record.spec.replicas,
        healthy,
        backends,
        members,
    }
}

fn owner(scope: Scope<'_>) -> Option<&str> {
    match scope {
        Scope::Operator => None,
        Scope::Tenant(tenant) => Some(tenant),
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Routes `/services` and `/services/...`.
pub(super) async fn route(
    daemon: &Daemon,
    scope: Scope<'_>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let method = request.method().clone();
    let path = super::strip_version(request.uri().path()).to_owned();
    let query = Query::of(&request);
    let owner = owner(scope);
    let services = daemon.containers().networks().services();
    if path == "/services" && method == Method::GET {
        let views: Vec<View> = services
            .list()
            .into_iter()
            .filter(|r| r.owner.as_deref() == owner)
            .map(|r| view(daemon, r))
            .collect();
        return Ok(json_response(StatusCode::OK, &views));
    }
    if path == "/services/create" && method == Method::POST {
        let body = bounded_body(request).await?;
        let spec: ServiceSpec =
            serde_json::from_slice(&body).map_err(|e| bad(format!("invalid service: {e}")))?;
        let record = create(daemon, scope, spec)?;
        daemon.services().wake();
        return Ok(json_response(StatusCode::CREATED, &view(daemon, record)));
    }
    let (name, action) = super::split_resource(&path, "/services/");
    match (&method, action) {
        (&Method::GET, "" | "json") => {
            let record = services.get(owner, &name)?;
            Ok(json_response(StatusCode::OK, &view(daemon, record)))
        }
        (&Method::DELETE, "") => {
            // Its replicas go with the next look at the services.
            daemon
                .containers()
                .networks()
                .remove_service(owner, &name)?;
            daemon.services().wake();
            Ok(no_content())
        }
        (&Method::POST, "scale") => {
            let replicas = query
                .get("replicas")
                .and_then(|r| r.parse::<u64>().ok())
                .ok_or_else(|| bad("give replicas=N, a number of 1 or more"))?;
            check_replicas(replicas)?;
            let record = services.modify(owner, &name, |record| {
                record.spec.replicas = replicas;
                Ok(())
            })?;
            daemon.services().wake();
            Ok(json_response(StatusCode::OK, &view(daemon, record)))
        }
        (&Method::POST, "rolling-update") => {
            let image = query
                .get("image")
                .filter(|i| !i.trim().is_empty() && i.len() <= 512)
                .ok_or_else(|| bad("give image=IMAGE, at most 512 bytes"))?
                .to_owned();
            let record = services.modify(owner, &name, |record| {
                if record.rollback.is_some() {
                    return Err(ServiceError::Busy(name.clone()));
                }
                if image != record.spec.image {
                    record.rollback = Some(std::mem::replace(&mut record.spec.image, image));
                }
                Ok(())
            })?;
            daemon.services().wake();
            Ok(json_response(StatusCode::OK, &view(daemon, record)))
        }
        (&Method::POST, "attach-fip") => {
            let ip = query.get("fip").unwrap_or_default();
            let ip = hull_net::fip::parse_ip(ip)?;
            let force = matches!(query.get("force"), Some("1" | "true" | "True"));
            super::fips::attach_to_service(daemon, scope, &name, ip, force)?;
            let record = services.get(owner, &name)?;
            Ok(json_response(StatusCode::OK, &view(daemon, record)))
        }
        (&Method::POST, "detach-fip") => {
            super::fips::detach_from_service(daemon, scope, &name)?;
            let record = services.get(owner, &name)?;
            Ok(json_response(StatusCode::OK, &view(daemon, record)))
        }
        _ => Err(super::not_found(&method, &path)),
    }
}

/// Checks the spec, chooses its network for the owner and records it.
fn create(
    daemon: &Daemon,
    scope: Scope<'_>,
    mut spec: ServiceSpec,
) -> Result<ServiceRecord, ApiError> {
    spec.validate()?;
    if !spec.size.is_empty() {
        crate::size::named(&spec.size).map_err(|e| bad(e.to_string()))?;
    }
    // The groups are the owner's: another's answers as a missing one.
    let groups_owner = owner(scope).unwrap_or_default();
    for group in &spec.security_groups {
        daemon
            .containers()
            .networks()
            .security_groups()
            .get(groups_owner, group)?;
    }
    spec.network = match scope {
        Scope::Tenant(tenant) => {
            let own = super::tenant_net::tenant_network(daemon, tenant)?;
            if !matches!(spec.network.as_str(), "" | "default" | "bridge") && spec.network != own {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "network {} not found: a tenant's services are on its own network",
                        spec.network.chars().take(64).collect::<String>()
                    ),
                ));
            }
            own
        }
        Scope::Operator if spec.network.is_empty() => {
            return Err(bad(
                "give the service's network with --network: services are on bridge networks",
            ))
        }
        Scope::Operator => spec.network,
    };
    Ok(daemon
        .containers()
        .networks()
        .create_service(owner(scope), spec)?)
}

async fn bounded_body(request: Request<RequestBody>) -> Result<bytes::Bytes, ApiError> {
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| bad(format!("reading the request failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a service's spec is at most {MAX_BODY} bytes"),
                ));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.into())
}
