//! `GET /images/get?names=…` and `GET /images/{name}/get`: `docker save`,
//! streamed as the archive is written, never held whole in memory.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hull_image::export::{self, ExportFormat};
use hyper::body::Frame;

use super::RequestBody;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use tokio::sync::mpsc;

use super::images::name_in;
use super::{blocking, error_chain, ApiError, Body};
use crate::daemon::Daemon;

/// Bytes written to the body per chunk.
const CHUNK: usize = 256 * 1024;

pub(super) async fn save(
    daemon: &Daemon,
    path: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let query = request.uri().query().unwrap_or("");
    let mut names = Vec::new();
    let mut format = ExportFormat::Docker;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "names" => names.push(value.into_owned()),
            "format" if value == "oci" => format = ExportFormat::Oci,
            _ => {}
        }
    }
    if path != "/images/get" {
        names.push(name_in(path, "/get")?);
    }
    if names.is_empty() {
        return Err(ApiError::new(
            hyper::StatusCode::BAD_REQUEST,
            "no image names given",
        ));
    }
    // Resolve first, so that a missing image is a 404 rather than a broken stream.
    let store = daemon.images().clone();
    let resolving = store.clone();
    let items = blocking(move || export::resolve(&resolving, &names)).await?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut out = std::io::BufWriter::with_capacity(CHUNK, ChannelWriter(tx.clone()));
        if let Err(err) = export::save(&store, &items, format, &mut out) {
            tracing::warn!(error = %error_chain(&err), "save failed");
            let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
        }
    });
    let chunks = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(response)
}

/// Hands what the blocking archive writer writes to the response body.
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
