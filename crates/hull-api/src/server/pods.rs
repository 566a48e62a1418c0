//! `/hull/pods`: pods from pod files (a subset of the Kubernetes Pod spec),
//! their containers in one VM each. The operator's on the Unix socket; a
//! tenant's, in its own namespace, through [`super::tenant_pods`].

use std::sync::Arc;

use super::RequestBody;
use hull_runtime::container::{PodOptions, PodStatus};
use hull_runtime::pod::{self, PodError, PodFileError, PodRecord};
use hyper::{Method, Request, Response, StatusCode};

use super::containers::{no_content, runtime, stop_timeout, Query};
use super::scope::{self, Scope};
use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::pod::{PodContainerSummary, PodCreated, PodSummary};
use crate::units::unix_seconds;

impl From<PodError> for ApiError {
    fn from(error: PodError) -> Self {
        let status = match &error {
            PodError::NotFound(_) => StatusCode::NOT_FOUND,
            PodError::NameInUse { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, super::error_chain(&error))
    }
}

impl From<PodFileError> for ApiError {
    fn from(error: PodFileError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, super::error_chain(&error))
    }
}

/// A request's body as a pod file's text.
pub(super) async fn pod_file_text(request: &mut Request<RequestBody>) -> Result<String, ApiError> {
    let body = super::body_bytes(request).await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the pod file is not UTF-8 text"))
}

/// `POST /hull/pods/create` for the operator: the body is the pod file,
/// YAML or JSON.
pub(super) async fn create(
    daemon: &Daemon,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let text = pod_file_text(&mut request).await?;
    let spec = pod::parse(&text)?;
    let record = daemon
        .containers()
        .create_pod(spec, PodOptions::default())
        .await?;
    Ok(created(&record))
}

/// The answer to a pod's create.
pub(super) fn created(record: &PodRecord) -> Response<Body> {
    json_response(
        StatusCode::CREATED,
        &PodCreated {
            id: record.id.clone(),
            name: record.name().to_owned(),
            containers: record.members.clone(),
        },
    )
}

/// `GET /hull/pods/json`: the pods `scope` sees.
pub(super) fn list(daemon: &Daemon, scope: Scope<'_>) -> Response<Body> {
    let pods: Vec<PodSummary> = daemon
        .containers()
        .pods()
        .iter()
        .filter(|pod| scope.owns(pod.namespace.as_deref()))
        .map(|pod| summary(daemon, pod, scope))
        .collect();
    json_response(StatusCode::OK, &pods)
}

/// `/hull/pods/{name}/{action}`, among the pods `scope` sees.
pub(super) async fn route(
    daemon: &Daemon,
    scope: Scope<'_>,
    method: &Method,
    path: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (reference, action) = super::split_resource(path, "/hull/pods/");
    match (method, action) {
        (&Method::GET, "json") => inspect(daemon, scope, &reference),
        (&Method::POST, "start") => start(daemon, scope, &reference).await,
        (&Method::POST, "stop") => stop(daemon, scope, &reference, &request).await,
        (&Method::DELETE, "") => remove(daemon, scope, &reference, &request).await,
        _ => Err(super::not_found(method, path)),
    }
}

/// `GET /hull/pods/{name}/json`.
fn inspect(daemon: &Daemon, scope: Scope<'_>, reference: &str) -> Result<Response<Body>, ApiError> {
    let pod = scope::pod(daemon, scope, reference)?;
    Ok(json_response(StatusCode::OK, &summary(daemon, &pod, scope)))
}

/// `POST /hull/pods/{name}/start`; a tenant's within its quota.
async fn start(
    daemon: &Daemon,
    scope: Scope<'_>,
    reference: &str,
) -> Result<Response<Body>, ApiError> {
    let pod = scope::pod(daemon, scope, reference)?;
    let runtime = runtime(daemon).await?;
    let start = async {
        daemon.containers().start_pod(&runtime, &pod).await?;
        Ok::<_, ApiError>(no_content())
    };
    match scope {
        Scope::Operator => start.await,
        Scope::Tenant(tenant) => {
            super::tenant_containers::start_within_quota(daemon, tenant, &pod.members, start).await
        }
    }
}

/// `POST /hull/pods/{name}/stop?t=…`.
async fn stop(
    daemon: &Daemon,
    scope: Scope<'_>,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let pod = scope::pod(daemon, scope, reference)?;
    let timeout = stop_timeout(&Query::of(request))?;
    daemon.containers().stop_pod(&pod, timeout).await;
    Ok(no_content())
}

/// `DELETE /hull/pods/{name}?force=…`.
async fn remove(
    daemon: &Daemon,
    scope: Scope<'_>,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let pod = scope::pod(daemon, scope, reference)?;
    let force = Query::of(request).flag("force");
    daemon.containers().remove_pod(&pod, force).await?;
    Ok(no_content())
}

/// A pod as `scope` names it: the operator sees a tenant's pod and its
/// containers by their qualified names (`acme/app`, `acme/app.web`).
fn summary(daemon: &Daemon, pod: &Arc<PodRecord>, scope: Scope<'_>) -> PodSummary {
    let containers = daemon.containers();
    let PodStatus {
        state,
        running,
        containers: total,
    } = containers.pod_status(pod);
    let status = match state {
        "running" => format!("{running}/{total} running"),
        other => other.to_owned(),
    };
    let qualify = |name: String| match (scope, &pod.namespace) {
        (Scope::Operator, Some(namespace)) => format!("{namespace}/{name}"),
        _ => name,
    };
    PodSummary {
        id: pod.id.clone(),
        name: qualify(pod.name().to_owned()),
        hostname: pod.spec.hostname.clone(),
        created: unix_seconds(pod.created),
        state: state.to_owned(),
        status,
        size: pod.spec.size.map(|s| s.to_string()).unwrap_or_default(),
        restart_policy: pod.spec.restart.docker_name().to_owned(),
        labels: pod.spec.labels.clone(),
        volumes: pod.spec.volumes.clone(),
        containers: containers
            .pod_members(pod)
            .iter()
            .map(|member| {
                let record = member.record();
                PodContainerSummary {
                    id: record.id,
                    name: qualify(record.name),
                    image: record.config.image,
                    state: record.state.status.as_str().to_owned(),
                    exit_code: record.state.exit_code,
                    restart_count: record.state.restart_count,
                }
            })
            .collect(),
    }
}
