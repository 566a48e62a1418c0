//! `/hull/templates` and `/hull/pool`: what fast starts are made of.

use hyper::{Response, StatusCode};

use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{PoolStatus, TemplateSummary};
use crate::units::unix_seconds;

/// `GET /hull/templates`: the ready templates, one per size at most.
/// Asking boots nothing.
pub(super) fn list(daemon: &Daemon) -> Response<Body> {
    let templates: Vec<TemplateSummary> = daemon
        .started_runtime()
        .map(|runtime| runtime.templates_by_size())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(size, templates)| {
            let info = templates.describe()?;
            Some(TemplateSummary {
                key: info.key,
                dir: info.dir.display().to_string(),
                vcpus: size.vcpus,
                memory_mib: size.memory_mib,
                memory_bytes: info.memory_bytes,
                state_bytes: info.state_bytes,
                built: info.built.map(unix_seconds),
            })
        })
        .collect();
    json_response(StatusCode::OK, &templates)
}

/// `DELETE /hull/templates/{key}`: a key prefix will do.
pub(super) fn remove(daemon: &Daemon, key: &str) -> Result<Response<Body>, ApiError> {
    let removed = daemon.started_runtime().is_some_and(|runtime| {
        runtime
            .templates_by_size()
            .iter()
            .any(|(_, templates)| templates.remove(key))
    });
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such VM template: {key}"),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "Deleted": key }),
    ))
}

/// `GET /hull/pool`: each size's pool.
pub(super) fn pool(daemon: &Daemon) -> Response<Body> {
    let pools: Vec<PoolStatus> = daemon
        .started_runtime()
        .map(|runtime| runtime.pool_status())
        .unwrap_or_default()
        .into_iter()
        .map(|pool| PoolStatus {
            size: pool.size.name().map(str::to_owned),
            vcpus: pool.size.vcpus,
            memory_mib: pool.size.memory_mib,
            target: pool.target,
            ready: pool.ready,
            primed: pool.primed,
        })
        .collect();
    json_response(StatusCode::OK, &pools)
}
