//! `/_ping`, `/version`, `/info`, `/system/df`.

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::{blocking, full, json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{DiskUsage, Info, StartSummary, Version};
use crate::units::unix_seconds;
use crate::DOCKER_API_VERSION;

pub(super) fn ping() -> Response<Body> {
    let mut response = Response::new(full("OK"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    // The docker CLI checks options such as `--device` against the OS it
    // learns here.
    response
        .headers_mut()
        .insert("OSType", HeaderValue::from_static("linux"));
    response
}

/// Whether `path` is one of swarm mode's endpoints, which Hull, like a
/// docker host outside a swarm, answers with 503. Not `/services`: those
/// are Hull's own, as they were Hyper.sh's.
pub(super) fn is_swarm(path: &str) -> bool {
    ["/swarm", "/nodes", "/tasks", "/secrets", "/configs"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// Docker's answer to swarm requests on a host that is in no swarm.
pub(super) fn not_in_swarm() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "This node is not part of a swarm",
    )
}

pub(super) fn version() -> Response<Body> {
    let kernel_version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json_response(
        StatusCode::OK,
        &Version {
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: DOCKER_API_VERSION.into(),
            min_api_version: "1.24".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            kernel_version,
        },
    )
}

pub(super) async fn info(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
    let images = daemon.images().clone();
    let count = blocking(move || images.list()).await?.len();
    let accel = daemon.accel();
    Ok(json_response(
        StatusCode::OK,
        &Info {
            images: count,
            operating_system: "Hull".into(),
            root_dir: daemon.root().display().to_string(),
            accelerator: Some(accel.accel.to_string()),
            accelerator_reason: Some(accel.reason.clone()),
            template: daemon.template_status().map(str::to_string),
            pooled_vms: daemon.pooled_vms(),
            recent_starts: daemon
                .started_runtime()
                .map(|runtime| runtime.recent_starts())
                .unwrap_or_default()
                .into_iter()
                .map(|start| StartSummary {
                    vm: start.vm,
                    path: start.path.to_owned(),
                    elapsed_ms: start.elapsed_ms,
                    at: unix_seconds(start.at),
                })
                .collect(),
        },
    ))
}

/// `GET /info` for a tenant: its own containers and quota, nothing of the
/// host's (no paths, no other tenants' counts, no start history).
pub(super) fn tenant_info(daemon: &Daemon, tenant: &str) -> Result<Response<Body>, ApiError> {
    let used = super::tenancy::use_of(daemon, tenant);
    let quota = daemon
        .tenants()
        .tenant(tenant)
        .map_err(ApiError::from)?
        .quota;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "Containers": used.containers,
            "ContainersRunning": used.running,
            "ContainersPaused": 0,
            "ContainersStopped": used.containers - used.running,
            "OperatingSystem": "Hull",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Name": daemon.cloud_config().region,
            "Region": daemon.cloud_config().region,
            "Tenant": tenant,
            "Quota": quota,
        }),
    ))
}

/// `GET /system/df`: the images and the bytes their layers take.
pub(super) async fn df(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
    let images = super::images::summaries(daemon).await?;
    let store = daemon.images().clone();
    let layers_size = blocking(move || store.disk_usage()).await?;
    Ok(json_response(
        StatusCode::OK,
        &DiskUsage {
            layers_size: i64::try_from(layers_size).unwrap_or(i64::MAX),
            images,
            ..Default::default()
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_endpoints_answer_that_this_node_is_in_no_swarm() {
        for path in ["/swarm", "/swarm/init", "/nodes", "/tasks/x", "/secrets"] {
            assert!(is_swarm(path), "{path}");
        }
        for path in ["/swarmy", "/containers/swarm", "/services", "/"] {
            assert!(!is_swarm(path), "{path}");
        }
        let response = not_in_swarm().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
