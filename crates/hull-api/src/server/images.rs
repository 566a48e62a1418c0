//! `/images/...`: list, load, inspect, tag, remove and prune.

use super::RequestBody;
use futures_util::TryStreamExt;
use http_body_util::BodyStream;
use hull_image::StoreError;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use super::{blocking, full, json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{
    ImageDeleteItem, ImageInspect, ImagePruneReport, ImageSummary, InspectRootFs, ProgressLine,
};
use hull_image::reference::familiar;
use hull_image::{PruneFilter, Removal};

pub(super) async fn list(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, &summaries(daemon).await?))
}

/// Every image as `GET /images/json` lists it.
pub(super) async fn summaries(daemon: &Daemon) -> Result<Vec<ImageSummary>, ApiError> {
    let images = daemon.images().clone();
    let summaries = blocking(move || images.list()).await?;
    Ok(summaries
        .into_iter()
        .map(|image| {
            let tags = image.repo_tags.iter().map(|t| familiar(t)).collect();
            let digests = image.repo_digests.iter().map(|d| familiar(d)).collect();
            summary(image, tags, digests)
        })
        .collect())
}

/// A line of `GET /images/json` for `image` under these (familiar) names.
pub(super) fn summary(
    image: hull_image::ImageSummary,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
) -> ImageSummary {
    ImageSummary {
        id: image.id,
        parent_id: String::new(),
        repo_tags,
        repo_digests,
        created: image.created_unix.unwrap_or(0),
        size: i64::try_from(image.size).unwrap_or(i64::MAX),
        shared_size: -1,
        labels: Default::default(),
        containers: -1,
        rootfs_ready: Some(image.rootfs_ready),
    }
}

/// The image name of `/images/{name}{suffix}`, percent-decoded.
pub(super) fn name_in(path: &str, suffix: &str) -> Result<String, ApiError> {
    let name = path
        .strip_prefix("/images/")
        .and_then(|p| p.strip_suffix(suffix))
        .unwrap_or("");
    let decoded = form_urlencoded::parse(format!("n={name}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if decoded.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no image name given",
        ));
    }
    Ok(decoded)
}

/// The value of `key` in a query string.
/// The `repo[:tag]` a `POST /images/{name}/tag` names.
pub(super) fn tag_target(request: &Request<RequestBody>) -> Result<String, ApiError> {
    let repo = query_value(request, "repo").unwrap_or_default();
    if repo.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "repository name must have at least one component",
        ));
    }
    Ok(
        match query_value(request, "tag").filter(|t| !t.is_empty()) {
            Some(tag) => format!("{repo}:{tag}"),
            None => repo,
        },
    )
}

pub(super) fn query_value(request: &Request<RequestBody>, key: &str) -> Option<String> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub(super) fn is_true(value: Option<String>) -> bool {
    matches!(value.as_deref(), Some("1" | "true" | "True"))
}

/// `GET /images/{name}/json`.
pub(super) async fn inspect(daemon: &Daemon, path: &str) -> Result<Response<Body>, ApiError> {
    let name = name_in(path, "/json")?;
    let images = daemon.images().clone();
    let image = blocking(move || images.resolve(&name)).await?;
    let tags = image.repo_tags.iter().map(|t| familiar(t)).collect();
    let digests = image.repo_digests.iter().map(|d| familiar(d)).collect();
    Ok(json_response(
        StatusCode::OK,
        &inspect_body(image, tags, digests),
    ))
}

/// What `GET /images/{name}/json` answers for `image` under these (familiar) names.
pub(super) fn inspect_body(
    image: hull_image::Image,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
) -> ImageInspect {
    ImageInspect {
        id: image.id,
        repo_tags,
        repo_digests,
        parent: image
            .record
            .parent
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        comment: image.comment.unwrap_or_default(),
        container: image.container.unwrap_or_default(),
        container_config: image.container_config,
        created: image.created.unwrap_or_default(),
        docker_version: String::new(),
        author: image.author.unwrap_or_default(),
        config: image.config,
        architecture: image.architecture,
        variant: None,
        os: image.os,
        size: i64::try_from(image.size).unwrap_or(i64::MAX),
        root_fs: InspectRootFs {
            kind: "layers".into(),
            layers: image
                .record
                .layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect(),
        },
    }
}

/// `POST /images/{name}/tag?repo=…&tag=…`.
pub(super) async fn tag(
    daemon: &Daemon,
    path: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let name = name_in(path, "/tag")?;
    let target = tag_target(request)?;
    let images = daemon.images().clone();
    blocking(move || images.tag(&name, &target)).await?;
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// `DELETE /images/{name}?force=…`.
pub(super) async fn remove(
    daemon: &Daemon,
    path: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let name = name_in(path, "")?;
    let force = is_true(query_value(request, "force"));
    let images = daemon.images().clone();
    let in_use = daemon.used_image_ids();
    let removals = blocking(move || images.remove(&name, force, &in_use)).await?;
    let body: Vec<ImageDeleteItem> = removals.into_iter().map(delete_item).collect();
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /images/prune?filters=…`: docker's `dangling` (`false` is `prune -a`),
/// `until`, `label` and `label!`.
pub(super) async fn prune(
    daemon: &Daemon,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let filters = super::containers::parse_filters(query_value(request, "filters").as_deref())?;
    let filter = PruneFilter::from_docker(&filters, std::time::SystemTime::now())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let images = daemon.images().clone();
    let in_use = daemon.used_image_ids();
    let pruned = blocking(move || images.prune(&filter, &in_use)).await?;
    let deleted: Vec<ImageDeleteItem> = pruned.removals.into_iter().map(delete_item).collect();
    Ok(json_response(
        StatusCode::OK,
        &ImagePruneReport {
            images_deleted: (!deleted.is_empty()).then_some(deleted),
            space_reclaimed: pruned.space_reclaimed,
        },
    ))
}

pub(super) fn delete_item(removal: Removal) -> ImageDeleteItem {
    match removal {
        Removal::Untagged(tag) => ImageDeleteItem {
            untagged: Some(tag),
            ..Default::default()
        },
        Removal::Deleted(id) => ImageDeleteItem {
            deleted: Some(id),
            ..Default::default()
        },
    }
}

/// Spools an uploaded archive to a file under the state directory, up to
/// what the host takes; a body that breaks off (or, from a tenant, does not
/// match its signed hash) is an error, and nothing is kept.
pub(super) async fn spool_upload(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<tempfile::NamedTempFile, ApiError> {
    let spool_dir = daemon.root().join("tmp");
    std::fs::create_dir_all(&spool_dir).map_err(|e| internal("cannot create a spool", e))?;
    let budget = daemon.images().upload_budget(&spool_dir);
    let spool = tempfile::NamedTempFile::new_in(&spool_dir)
        .map_err(|e| internal("cannot create a spool", e))?;
    spool_body(request.into_body(), spool.path(), budget).await?;
    Ok(spool)
}

fn internal(what: &str, err: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
}

/// Reads and drops what is left of a refused request's body, up to 1 MiB
/// and 2 s: a client still sending a small upload then reads the refusal,
/// where a close on unread bytes would reset the connection under it.
pub(super) async fn drain(body: RequestBody) {
    drain_rest(&mut BodyStream::new(body), 1 << 20, Duration::from_secs(2)).await;
}

/// Reads and drops the rest of `body`, at most `max_bytes` of it and for at
/// most `max_time`, so that the refusal sent next reaches a client still
/// writing; a client that sends more than that sees the connection close.
async fn drain_rest(body: &mut BodyStream<RequestBody>, max_bytes: u64, max_time: Duration) {
    let reading = async {
        let mut drained = 0u64;
        while let Ok(Some(frame)) = body.try_next().await {
            drained += frame.into_data().map_or(0, |d| d.len() as u64);
            if drained > max_bytes {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(max_time, reading).await;
}

/// Writes `body` to the file `path`, at most `budget` bytes of it.
pub(super) async fn spool_body(
    body: RequestBody,
    path: &std::path::Path,
    budget: u64,
) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| internal("cannot open the spool", e))?;
    let mut spooled = 0u64;
    let mut body = BodyStream::new(body);
    while let Some(frame) = body.try_next().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the upload failed: {e}"),
        )
    })? {
        if let Ok(data) = frame.into_data() {
            spooled += data.len() as u64;
            if spooled > budget {
                // The local CLI sends an archive past the cap in well under
                // these bounds, and then reads why it was refused.
                drain_rest(&mut body, 256 << 20, Duration::from_secs(5)).await;
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the archive is refused: it is larger than the {budget} bytes this host takes \
                         (the image size cap, hulld --max-image-size, or the free disk of {}): \
                         nothing was loaded",
                        path.parent().unwrap_or(path).display()
                    ),
                ));
            }
            file.write_all(&data)
                .await
                .map_err(|e| internal("cannot spool the upload", e))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| internal("cannot spool the upload", e))
}

/// `POST /images/load`: the body is a docker-archive or OCI-layout tar.
pub(super) async fn load(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let spool = spool_upload(daemon, request).await?;
    let images = daemon.images().clone();
    let (lines, loaded) = blocking(move || {
        let archive = std::fs::File::open(spool.path()).map_err(|source| StoreError::Read {
            path: spool.path().to_owned(),
            source,
        })?;
        let mut lines = Vec::new();
        let loaded = images.load(std::io::BufReader::new(archive), &mut |message| {
            lines.push(message.to_string())
        })?;
        Ok((lines, loaded))
    })
    .await?;
    super::prebuild_rootfs(
        daemon.images().clone(),
        loaded.into_iter().map(|image| image.id).collect(),
    );
    Ok(stream_lines(lines))
}

/// Docker's JSON stream of `{"stream": line}` messages, as `load` answers:
/// chunked, a message a chunk, as docker sends it (docker-py decodes a
/// body of known length as one JSON document).
pub(super) fn stream_lines(lines: Vec<String>) -> Response<Body> {
    use http_body_util::BodyExt;
    let frames = lines.into_iter().map(|line| {
        let progress = ProgressLine {
            stream: Some(format!("{line}\n")),
            ..Default::default()
        };
        let mut message = serde_json::to_vec(&progress).expect("progress serializes");
        message.push(b'\n');
        Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from(message)))
    });
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /images/{name}/history`: newest step first, as docker lists it.
pub(super) async fn history(daemon: &Daemon, path: &str) -> Result<Response<Body>, ApiError> {
    let name = name_in(path, "/history")?;
    history_of(daemon, name, None).await
}

/// The history of the image `name` resolves to in the store; its newest
/// step shows `tags` (familiar), or the store's own tags when `None`.
pub(super) async fn history_of(
    daemon: &Daemon,
    name: String,
    tags: Option<Vec<String>>,
) -> Result<Response<Body>, ApiError> {
    let images = daemon.images().clone();
    let (image, steps) = blocking(move || {
        let image = images.resolve(&name)?;
        let steps = images.history(&image)?;
        Ok((image, steps))
    })
    .await?;
    let tags = tags.unwrap_or_else(|| image.repo_tags.iter().map(|t| familiar(t)).collect());
    let body: Vec<crate::types::HistoryItem> = steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| crate::types::HistoryItem {
            // Only the newest step is an image of its own, as in docker.
            id: if i == 0 {
                image.id.clone()
            } else {
                "<missing>".to_owned()
            },
            created: step
                .created
                .as_deref()
                .and_then(hull_image::spec::parse_rfc3339)
                .unwrap_or(0),
            created_by: step.created_by,
            tags: (i == 0).then(|| tags.clone()),
            size: i64::try_from(step.size).unwrap_or(i64::MAX),
            comment: step.comment,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &body))
}
