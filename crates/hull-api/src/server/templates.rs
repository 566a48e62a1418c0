//! `/hull/templates` and `/hull/pool`: what fast starts are made of.

use hyper::{Response, StatusCode};

use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{PoolStatus, TemplateSummary};
use crate::units::unix_seconds;

/// `GET /hull/templates`: the ready template, if any. Asking boots nothing.
pub(super) fn list(daemon: &Daemon) -> Response<Body> {
    let (vcpus, memory_mib) = daemon.vm_size();
    let templates: Vec<TemplateSummary> = daemon
        .started_runtime()
        .and_then(|runtime| runtime.templates().and_then(|t| t.describe()))
        .map(|info| TemplateSummary {
            key: info.key,
            dir: info.dir.display().to_string(),
            vcpus,
            memory_mib,
            memory_bytes: info.memory_bytes,
            state_bytes: info.state_bytes,
            built: info.built.map(unix_seconds),
        })
        .into_iter()
        .collect();
    json_response(StatusCode::OK, &templates)
}

/// `DELETE /hull/templates/{key}`: a key prefix will do.
pub(super) fn remove(daemon: &Daemon, key: &str) -> Result<Response<Body>, ApiError> {
    let removed = daemon
        .started_runtime()
        .and_then(|runtime| runtime.templates().map(|t| t.remove(key)))
        .unwrap_or(false);
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

/// `GET /hull/pool`.
pub(super) fn pool(daemon: &Daemon) -> Response<Body> {
    let (target, ready) = daemon
        .started_runtime()
        .and_then(|runtime| runtime.pool_status())
        .unwrap_or((0, 0));
    json_response(StatusCode::OK, &PoolStatus { target, ready })
}
