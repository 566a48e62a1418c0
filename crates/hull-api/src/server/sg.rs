//! Security groups over the API, at Hyper.sh's paths: `GET /sg`, and
//! `POST` (create), `PUT` (update), `GET` and `DELETE` on `/sg/<name>`,
//! the group's YAML (or JSON) as the body. Groups are their owner's: a
//! tenant's, or the operator's on the Unix socket; another owner's group
//! answers 404 as a missing one does. Containers join groups with the
//! `sh_hyper_sg_<name>` labels Hyper.sh's client set, at create and at
//! `POST /containers/<id>/update` (`{"Labels": {...}}`).

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use hull_net::sg::{self, GroupRecord, SecurityGroup, SgError, MAX_SPEC_BYTES};
use hull_net::NetworkMode;
use hull_runtime::container::Container;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use super::scope::{Scope, OWNER_LABEL};
use super::{json_response, ApiError, Body, RequestBody};
use crate::daemon::Daemon;

impl From<SgError> for ApiError {
    fn from(error: SgError) -> Self {
        let status = match &error {
            SgError::NotFound(_) => StatusCode::NOT_FOUND,
            SgError::Exists(_) | SgError::InUse { .. } => StatusCode::CONFLICT,
            SgError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SgError::Quota(_) => StatusCode::FORBIDDEN,
            SgError::InvalidName(_)
            | SgError::Invalid(_)
            | SgError::Parse(_)
            | SgError::TooManyRules(_)
            | SgError::TooManyGroups(_)
            | SgError::UserNetwork(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, super::error_chain(&error))
    }
}

/// A group as `inspect` and `ls` show it.
#[derive(Debug, Serialize)]
struct GroupView {
    name: String,
    description: String,
    rules: Vec<sg::Rule>,
    /// The names of the containers in it.
    containers: Vec<String>,
}

/// Whose groups a scope handles: a tenant's own, or the operator's.
fn owner<'a>(scope: Scope<'a>) -> &'a str {
    match scope {
        Scope::Operator => "",
        Scope::Tenant(tenant) => tenant,
    }
}

/// Routes `/sg` and `/sg/<name>`.
pub(super) async fn route(
    daemon: &Daemon,
    scope: Scope<'_>,
    method: &Method,
    path: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let wants_body = method == Method::POST || method == Method::PUT;
    let body = if wants_body {
        bounded_body(request).await?
    } else {
        bytes::Bytes::new()
    };
    handle(daemon, owner(scope), method, path, &body)
}

fn handle(
    daemon: &Daemon,
    owner: &str,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let networks = daemon.containers().networks();
    if path == "/sg" {
        if method != Method::GET {
            return Err(super::not_found(method, path));
        }
        let views: Vec<GroupView> = networks
            .security_groups()
            .list(owner)
            .into_iter()
            .map(|record| view(daemon, record))
            .collect();
        return Ok(json_response(StatusCode::OK, &views));
    }
    let (name, rest) = super::split_resource(path, "/sg/");
    if !rest.is_empty() {
        return Err(super::not_found(method, path));
    }
    match *method {
        Method::GET => {
            let record = networks.security_groups().get(owner, &name)?;
            Ok(json_response(StatusCode::OK, &view(daemon, record)))
        }
        Method::POST | Method::PUT => {
            let group = SecurityGroup::parse(body)?;
            let record = if *method == Method::POST {
                if group.name != name {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the body names group {:?}, the request {name:?}",
                            group.name
                        ),
                    ));
                }
                networks.create_group(owner, group)?
            } else {
                networks.update_group(owner, &name, group)?
            };
            let status = if *method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(status, &view(daemon, record)))
        }
        Method::DELETE => match networks.remove_group(owner, &name) {
            Ok(_) => Ok(super::containers::no_content()),
            // Name the containers as their owner knows them.
            Err(SgError::InUse { name, containers }) => Err(SgError::InUse {
                name,
                containers: containers.iter().map(|id| name_of(daemon, id)).collect(),
            }
            .into()),
            Err(err) => Err(err.into()),
        },
        _ => Err(super::not_found(method, path)),
    }
}

fn view(daemon: &Daemon, record: GroupRecord) -> GroupView {
    let networks = daemon.containers().networks();
    let containers = networks
        .security_groups()
        .users(&record.owner, &record.group.name)
        .iter()
        .map(|id| name_of(daemon, id))
        .collect();
    GroupView {
        name: record.group.name,
        description: record.group.description,
        rules: record.group.rules,
        containers,
    }
}

fn name_of(daemon: &Daemon, id: &str) -> String {
    daemon
        .containers()
        .get(id)
        .map(|c| c.name().trim_start_matches('/').to_owned())
        .unwrap_or_else(|_| id.chars().take(12).collect())
}

/// The body, refused past what a group's YAML may take, so that a client
/// cannot make the daemon hold more.
async fn bounded_body(request: Request<RequestBody>) -> Result<bytes::Bytes, ApiError> {
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request failed: {err}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_SPEC_BYTES {
                return Err(SgError::TooLarge(bytes.len() + data.len()).into());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.into())
}

/// The owner whose groups a container's labels name.
fn owner_of(labels: &BTreeMap<String, String>) -> String {
    labels.get(OWNER_LABEL).cloned().unwrap_or_default()
}

/// Checks, before a container is made, that the groups its labels name
/// exist for its owner and that its network can have groups.
pub(super) fn check_create(
    daemon: &Daemon,
    labels: &BTreeMap<String, String>,
    network: &NetworkMode,
) -> Result<Vec<String>, ApiError> {
    let groups = sg::groups_from_labels(labels);
    if groups.is_empty() {
        return Ok(groups);
    }
    if !matches!(network, NetworkMode::Network(_)) {
        return Err(SgError::UserNetwork("being created".into()).into());
    }
    daemon
        .containers()
        .networks()
        .security_groups()
        .check_join(&owner_of(labels), &groups)?;
    Ok(groups)
}

/// Puts a new container in the groups [`check_create`] passed.
pub(super) fn join(
    daemon: &Daemon,
    container: &Container,
    groups: Vec<String>,
) -> Result<(), ApiError> {
    if groups.is_empty() {
        return Ok(());
    }
    let owner = owner_of(&container.config().labels);
    daemon
        .containers()
        .networks()
        .join_groups(&container.id, &owner, groups)
        .map_err(ApiError::from)
}

/// `POST /containers/<id>/update` with `Labels`: the container's groups
/// become those its `sh_hyper_sg_*` labels name, live.
pub(super) fn relabel(
    daemon: &Daemon,
    container: &Container,
    labels: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    let owner = owner_of(&container.config().labels);
    let groups = sg::groups_from_labels(labels);
    daemon
        .containers()
        .networks()
        .join_groups(&container.id, &owner, groups)
        .map_err(|err| match err {
            SgError::UserNetwork(_) => SgError::UserNetwork(name_of(daemon, &container.id)),
            other => other,
        })
        .map_err(ApiError::from)
}
