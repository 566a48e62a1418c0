//! The HTTP server: routing, Docker-shaped errors, and Hull's run stream.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, BodyStream, Full};
use hull_image::StoreError;
use hull_proto::{Frame, FrameKind};
use hull_runtime::{Prepared, RunControl, RunError, RunIo, Runtime};
use hull_vm::Qemu;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::daemon::Daemon;
use crate::types::{
    ErrorBody, ImageSummary, Info, ProgressLine, RunControlMessage, RunEvent, RunSpec, Version,
};
use crate::{run_stream, DOCKER_API_VERSION, RUN_UPGRADE};

type Body = BoxBody<Bytes, std::io::Error>;

/// An error answered in the Engine API's shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Response<Body> {
        json_response(
            self.status,
            &ErrorBody {
                message: self.message,
            },
        )
    }
}

/// An error and its causes on one line, for the client to print.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match error {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Archive(_) | StoreError::Reference(_) | StoreError::Ambiguous { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error_chain(&error))
    }
}

impl From<RunError> for ApiError {
    fn from(error: RunError) -> Self {
        match error {
            RunError::Image(store) => store.into(),
            RunError::Spec(spec) => Self::new(StatusCode::BAD_REQUEST, spec.to_string()),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&other)),
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(body).expect("API types serialize")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let daemon = daemon.clone();
                async move { Ok::<_, Infallible>(route(daemon, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = connection.await {
                debug!(error = %err, "API connection ended with an error");
            }
        });
    }
}

/// Docker clients prefix paths with the API version (`/v1.43/images/json`).
fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            if rest[..slash]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
            {
                return &rest[slash..];
            }
        }
    }
    path
}

async fn route(daemon: Arc<Daemon>, request: Request<Incoming>) -> Response<Body> {
    let path = strip_version(request.uri().path()).to_string();
    let method = request.method().clone();
    let result = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/_ping") => Ok(ping()),
        (&Method::GET, "/version") => Ok(version()),
        (&Method::GET, "/info") => info(&daemon).await,
        (&Method::GET, "/images/json") => list_images(&daemon).await,
        (&Method::POST, "/images/load") => load_images(&daemon, request).await,
        (&Method::POST, "/hull/run") => run(&daemon, request).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: {method} {path}"),
        )),
    };
    let mut response = result.unwrap_or_else(ApiError::into_response);
    response
        .headers_mut()
        .insert("Api-Version", HeaderValue::from_static(DOCKER_API_VERSION));
    response
}

fn ping() -> Response<Body> {
    let mut response = Response::new(full("OK"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

fn version() -> Response<Body> {
    let kernel_version = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json_response(
        StatusCode::OK,
        &Version {
            version: env!("CARGO_PKG_VERSION").into(),
            api_version: DOCKER_API_VERSION.into(),
            min_api_version: "1.24".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            kernel_version,
        },
    )
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "an image task failed"))?
        .map_err(ApiError::from)
}

async fn info(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
    let images = daemon.images().clone();
    let count = blocking(move || images.list()).await?.len();
    let accel = daemon.accel();
    Ok(json_response(
        StatusCode::OK,
        &Info {
            images: count,
            operating_system: "Hull".into(),
            root_dir: daemon.root().display().to_string(),
            accelerator: Some(accel.accel.to_string()),
            accelerator_reason: Some(accel.reason.clone()),
        },
    ))
}

async fn list_images(daemon: &Daemon) -> Result<Response<Body>, ApiError> {
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
async fn load_images(
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

/// `POST /hull/run`: checks the request, then upgrades the connection to a
/// stream of frames carrying stdio, control and the final exit status.
async fn run(daemon: &Daemon, mut request: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let upgrade_asked = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(RUN_UPGRADE.as_bytes()));
    if !upgrade_asked {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("POST /hull/run needs 'Connection: Upgrade' and 'Upgrade: {RUN_UPGRADE}'"),
        ));
    }
    let body = request
        .body_mut()
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request failed: {e}"),
            )
        })?
        .to_bytes();
    let spec: RunSpec = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed run request: {e}"),
        )
    })?;
    let runtime = daemon
        .runtime()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))?;
    let run_request = hull_runtime::RunRequest {
        image: spec.image.clone(),
        options: spec.process.clone(),
        stdin: spec.stdin,
    };
    let prepared = runtime.prepare(&run_request).await?;

    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve_run(TokioIo::new(upgraded), runtime, prepared, spec).await,
            Err(err) => warn!(error = %err, "run stream upgrade failed"),
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(RUN_UPGRADE));
    Ok(response)
}

async fn serve_run<S>(stream: S, runtime: Arc<Runtime<Qemu>>, prepared: Prepared, spec: RunSpec)
where
    S: tokio::io::AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (stdout_tx, mut stdout_rx) = mpsc::channel::<Bytes>(16);
    let (stderr_tx, mut stderr_rx) = mpsc::channel::<Bytes>(16);
    let (control_tx, control_rx) = mpsc::channel::<RunControl>(16);
    if let (true, Some((rows, cols))) = (spec.process.tty, spec.tty_size) {
        let _ = control_tx.try_send(RunControl::Resize { rows, cols });
    }
    let io = RunIo {
        stdin: stdin_rx,
        stdout: stdout_tx,
        stderr: stderr_tx,
        control: control_rx,
    };

    // Ends when the client goes away: then the run is dropped, which kills the VM.
    let client_gone = read_client(&mut reader, stdin_tx, control_tx);
    let relay_output = async {
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let (stream, chunk) = tokio::select! {
                chunk = stdout_rx.recv(), if out_open => (run_stream::STDOUT, chunk),
                chunk = stderr_rx.recv(), if err_open => (run_stream::STDERR, chunk),
            };
            match chunk {
                Some(bytes) => {
                    if writer
                        .write_all(&Frame::data(stream, &bytes).encode())
                        .await
                        .is_err()
                    {
                        return Err(());
                    }
                }
                None if stream == run_stream::STDOUT => out_open = false,
                None => err_open = false,
            }
        }
        Ok(())
    };
    let finished = tokio::select! {
        (status, relayed) = async { tokio::join!(runtime.run(prepared, io), relay_output) } => {
            relayed.ok().map(|()| status)
        }
        () = client_gone => None,
    };
    let Some(status) = finished else {
        debug!("run client went away; its VM was stopped");
        return;
    };
    let event = match status {
        Ok(status) => RunEvent::Exited {
            code: status.code(),
        },
        Err(err) => RunEvent::Failed {
            code: err.exit_code(),
            message: error_chain(&err),
        },
    };
    let frame = Frame::json(FrameKind::Event, 0, &event);
    let _ = writer.write_all(&frame.encode()).await;
    let _ = writer.shutdown().await;
}

/// Feeds the client's stdin and control frames to the run until the client disconnects.
async fn read_client<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    stdin: mpsc::Sender<Bytes>,
    control: mpsc::Sender<RunControl>,
) {
    let mut stdin = Some(stdin);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut decoder = hull_proto::FrameDecoder::new();
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.extend(&buffer[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    warn!(error = %err, "malformed frame from a run client");
                    return;
                }
            };
            match frame.kind {
                FrameKind::Data if frame.channel == run_stream::STDIN => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(Bytes::from(frame.payload)).await;
                    }
                }
                FrameKind::Eof if frame.channel == run_stream::STDIN => stdin = None,
                FrameKind::Event => match frame.parse::<RunControlMessage>() {
                    Ok(RunControlMessage::Signal { signal }) => {
                        let _ = control.send(RunControl::Signal(signal)).await;
                    }
                    Ok(RunControlMessage::Resize { rows, cols }) => {
                        let _ = control.send(RunControl::Resize { rows, cols }).await;
                    }
                    Err(err) => debug!(error = %err, "ignoring a malformed control message"),
                },
                _ => debug!(kind = ?frame.kind, "ignoring an unexpected frame from a run client"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_version_prefixes_are_stripped() {
        assert_eq!(strip_version("/v1.43/images/json"), "/images/json");
        assert_eq!(strip_version("/v1.24/_ping"), "/_ping");
        assert_eq!(strip_version("/images/json"), "/images/json");
        assert_eq!(strip_version("/volumes"), "/volumes");
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        let io = std::io::Error::other("disk full");
        let store = StoreError::Write {
            path: "/var/lib/hull/x".into(),
            source: io,
        };
        assert_eq!(
            error_chain(&store),
            "cannot write /var/lib/hull/x: disk full"
        );
    }
}
