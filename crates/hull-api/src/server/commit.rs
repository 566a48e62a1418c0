//! `POST /commit` (`docker commit`) and `GET /containers/{id}/export`
//! (`docker export`): a container's files as a new image, or as a tar.
//!
//! Both read the container's filesystem through its agent (see
//! `hull_runtime::container::filesystem`); a stopped container is read in
//! a VM started for it. A running container keeps running meanwhile: Hull
//! cannot pause a guest's processes, so `pause` is taken and ignored, and
//! what a process writes during the read may or may not be in it.

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use hull_image::{ImageConfig, NewImage};
use hull_runtime::container::{ContainerConfig, FilesystemView};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::containers::{runtime, Query};
use super::new_image::{self, apply_changes, target};
use super::scope::{self, Scope, OWNER_LABEL};
use super::stream::channel_body;
use super::{blocking, json_response, ApiError, Body, RequestBody, SIZE_LABEL};
use crate::daemon::Daemon;
use crate::types::container::IdResponse;

/// The largest container config a commit's body may carry.
const MAX_COMMIT_BODY: usize = 1 << 20;
/// Labels Hull sets on a tenant's containers itself, which its images do
/// not carry on.
const HULL_LABELS: [&str; 2] = [OWNER_LABEL, SIZE_LABEL];

/// The container config a commit's body may give, overriding the
/// container's own (docker's `ContainerConfig`, the fields an image keeps).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CommitBody {
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    labels: Option<BTreeMap<String, String>>,
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    stop_signal: Option<String>,
}

/// `GET /containers/{id}/export`: a tar of the whole filesystem.
pub(super) async fn export(daemon: &Daemon, reference: &str) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    let runtime = runtime(daemon).await?;
    let mut tar = daemon
        .containers()
        .read_filesystem(&runtime, &container, FilesystemView::Whole)
        .await?;
    let (tx, mut response) = channel_body(4);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    tokio::spawn(async move {
        while let Some(chunk) = tar.recv().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// `POST /commit?container=…&repo=…&tag=…&comment=…&author=…&changes=…`.
pub(super) async fn commit(
    daemon: &Daemon,
    scope: Scope<'_>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(&request);
    let reference = query
        .get("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "container is required"))?
        .to_owned();
    let target = target(query.get("repo"), query.get("tag"))?;
    let changes = new_image::query_all(&request, "changes");
    let body = read_body(request.into_body()).await?;
    let id = scope::container_id(daemon, scope, &reference)?;
    let container = daemon.containers().get(&id)?;
    let settings = container.config();
    let images = daemon.images().clone();
    let image_id = settings.image_id.clone();
    let parent = blocking(move || images.resolve(&image_id)).await?;
    let mut config = image_config(&parent.config, &settings, body);
    apply_changes(&mut config, &changes)?;
    new_image::check_room(daemon, scope, target.as_deref())?;

    let runtime = runtime(daemon).await?;
    let mut tar = daemon
        .containers()
        .read_filesystem(&runtime, &container, FilesystemView::Changes)
        .await?;
    let staging = new_image::staging(daemon, "commit-").await?;
    let layer = staging.path().join("layer.tar");
    let budget = daemon.images().upload_budget(staging.path());
    let mut file = tokio::fs::File::create(&layer)
        .await
        .map_err(|e| internal("cannot stage the layer", e))?;
    let mut written = 0u64;
    while let Some(chunk) = tar.recv().await {
        written += chunk.len() as u64;
        if written > budget {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("container {reference}'s changes pass the {budget} bytes an image may hold here (hulld --max-image-size, or the free disk)"),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| internal("cannot stage the layer", e))?;
    }
    file.flush()
        .await
        .map_err(|e| internal("cannot stage the layer", e))?;
    drop(file);

    let new = NewImage {
        config,
        created: new_image::now(),
        created_by: command_line(&settings),
        comment: query.get("comment").unwrap_or_default().to_owned(),
        author: query.get("author").unwrap_or_default().to_owned(),
        container: Some((container.id.clone(), container_config(&settings))),
    };
    let images = daemon.images().clone();
    let created = tokio::task::spawn_blocking(move || {
        let made = images.create_image(Some(&parent), &layer, &new);
        drop(staging);
        made
    })
    .await
    .map_err(|_| {
        internal(
            "the commit failed",
            std::io::Error::other("a task panicked"),
        )
    })?;
    let what = format!("cannot commit container {reference}");
    let id = created
        .map_err(|e| new_image::layer_error(&what, e))?
        .to_string();
    new_image::keep(daemon, scope, &id, target).await?;
    tracing::info!(container = %container.id, image = %id, "committed");
    Ok(json_response(StatusCode::CREATED, &IdResponse { id }))
}

/// The body: empty, `null`, or a container config of at most 1 MiB.
async fn read_body(mut body: RequestBody) -> Result<Option<CommitBody>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request failed: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_COMMIT_BODY {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a commit's body is at most {MAX_COMMIT_BODY} bytes"),
                ));
            }
            bytes.extend_from_slice(&data);
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) || bytes.trim_ascii() == b"null" {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")))
}

/// The new image's config as docker makes it: the image's, with the
/// container's command, environment, directory, user, ports and labels,
/// then what the body overrides.
fn image_config(
    image: &ImageConfig,
    container: &ContainerConfig,
    body: Option<CommitBody>,
) -> ImageConfig {
    let mut config = image.clone();
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    config.cmd = some(&container.cmd);
    config.entrypoint = some(&container.entrypoint);
    config.env = container.process.env.clone();
    let cwd = &container.process.cwd;
    if cwd != "/" || config.working_dir.is_some() {
        config.working_dir = Some(cwd.clone());
    }
    if !container.process.user.is_empty() {
        config.user = Some(container.process.user.clone());
    }
    if !container.ports.is_empty() {
        let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
        for port in &container.ports {
            ports.insert(port.key(), serde_json::json!({}));
        }
    }
    let mut labels = config.labels.take().unwrap_or_default();
    labels.extend(container.labels.clone());
    for label in HULL_LABELS {
        labels.remove(label);
    }
    config.labels = (!labels.is_empty()).then_some(labels);
    if container.stop_signal.is_some() {
        config.stop_signal.clone_from(&container.stop_signal);
    }
    let Some(body) = body else {
        return config;
    };
    let CommitBody {
        cmd,
        entrypoint,
        env,
        working_dir,
        user,
        exposed_ports,
        labels,
        volumes,
        stop_signal,
    } = body;
    config.cmd = cmd.or(config.cmd);
    config.entrypoint = entrypoint.or(config.entrypoint);
    config.env = env.unwrap_or(config.env);
    config.working_dir = working_dir.or(config.working_dir);
    config.user = user.or(config.user);
    config.exposed_ports = exposed_ports.or(config.exposed_ports);
    config.labels = labels.or(config.labels);
    config.volumes = volumes.or(config.volumes);
    config.stop_signal = stop_signal.or(config.stop_signal);
    config
}

/// The container's config as docker records it in a commit's image.
fn container_config(container: &ContainerConfig) -> serde_json::Value {
    let process = &container.process;
    serde_json::json!({
        "Hostname": container.hostname,
        "User": process.user,
        "Env": process.env,
        "Cmd": container.cmd,
        "Entrypoint": (!container.entrypoint.is_empty()).then_some(&container.entrypoint),
        "Image": container.image,
        "WorkingDir": if process.cwd == "/" { "" } else { process.cwd.as_str() },
        "Labels": container.labels,
    })
}

/// The container's command as docker's history shows a commit's step.
fn command_line(container: &ContainerConfig) -> String {
    container.process.args.join(" ")
}

fn internal(what: &str, err: std::io::Error) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
