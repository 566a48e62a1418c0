//! HTTP/1 through the proxy: every request of a client's connection goes
//! on its own to the replica the pool picks (round robin, by source, or
//! the fewest requests in flight), over a new connection to it, with
//! `X-Forwarded-For` naming the client. Bodies stream both ways, never
//! held whole. A replica that cannot be reached, or fails before it
//! answers, is a 502 whose body says which and why; none healthy is a 503.
//! Oversized request headers are hyper's 431.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::Target;

/// A response's body, streamed from a replica or the proxy's own.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A replica's response headers, in bytes.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Headers of one hop, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

pub async fn serve(stream: TcpStream, peer: SocketAddr, target: &Target) {
    let limits = &target.limits;
    let service = hyper::service::service_fn(|request| forward(request, peer, target));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.header_bytes.max(8192))
        .max_headers(limits.headers)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        debug!(service = %target.name, client = %peer, error = %err, "a proxied connection ended");
    }
}

/// The proxy's own answer.
pub fn answer(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    // Those the Connection header names are of this hop too.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

async fn forward(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    target: &Target,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some(lease) = target.pool.pick(peer.ip()) else {
        return Ok(answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("service {} has no healthy replica\n", target.name),
        ));
    };
    let replica = SocketAddr::from((lease.address, target.port));
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    let client = peer.ip().to_string();
    let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert("x-forwarded-for", value);
    }
    let failed = |why: String| {
        debug!(service = %target.name, %replica, why, "a proxied request failed");
        Ok(answer(
            StatusCode::BAD_GATEWAY,
            format!(
                "replica {replica} of service {} failed: {why}\n",
                target.name
            ),
        ))
    };
    let limits = &target.limits;
    let stream =
        match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(replica)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return failed(format!("cannot connect: {err}")),
            Err(_) => return failed("no connection in time".to_owned()),
        };
    let _ = stream.set_nodelay(true);
    let handshake = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_RESPONSE_HEAD)
        .max_headers(limits.headers)
        .handshake(TokioIo::new(stream))
        .await;
    let (mut sender, connection) = match handshake {
        Ok(pair) => pair,
        Err(err) => return failed(format!("cannot speak HTTP to it: {err}")),
    };
    // Ends when the response body is read or dropped.
    tokio::spawn(connection);
    let response =
        match tokio::time::timeout(limits.response_timeout, sender.send_request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return failed(format!("no answer: {err}")),
            Err(_) => {
                return Ok(answer(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "replica {replica} of service {} did not answer in {:?}\n",
                        target.name, limits.response_timeout
                    ),
                ))
            }
        };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The request counts as in flight until its answer is all sent.
    let body = body
        .map_frame(move |frame| {
            let _in_flight = &lease;
            frame
        })
        .boxed();
    Ok(Response::from_parts(parts, body))
}
