//! `/containers/{id}/archive`: `docker cp` in and out of a container,
//! running or stopped, as tars, with the path's stat in docker's header.

use std::time::{Duration, UNIX_EPOCH};

use super::RequestBody;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hull_proto::PathStat;
use hull_runtime::{Container, ContainerError};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::containers::Query;
use super::stream::channel_body;
use super::{full, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::stats::ContainerPathStat;

/// The header docker's clients read a path's stat from.
const PATH_STAT_HEADER: &str = "X-Docker-Container-Path-Stat";
/// Body chunks of an upload that may wait for the agent's credit.
const UPLOAD_BACKLOG: usize = 16;

/// `HEAD /containers/{id}/archive?path=…`.
pub(super) async fn stat(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (container, path) = target(daemon, reference, request)?;
    let runtime = super::containers::runtime(daemon).await?;
    let stat = daemon
        .containers()
        .stat_path(&runtime, &container, &path)
        .await
        .map_err(|e| copy_error(e, reference))?;
    let mut response = Response::new(full(Bytes::new()));
    response
        .headers_mut()
        .insert(PATH_STAT_HEADER, stat_header(&stat));
    Ok(response)
}

/// `GET /containers/{id}/archive?path=…`: a tar of the path.
pub(super) async fn get(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (container, path) = target(daemon, reference, request)?;
    let runtime = super::containers::runtime(daemon).await?;
    let (stat, mut archive) = daemon
        .containers()
        .read_archive(&runtime, &container, &path)
        .await
        .map_err(|e| copy_error(e, reference))?;
    let (tx, mut response) = channel_body(4);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    headers.insert(PATH_STAT_HEADER, stat_header(&stat));
    tokio::spawn(async move {
        while let Some(chunk) = archive.recv().await {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// `PUT /containers/{id}/archive?path=…`: unpacks the tar of the body into
/// the directory `path`. Existing entries are replaced by the archive's,
/// as docker's `noOverwriteDirNonDir` allows but for a directory and a
/// non-directory, which the agent refuses to swap.
pub(super) async fn put(
    daemon: &Daemon,
    reference: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (container, path) = target(daemon, reference, &request)?;
    let runtime = super::containers::runtime(daemon).await?;
    let (tx, rx) = mpsc::channel(UPLOAD_BACKLOG);
    let mut body = request.into_body();
    let upload = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let chunk = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => Ok(data),
                    Err(_trailers) => continue,
                },
                Err(err) => Err(std::io::Error::other(err)),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let written = daemon
        .containers()
        .write_archive(&runtime, &container, &path, rx)
        .await;
    upload.abort();
    written.map_err(|e| copy_error(e, reference))?;
    Ok(Response::new(full(Bytes::new())))
}

/// The container and the `path` query of an archive request.
fn target<B>(
    daemon: &Daemon,
    reference: &str,
    request: &Request<B>,
) -> Result<(std::sync::Arc<Container>, String), ApiError> {
    let container = daemon.containers().get(reference)?;
    let path = Query::of(request)
        .get("path")
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "path cannot be empty"))?;
    Ok((container, path))
}

/// Copy errors in docker's words, naming the container as the client did.
fn copy_error(error: ContainerError, reference: &str) -> ApiError {
    match error {
        ContainerError::PathNotFound { path, .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Could not find the file {path} in container {reference}"),
        ),
        ContainerError::CopyNotRunning(_) => ApiError::new(StatusCode::CONFLICT, error.to_string()),
        ContainerError::CopyRefused(_) | ContainerError::ArchiveBody { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, super::error_chain(&error))
        }
        other => other.into(),
    }
}

/// Docker's path-stat header: base64 (standard) of its JSON.
fn stat_header(stat: &PathStat) -> HeaderValue {
    let nanos = u64::try_from(stat.mtime_unix_nanos).unwrap_or(0);
    let body = ContainerPathStat {
        name: stat.name.clone(),
        size: stat.size,
        mode: stat.mode,
        mtime: humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos))
            .to_string(),
        link_target: stat.link_target.clone(),
    };
    let json = serde_json::to_vec(&body).expect("path stats serialize");
    let encoded = base64::engine::general_purpose::STANDARD.encode(json);
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stat_header_is_base64_json_with_dockers_names() {
        let stat = PathStat {
            name: "hostname".into(),
            size: 13,
            mode: 0o644,
            mtime_unix_nanos: 1_700_000_000_500_000_000,
            link_target: String::new(),
        };
        let header = stat_header(&stat);
        let json = base64::engine::general_purpose::STANDARD
            .decode(header.as_bytes())
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["name"], "hostname");
        assert_eq!(value["size"], 13);
        assert_eq!(value["mode"], 0o644);
        assert_eq!(value["mtime"], "2023-11-14T22:13:20.500000000Z");
        assert_eq!(value["linkTarget"], "");
    }

    #[test]
    fn a_missing_path_is_named_as_the_client_named_the_container() {
        let error = ContainerError::PathNotFound {
            path: "/nope".into(),
            container: "0123456789ab".repeat(5),
        };
        let api = copy_error(error, "web");
        assert_eq!(api.status, StatusCode::NOT_FOUND);
        assert_eq!(
            api.message,
            "Could not find the file /nope in container web"
        );
    }
}
