//! `POST /images/create?fromImage=…&tag=…`: pulling from a registry, answered
//! with docker's JSON progress stream while the pull runs.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hull_image::registry::{self, Credentials, PullEvent};
use hull_image::Reference;
use hyper::body::Frame;

use super::RequestBody;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{error_chain, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{ErrorBody, ProgressDetail, ProgressLine};

/// Docker's header carrying base64url JSON credentials.
pub(crate) const REGISTRY_AUTH: &str = "x-registry-auth";

/// What `fromImage`, `tag` (a tag or a digest) and Hull's `insecure` ask for.
pub(super) fn parse_query(query: &str) -> Result<(Reference, bool), ApiError> {
    let mut from = None;
    let mut tag = None;
    let mut insecure = false;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "fromImage" => from = Some(value.into_owned()),
            "tag" if !value.is_empty() => tag = Some(value.into_owned()),
            "insecure" => insecure = matches!(&*value, "1" | "true"),
            _ => {}
        }
    }
    let from = from
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "fromImage is required to pull"))?;
    let name = match tag {
        Some(tag) if tag.contains(':') => format!("{from}@{tag}"),
        Some(tag) => format!("{from}:{tag}"),
        None => from,
    };
    let reference = Reference::parse(&name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok((reference, insecure))
}

pub(super) fn line(progress: &ProgressLine) -> Bytes {
    let mut bytes = serde_json::to_vec(progress).expect("progress serializes");
    bytes.push(b'\n');
    bytes.into()
}

fn event_line(event: PullEvent) -> Bytes {
    line(&ProgressLine {
        status: Some(event.status),
        id: event.id,
        progress_detail: event.progress.map(|(current, total)| ProgressDetail {
            current: Some(current),
            total: Some(total),
        }),
        ..Default::default()
    })
}

pub(super) async fn create(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (reference, insecure) = parse_query(request.uri().query().unwrap_or(""))?;
    transfer(daemon, &request, reference, insecure, Direction::Pull)
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Direction {
    Pull,
    Push,
}

/// Runs a pull or push in the background and answers with its progress,
/// streamed as it happens.
pub(super) fn transfer(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    reference: Reference,
    insecure: bool,
    direction: Direction,
) -> Result<Response<Body>, ApiError> {
    let credentials = credentials(daemon, request, &reference)?;
    let client = if insecure {
        daemon.registry().with_insecure(reference.domain())
    } else {
        daemon.registry().clone()
    };
    let store = daemon.images().clone();
    let metrics = daemon.metrics().clone();
    let (progress, response) = progress_response();
    tokio::spawn(async move {
        let events = |event: PullEvent| progress.event(event);
        let result = match direction {
            Direction::Pull => registry::pull(&store, &client, &reference, credentials, &events)
                .await
                .map(|pulled| super::prebuild_rootfs(store.clone(), vec![pulled.id.to_string()]))
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            Direction::Push => registry::push(&store, &client, &reference, credentials, &events)
                .await
                .map(drop)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
        };
        if let Direction::Pull = direction {
            metrics.pull(result.is_ok());
        }
        if let Err(err) = result {
            let message = error_chain(err.as_ref());
            tracing::warn!(reference = %reference, ?direction, error = %message, "transfer failed");
            progress.error(err.as_ref());
        }
    });
    Ok(response)
}

/// The credentials of a pull or push: docker's `X-Registry-Auth` header, else
/// those hulld keeps for the registry.
pub(super) fn credentials(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    reference: &Reference,
) -> Result<Option<Credentials>, ApiError> {
    let sent = match request.headers().get(REGISTRY_AUTH) {
        Some(value) => Credentials::from_header(value.to_str().unwrap_or(""))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, error_chain(&e)))?,
        None => None,
    };
    Ok(sent.or_else(|| daemon.stored_credentials(reference.domain())))
}

/// The sending end of a JSON progress stream.
pub(super) struct Progress(mpsc::UnboundedSender<Bytes>);

impl Progress {
    pub(super) fn event(&self, event: PullEvent) {
        let _ = self.0.send(event_line(event));
    }

    /// Ends the stream with docker's error line.
    pub(super) fn error(&self, error: &(dyn std::error::Error + 'static)) {
        let message = error_chain(error);
        let _ = self.0.send(line(&ProgressLine {
            error: Some(message.clone()),
            error_detail: Some(ErrorBody { message }),
            ..Default::default()
        }));
    }
}

/// A response whose body is the lines sent to the returned [`Progress`],
/// as they come; it ends when the `Progress` is dropped.
pub(super) fn progress_response() -> (Progress, Response<Body>) {
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let body = StreamBody::new(frames)
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (Progress(tx), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_image_and_tag_make_the_reference() {
        let (r, insecure) =
            parse_query("fromImage=127.0.0.1%3A5000%2Flibrary%2Fbusybox&tag=1.36").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/library/busybox:1.36");
        assert!(!insecure);
        let digest = format!("sha256:{}", "a".repeat(64));
        let (r, _) = parse_query(&format!("fromImage=busybox&tag={digest}&insecure=1")).unwrap();
        assert_eq!(r.digest().unwrap().to_string(), digest);
        let (r, insecure) = parse_query("fromImage=busybox:1.36&insecure=true").unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert!(insecure);
        assert!(parse_query("tag=1").is_err());
        assert!(parse_query("fromImage=Bad").is_err());
    }

    #[test]
    fn events_become_docker_progress_lines() {
        let bytes = event_line(PullEvent {
            id: Some("abc".into()),
            status: "Downloading".into(),
            progress: Some((1, 2)),
        });
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "{\"status\":\"Downloading\",\"id\":\"abc\",\"progressDetail\":{\"current\":1,\"total\":2}}\n"
        );
    }
}
