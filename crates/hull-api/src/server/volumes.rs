//! `/volumes`: named volumes (directories or sparse ext4 disks), in the Engine API's
//! shapes; and Hull's `/hull/volumes/…`: their snapshots, and volumes
//! restored from them.

use std::collections::BTreeMap;

use super::RequestBody;
use hull_runtime::volume::snapshot::{Snapshot, SnapshotError};
use hull_runtime::volume::{self, Volume, VolumeError};
use hull_runtime::ContainerError;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::containers::{no_content, parse_filters, read_json, Query};
use super::scope::Scope;
use super::tenancy::{admit_one, owned_snapshots, owned_volumes};
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

/// `/volumes…` and `/hull/volumes/…` for `scope`.
pub(super) async fn route(
    daemon: &Daemon,
    request: Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let path = super::strip_version(request.uri().path()).to_owned();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/volumes") => Ok(list(daemon, scope)),
        (&Method::POST, "/volumes/create") => create(daemon, request, scope).await,
        (&Method::POST, "/volumes/prune") => prune(daemon, &request, scope),
        (&Method::POST, "/hull/volumes/create") => create_from(daemon, request, scope).await,
        (&Method::GET, "/hull/volumes/snapshots") => Ok(snapshots(daemon, scope)),
        (_, p) if p.starts_with("/hull/volumes/snapshots/") => {
            let (name, _) = super::split_resource(p, "/hull/volumes/snapshots/");
            match method {
                Method::GET => inspect_snapshot(daemon, &name, scope),
                Method::DELETE => remove_snapshot(daemon, &name, scope),
                _ => Err(super::not_found(&method, p)),
            }
        }
        (&Method::POST, p) if p.starts_with("/hull/volumes/") && p.ends_with("/snapshot") => {
            let (volume, _) = super::split_resource(p, "/hull/volumes/");
            snapshot(daemon, &volume, request, scope).await
        }
        (_, p) if p.starts_with("/volumes/") => {
            let (name, _) = super::split_resource(p, "/volumes/");
            match method {
                Method::GET => inspect(daemon, &name, scope),
                Method::DELETE => remove(daemon, &name, scope),
                _ => Err(super::not_found(&method, p)),
            }
        }
        _ => Err(super::not_found(&method, &path)),
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

fn body(daemon: &Daemon, volume: &Volume, scope: Scope<'_>) -> VolumeBody {
    let users = daemon.containers().volume_users(&volume.record.name);
    // Hyper.sh's clients read a volume's size (GB) and its container from
    // its labels.
    let labels = match scope {
        Scope::Operator => BTreeMap::new(),
        Scope::Tenant(_) => BTreeMap::from([
            (
                "size".to_owned(),
                volume.record.size.div_ceil(1 << 30).to_string(),
            ),
            (
                "container".to_owned(),
                users.first().map(|c| c.id.clone()).unwrap_or_default(),
            ),
        ]),
    };
    let name = scope.unqualify(&volume.record.name).unwrap_or_default();
    // Where the disk lies on the host is the operator's to know.
    let mountpoint = match scope {
        Scope::Operator => volume.path.display().to_string(),
        Scope::Tenant(_) => String::new(),
    };
    VolumeBody {
        name: name.to_owned(),
        driver: "local",
        mountpoint,
        created_at: humantime::format_rfc3339_seconds(volume.record.created).to_string(),
        labels,
        scope: "local",
        options: match volume.kind() {
            volume::VolumeKind::Block => BTreeMap::from([
                ("type".to_owned(), "block".to_owned()),
                ("size".to_owned(), volume.record.size.to_string()),
            ]),
            volume::VolumeKind::Dir => BTreeMap::from([("type".to_owned(), "dir".to_owned())]),
        },
        usage_data: UsageData {
            size: i64::try_from(volume.used_bytes).unwrap_or(i64::MAX),
            ref_count: users.len() as i64,
        },
    }
}

/// `GET /volumes`: those of the scope.
pub(super) fn list(daemon: &Daemon, scope: Scope<'_>) -> Response<Body> {
    let volumes: Vec<VolumeBody> = owned_volumes(daemon, scope)
        .iter()
        .map(|v| body(daemon, v, scope))
        .collect();
    json_response(
        StatusCode::OK,
        &serde_json::json!({"Volumes": volumes, "Warnings": []}),
    )
}

/// For a tenant, its admission lock once one more `what` fits its quota.
async fn admit(
    daemon: &Daemon,
    scope: Scope<'_>,
    what: &str,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, ApiError> {
    let Scope::Tenant(tenant) = scope else {
        return Ok(None);
    };
    let guard = if what == "snapshots" {
        let used = || owned_snapshots(daemon, scope).len() as u64;
        admit_one(daemon, tenant, what, |q| q.snapshots, used).await?
    } else {
        let used = || owned_volumes(daemon, scope).len() as u64;
        admit_one(daemon, tenant, what, |q| q.volumes, used).await?
    };
    Ok(Some(guard))
}

/// `POST /volumes/create`.
pub(super) async fn create(
    daemon: &Daemon,
    request: Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let create: VolumeCreate = read_json(request).await?;
    // `hyper volume create` names Hyper.sh's own driver.
    if !matches!(create.driver.as_str(), "" | "local" | "hyper") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "volume driver {:?} is not supported: Hull's volumes are local",
                create.driver
            ),
        ));
    }
    let mut options = create.driver_opts;
    // Hyper.sh's driver sized volumes in whole GB: `size=10`.
    if create.driver == "hyper" {
        if let Some(size) = options.get_mut("size") {
            if !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) {
                size.push('g');
            }
        }
    }
    let mut options = volume::parse_options(options.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    // Hyper.sh's volumes were disks.
    if create.driver == "hyper" && options.kind.is_none() {
        options.kind = Some(volume::VolumeKind::Block);
    }
    let (name, anonymous) = if create.name.is_empty() {
        (hull_runtime::new_container_id(), true)
    } else {
        (create.name, false)
    };
    let name = scope.qualify(&name);
    let volumes = daemon.containers().volumes();
    // Creating an existing volume returns it, as docker's does: no quota.
    let _admitted = match volumes.get(&name) {
        Ok(_) => None,
        Err(_) => admit(daemon, scope, "volumes").await?,
    };
    let made = volumes.create(&name, options, anonymous)?;
    Ok(json_response(
        StatusCode::CREATED,
        &body(daemon, &made, scope),
    ))
}

/// `GET /volumes/{name}`.
pub(super) fn inspect(
    daemon: &Daemon,
    name: &str,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let volume = daemon.containers().volumes().get(&scope.qualify(name))?;
    Ok(json_response(StatusCode::OK, &body(daemon, &volume, scope)))
}

/// `DELETE /volumes/{name}`.
pub(super) fn remove(
    daemon: &Daemon,
    name: &str,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    daemon.containers().remove_volume(&scope.qualify(name))?;
    Ok(no_content())
}

/// `POST /volumes/prune`: unused anonymous volumes, or all unused ones
/// with the filter `all=true`.
pub(super) fn prune(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let filters = parse_filters(Query::of(request).get("filters"))?;
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|v| v == "true" || v == "1"));
    let containers = daemon.containers();
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for volume in owned_volumes(daemon, scope) {
        if !(all || volume.record.anonymous) {
            continue;
        }
        if containers.remove_volume(&volume.record.name).is_ok() {
            reclaimed += volume.used_bytes;
            let name = scope.unqualify(&volume.record.name).unwrap_or_default();
            deleted.push(name.to_owned());
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

fn snapshot_body(snapshot: &Snapshot, scope: Scope<'_>) -> SnapshotBody {
    let shown = |name: &str| scope.unqualify(name).unwrap_or_default().to_owned();
    SnapshotBody {
        name: shown(&snapshot.record.name),
        volume: shown(&snapshot.record.volume),
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
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let create: SnapshotCreate = read_json(request).await?;
    let _admitted = admit(daemon, scope, "snapshots").await?;
    let made = daemon
        .containers()
        .snapshot_volume(&scope.qualify(volume), &scope.qualify(&create.name))
        .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &snapshot_body(&made, scope),
    ))
}

/// `GET /hull/volumes/snapshots`.
pub(super) fn snapshots(daemon: &Daemon, scope: Scope<'_>) -> Response<Body> {
    let snapshots: Vec<SnapshotBody> = owned_snapshots(daemon, scope)
        .iter()
        .map(|s| snapshot_body(s, scope))
        .collect();
    json_response(StatusCode::OK, &snapshots)
}

/// `GET /hull/volumes/snapshots/{name}`.
pub(super) fn inspect_snapshot(
    daemon: &Daemon,
    name: &str,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let snapshot = daemon
        .containers()
        .volumes()
        .get_snapshot(&scope.qualify(name))?;
    Ok(json_response(
        StatusCode::OK,
        &snapshot_body(&snapshot, scope),
    ))
}

/// `DELETE /hull/volumes/snapshots/{name}`.
pub(super) fn remove_snapshot(
    daemon: &Daemon,
    name: &str,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    daemon
        .containers()
        .volumes()
        .remove_snapshot(&scope.qualify(name))?;
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
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let create: RestoreCreate = read_json(request).await?;
    if create.name.is_empty() || create.from.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a restored volume needs a Name and the snapshot it comes From",
        ));
    }
    let _admitted = admit(daemon, scope, "volumes").await?;
    let volumes = daemon.containers().volumes();
    let made = volumes.create_from(&scope.qualify(&create.name), &scope.qualify(&create.from))?;
    Ok(json_response(
        StatusCode::CREATED,
        &body(daemon, &made, scope),
    ))
}
