//! `/images/...`: list and load.

use futures_util::TryStreamExt;
use http_body_util::BodyStream;
use hull_image::StoreError;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::io::AsyncWriteExt;

use super::{blocking, full, json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{ImageSummary, ProgressLine};

pub(super) async fn list(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
    let images = daemon.images().clone();
    let summaries = blocking(move || images.list()).await?;
    let body: Vec<ImageSummary> = summaries
        .into_iter()
        .map(|image| ImageSummary {
            id: image.id,
            parent_id: String::new(),
            repo_tags: image
                .repo_tags
                .iter()
                .map(|tag| hull_image::reference::familiar(tag))
                .collect(),
            repo_digests: Vec::new(),
            created: image.created_unix.unwrap_or(0),
            size: i64::try_from(image.size).unwrap_or(i64::MAX),
            shared_size: -1,
            labels: Default::default(),
            containers: -1,
        })
        .collect();
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /images/load`: the body is a docker-archive or OCI-layout tar.
pub(super) async fn load(
    daemon: &Daemon,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let internal = |what: &str, err: std::io::Error| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {err}"))
    };
    let spool_dir = daemon.root().join("tmp");
    std::fs::create_dir_all(&spool_dir).map_err(|e| internal("cannot create a spool", e))?;
    let spool = tempfile::NamedTempFile::new_in(&spool_dir)
        .map_err(|e| internal("cannot create a spool", e))?;
    let mut file = tokio::fs::File::from_std(
        spool
            .reopen()
            .map_err(|e| internal("cannot open the spool", e))?,
    );
    let mut body = BodyStream::new(request.into_body());
    while let Some(frame) = body.try_next().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the upload failed: {e}"),
        )
    })? {
        if let Ok(data) = frame.into_data() {
            file.write_all(&data)
                .await
                .map_err(|e| internal("cannot spool the upload", e))?;
        }
    }
    file.flush()
        .await
        .map_err(|e| internal("cannot spool the upload", e))?;
    drop(file);

    let images = daemon.images().clone();
    let lines = blocking(move || {
        let archive = std::fs::File::open(spool.path()).map_err(|source| StoreError::Read {
            path: spool.path().to_owned(),
            source,
        })?;
        let mut lines = Vec::new();
        images.load(std::io::BufReader::new(archive), &mut |message| {
            lines.push(message.to_string())
        })?;
        Ok(lines)
    })
    .await?;
    let mut body = Vec::new();
    for line in lines {
        let progress = ProgressLine {
            stream: Some(format!("{line}\n")),
            ..Default::default()
        };
        serde_json::to_writer(&mut body, &progress).expect("progress serializes");
        body.push(b'\n');
    }
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
