//! Streamed responses and hijacked connections, as docker's attach, exec
//! and logs use them.

use std::convert::Infallible;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hull_runtime::container::LogStream;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{full, Body};

/// Output framed by stream (docker's `stdcopy`): non-tty attach, exec, logs.
pub(super) const CONTENT_MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
/// Raw terminal output: tty attach, exec, logs.
pub(super) const CONTENT_RAW: &str = "application/vnd.docker.raw-stream";

/// A response whose body is what is sent on the returned channel; `capacity`
/// chunks may wait, then the sender waits for the client.
pub(crate) fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let body = StreamBody::new(frames)
        .map_err(|never: Infallible| match never {})
        .boxed();
    (tx, Response::new(body))
}

/// One chunk of output with docker's 8-byte header: stream, 3 zero bytes,
/// big-endian length.
pub(super) fn stdcopy(stream: LogStream, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u8(match stream {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
    });
    frame.put_bytes(0, 3);
    frame.put_u32(u32::try_from(payload.len()).expect("chunks are small"));
    frame.put_slice(payload);
    frame.freeze()
}

/// Whether the client asked to take over the connection (`Upgrade: tcp`).
pub(super) fn wants_upgrade<B>(request: &Request<B>) -> bool {
    request.headers().contains_key(header::UPGRADE)
}

/// The answer that hands the connection over to a raw stream.
pub(super) fn upgraded_response(content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdcopy_frames_carry_stream_and_length() {
        let frame = stdcopy(LogStream::Stderr, b"hello");
        assert_eq!(&frame[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&frame[8..], b"hello");
    }
}
