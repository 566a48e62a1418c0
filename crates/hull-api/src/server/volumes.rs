//! `/volumes`: named volumes (sparse ext4 disks), in the Engine API's
//! shapes; and Hull's `/hull/volumes/…`: their snapshots, and volumes
//! restored from them.

use std::collections::BTreeMap;

use super::RequestBody;
use hull_runtime::volume::snapshot::{Snapshot, SnapshotError};
use hull_runtime::volume::{self, Volume, VolumeError};
use hull_runtime::ContainerError;
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

impl From<SnapshotError> for ApiError {
    fn from(error: SnapshotError) -> Self {
        ContainerError::Snapshot(error).into()
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
    request: Request<RequestBody>,
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
    request: &Request<RequestBody>,
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

/// A snapshot as `/hull/volumes/snapshots` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotBody {
    name: String,
    volume: String,
    created_at: String,
    size: u64,
    /// Bytes its disk takes on the host.
    used: u64,
    /// `reflink` (sharing the volume's blocks) or `copy`.
    method: hull_runtime::volume::snapshot::CopyMethod,
}

fn snapshot_body(snapshot: &Snapshot) -> SnapshotBody {
    SnapshotBody {
        name: snapshot.record.name.clone(),
        volume: snapshot.record.volume.clone(),
        created_at: humantime::format_rfc3339_seconds(snapshot.record.created).to_string(),
        size: snapshot.record.size,
        used: snapshot.used_bytes,
        method: snapshot.record.method,
    }
}

/// `POST /hull/volumes/{name}/snapshot`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct SnapshotCreate {
    name: String,
}

/// `POST /hull/volumes/{name}/snapshot`: a copy of the volume's disk (its
/// filesystem frozen meanwhile if a running container has it).
pub(super) async fn snapshot(
    daemon: &Daemon,
    volume: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let create: SnapshotCreate = read_json(request).await?;
    let made = daemon
        .containers()
        .snapshot_volume(volume, &create.name)
        .await?;
    Ok(json_response(StatusCode::CREATED, &snapshot_body(&made)))
}

/// `GET /hull/volumes/snapshots`.
pub(super) fn snapshots(daemon: &Daemon) -> Response<Body> {
    let snapshots: Vec<SnapshotBody> = daemon
        .containers()
        .volumes()
        .snapshots()
        .iter()
        .map(snapshot_body)
        .collect();
    json_response(StatusCode::OK, &snapshots)
}

/// `GET /hull/volumes/snapshots/{name}`.
pub(super) fn inspect_snapshot(daemon: &Daemon, name: &str) -> Result<Response<Body>, ApiError> {
    let snapshot = daemon.containers().volumes().get_snapshot(name)?;
    Ok(json_response(StatusCode::OK, &snapshot_body(&snapshot)))
}

/// `DELETE /hull/volumes/snapshots/{name}`.
pub(super) fn remove_snapshot(daemon: &Daemon, name: &str) -> Result<Response<Body>, ApiError> {
    daemon.containers().volumes().remove_snapshot(name)?;
    Ok(no_content())
}

/// `POST /hull/volumes/create`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestoreCreate {
    name: String,
    /// The snapshot the new volume starts from.
    from: String,
}

/// `POST /hull/volumes/create`: a new volume holding a snapshot's data.
pub(super) async fn create_from(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let create: RestoreCreate = read_json(request).await?;
    if create.name.is_empty() || create.from.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a restored volume needs a Name and the snapshot it comes From",
        ));
    }
    let volumes = daemon.containers().volumes();
    let made = volumes.create_from(&create.name, &create.from)?;
    Ok(json_response(StatusCode::CREATED, &body(daemon, &made)))
}
