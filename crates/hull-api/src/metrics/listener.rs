//! The metrics listener: plain HTTP on the operator's address, `GET
//! /metrics` and nothing else.
//!
//! It is bounded like every listener: connections are counted, each has a
//! deadline, and no request body is ever read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::server::full;

/// Connections served at once; more wait in the kernel's backlog. A
/// Prometheus server or two need a handful.
pub const MAX_CONNECTIONS: usize = 16;
/// A client must have sent a request's head by then.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection, kept alive or not, ends after this: a client that holds
/// one open holds a slot only so long.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait after a failed accept (out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `render`'s text as `GET /metrics` on `listener` until the
/// process ends.
pub async fn serve(listener: TcpListener, render: impl Fn() -> String + Send + Sync + 'static) {
    serve_with(listener, Arc::new(render), MAX_CONNECTIONS).await
}

pub(super) async fn serve_with(
    listener: TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "cannot accept a metrics connection; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let answer = answer(&request, &*render);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    debug!(%peer, error = %err, "metrics connection ended with an error")
                }
                Err(_) => debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}

/// The answer to one request; its body, if any, is left unread.
fn answer(
    request: &Request<Incoming>,
    render: &(dyn Fn() -> String + Send + Sync),
) -> Response<crate::server::Body> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        let mut response = Response::new(full("404 page not found\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    }
    let mut response = Response::new(full(render()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(super::CONTENT_TYPE),
    );
    response
}
