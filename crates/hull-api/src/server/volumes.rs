//! `/volumes`: named volumes (sparse ext4 disks), in the Engine API's shapes.

use std::collections::BTreeMap;

use hull_runtime::volume::{self, Volume, VolumeError};
use hull_runtime::ContainerError;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::containers::{no_content, parse_filters, read_json, Query};
use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;

impl From<VolumeError> for ApiError {
    fn from(error: VolumeError) -> Self {
        ContainerError::Volume(error).into()
    }
}

/// `POST /volumes/create`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeCreate {
    name: String,
    driver: String,
    driver_opts: BTreeMap<String, String>,
}

/// A volume as the Engine API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeBody {
    name: String,
    driver: &'static str,
    mountpoint: String,
    created_at: String,
    labels: BTreeMap<String, String>,
    scope: &'static str,
    options: BTreeMap<String, String>,
    usage_data: UsageData,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UsageData {
    size: i64,
    ref_count: i64,
}

fn body(daemon: &Daemon, volume: &Volume) -> VolumeBody {
    let users = daemon.containers().volume_users(&volume.record.name).len();
    VolumeBody {
        name: volume.record.name.clone(),
        driver: "local",
        mountpoint: volume.disk.display().to_string(),
        created_at: humantime::format_rfc3339_seconds(volume.record.created).to_string(),
        labels: BTreeMap::new(),
        scope: "local",
        options: BTreeMap::from([("size".to_owned(), volume.record.size.to_string())]),
        usage_data: UsageData {
            size: i64::try_from(volume.used_bytes).unwrap_or(i64::MAX),
            ref_count: users as i64,
        },
    }
}

/// `GET /volumes`.
pub(super) fn list(daemon: &Daemon) -> Response<Body> {
    let volumes: Vec<VolumeBody> = daemon
        .containers()
        .volumes()
        .list()
        .iter()
        .map(|v| body(daemon, v))
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({"Volumes": volumes, "Warnings": []}),
    )
}

/// `POST /volumes/create`.
pub(super) async fn create(
    daemon: &Daemon,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let create: VolumeCreate = read_json(request).await?;
    if !matches!(create.driver.as_str(), "" | "local") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "volume driver {:?} is not supported: Hull's volumes are local",
                create.driver
            ),
        ));
    }
    let size = volume::parse_options(
        create
            .driver_opts
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    let (name, anonymous) = if create.name.is_empty() {
        (hull_runtime::new_container_id(), true)
    } else {
        (create.name, false)
    };
    let volumes = daemon.containers().volumes();
    let made = volumes.create(&name, size, anonymous)?;
    Ok(json_response(StatusCode::CREATED, &body(daemon, &made)))
}

/// `GET /volumes/{name}`.
pub(super) fn inspect(daemon: &Daemon, name: &str) -> Result<Response<Body>, ApiError> {
    let volume = daemon.containers().volumes().get(name)?;
    Ok(json_response(StatusCode::OK, &body(daemon, &volume)))
}

/// `DELETE /volumes/{name}`.
pub(super) fn remove(daemon: &Daemon, name: &str) -> Result<Response<Body>, ApiError> {
    daemon.containers().remove_volume(name)?;
    Ok(no_content())
}

/// `POST /volumes/prune`: unused anonymous volumes, or all unused ones
/// with the filter `all=true`.
pub(super) fn prune(
    daemon: &Daemon,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let filters = parse_filters(Query::of(request).get("filters"))?;
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|v| v == "true" || v == "1"));
    let containers = daemon.containers();
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for volume in containers.volumes().list() {
        if !(all || volume.record.anonymous) {
            continue;
        }
        if containers.remove_volume(&volume.record.name).is_ok() {
            reclaimed += volume.used_bytes;
            deleted.push(volume.record.name);
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}
