//! `/hull/pods`: pods from pod files (a subset of the Kubernetes Pod spec),
//! their containers in one VM each.

use std::sync::Arc;

use super::RequestBody;
use hull_runtime::container::PodStatus;
use hull_runtime::pod::{self, PodError, PodFileError, PodRecord};
use hyper::{Request, Response, StatusCode};

use super::containers::{no_content, runtime, stop_timeout, Query};
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

fn pod(daemon: &Daemon, reference: &str) -> Result<Arc<PodRecord>, ApiError> {
    Ok(daemon.containers().pod(reference)?)
}

/// `POST /hull/pods/create`: the body is the pod file, YAML or JSON.
pub(super) async fn create(
    daemon: &Daemon,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let body = super::body_bytes(&mut request).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "the pod file is not UTF-8 text"))?;
    let spec = pod::parse(text)?;
    let record = daemon.containers().create_pod(spec).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &PodCreated {
            id: record.id.clone(),
            name: record.name().to_owned(),
            containers: record.members.clone(),
        },
    ))
}

/// `GET /hull/pods/json`.
pub(super) fn list(daemon: &Daemon) -> Response<Body> {
    let pods: Vec<PodSummary> = daemon
        .containers()
        .pods()
        .iter()
        .map(|pod| summary(daemon, pod))
        .collect();
    json_response(StatusCode::OK, &pods)
}

/// `GET /hull/pods/{name}/json`.
pub(super) fn inspect(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let pod = pod(daemon, reference)?;
    Ok(json_response(StatusCode::OK, &summary(daemon, &pod)))
}

/// `POST /hull/pods/{name}/start`.
pub(super) async fn start(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let pod = pod(daemon, reference)?;
    let runtime = runtime(daemon).await?;
    daemon.containers().start_pod(&runtime, &pod).await?;
    Ok(no_content())
}

/// `POST /hull/pods/{name}/stop?t=…`.
pub(super) async fn stop(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let pod = pod(daemon, reference)?;
    let timeout = stop_timeout(&Query::of(request))?;
    daemon.containers().stop_pod(&pod, timeout).await;
    Ok(no_content())
}

/// `DELETE /hull/pods/{name}?force=…`.
pub(super) async fn remove(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let pod = pod(daemon, reference)?;
    let force = Query::of(request).flag("force");
    daemon.containers().remove_pod(&pod, force).await?;
    Ok(no_content())
}

fn summary(daemon: &Daemon, pod: &PodRecord) -> PodSummary {
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
    PodSummary {
        id: pod.id.clone(),
        name: pod.name().to_owned(),
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
                    name: record.name,
                    image: record.config.image,
                    state: record.state.status.as_str().to_owned(),
                    exit_code: record.state.exit_code,
                    restart_count: record.state.restart_count,
                }
            })
            .collect(),
    }
}
