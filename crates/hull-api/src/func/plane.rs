//! The call plane: its own listener, unsigned (a function's uuid is its
//! calls' secret).
//!
//! `POST /call/NAME/UUID/sync` answers with the call's stdout;
//! `POST /call/NAME/UUID` answers `{"CallId": …}` at once, and
//! `GET /output/NAME/UUID/CALLID[/wait]` the result: 200 finished (then
//! gone), 201 running, 202 queued, 404 unknown or fetched, 410 expired,
//! 500 failed (its stderr), 504 past its timeout, 509 output too large.
//! `GET /status/NAME/UUID` counts the function's calls and
//! `GET /logs/NAME/UUID[?callid=&tail=&follow=1]` streams their events,
//! as Hyper.sh's call plane did.
//!
//! Off loopback it serves TLS with the tenant listener's certificate, the
//! handshake under a deadline; no client certificate is asked for.
//!
//! Its connections are shared as the tenant listener's are: a connection
//! counts against its peer's address until a request on it names a
//! function (a right uuid), then against that function's owner for good,
//! and carries calls of that owner's functions only. So neither one
//! address nor one owner's callers can hold every connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hull_cloud::funcs::{CallRow, CallState, FuncRow, FuncsError};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::events::{self, LogsRequest};
use super::{submit, take, FuncError};
use crate::daemon::Daemon;
use crate::server::connections::{
    Connection, ConnectionError, ConnectionLimits, Connections, Counted,
};
use crate::server::{full, Body};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 512;
/// The most headers a call may carry.
const MAX_HEADERS: usize = 64;
/// The most bytes of headers a call's environment takes.
const MAX_HEADER_ENV: usize = 16 * 1024;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its headers, and its body.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an output request waits for its call to end.
const MAX_OUTPUT_WAIT: Duration = Duration::from_secs(60);

/// Where the plane serves calls, and whether with TLS.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub tls: bool,
}

impl Endpoint {
    /// The base of call URLs: `https://HOST:PORT` (or `http://` on
    /// loopback). A plane bound to every address is named by the host's
    /// name: a client elsewhere can reach it, and Hull's own certificate
    /// covers it (the wildcard address would be neither).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if !self.address.ip().is_unspecified() {
            return format!("{scheme}://{}", self.address);
        }
        let host = crate::tls::host_name().unwrap_or_else(|| "localhost".to_owned());
        format!("{scheme}://{host}:{}", self.address.port())
    }
}

/// Serves calls on `listener` until the process ends, each connection
/// over TLS with `tls` when given (the plane is off loopback), else plain.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, daemon: Arc<Daemon>) {
    if let Ok(address) = listener.local_addr() {
        let tls = tls.is_some();
        let _ = daemon.funcs().address.set(Endpoint { address, tls });
    }
    let config = daemon.funcs().config();
    let shares = Arc::new(Connections::new(ConnectionLimits {
        total: MAX_CONNECTIONS,
        per_tenant: config.max_connections_per_owner,
        unauthenticated_per_address: config.max_unauthenticated_per_address,
    }));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept a call connection; retrying");
                tokio::time::sleep(crate::server::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Closed at once, before a handshake costs anything: its address
        // holds its share of unnamed ones.
        let Some(connection) = shares.admit(peer.ip()) else {
            debug!(%peer, "refused a call connection: its address holds its limit");
            continue;
        };
        let connection = Arc::new(connection);
        let (daemon, tls) = (daemon.clone(), tls.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                let stream = Counted::new(stream, connection.clone(), permit);
                return serve_connection(stream, connection, daemon).await;
            };
            // The handshake holds the slot and its address's share only
            // until its deadline, and a failed one nothing after.
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return debug!(%peer, error = %err, "call TLS handshake failed"),
                Err(_) => return debug!(%peer, "call TLS handshake timed out"),
            };
            let stream = Counted::new(stream, connection.clone(), permit);
            serve_connection(stream, connection, daemon).await;
        });
    }
}

/// Serves the calls on one connection, plain or TLS, until it ends.
async fn serve_connection<S>(stream: Counted<S>, connection: Arc<Connection>, daemon: Arc<Daemon>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (daemon, connection) = (daemon.clone(), connection.clone());
        async move {
            let mut response = route(&daemon, request, &connection).await;
            // A stranger's connection gets one try: closed after a request
            // that named no function.
            if !connection.authenticated() {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(64 * 1024);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(err) = connection.await {
        debug!(error = %err, "call connection ended with an error");
    }
}

async fn route(
    daemon: &Daemon,
    request: Request<Incoming>,
    connection: &Connection,
) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let (name, uuid) = match (&method, parts.as_slice()) {
        (&Method::POST, ["call", name, uuid, ..])
        | (&Method::GET, ["output" | "status" | "logs", name, uuid, ..]) => (*name, *uuid),
        _ => return text(StatusCode::NOT_FOUND, "no such function"),
    };
    let func = match function(daemon, name, uuid, connection) {
        Ok(func) => func,
        Err(response) => return response,
    };
    match (&method, parts[0], &parts[3..]) {
        (&Method::POST, _, []) => call(daemon, &func, false, request).await,
        (&Method::POST, _, ["sync"]) => call(daemon, &func, true, request).await,
        (&Method::GET, "output", [id]) => fetch(daemon, &func, id, false).await,
        (&Method::GET, "output", [id, "wait"]) => fetch(daemon, &func, id, true).await,
        (&Method::GET, "status", [] | [""]) => match super::status(daemon, &func) {
            Ok(status) => json(StatusCode::OK, &status),
            Err(error) => refused(&error),
        },
        (&Method::GET, "logs", [] | [""]) => {
            match LogsRequest::parse(&crate::server::containers::Query::of(&request)) {
                Ok(wanted) => events::logs(daemon, &func, wanted),
                Err(message) => text(StatusCode::BAD_REQUEST, &message),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "no such function"),
    }
}

/// The function `name` whose uuid is `uuid` (a wrong one of either is
/// unknown), once `connection` may carry its owner's calls.
#[allow(clippy::result_large_err)]
fn function(
    daemon: &Daemon,
    name: &str,
    uuid: &str,
    connection: &Connection,
) -> Result<FuncRow, Response<Body>> {
    let func = daemon
        .tenants()
        .func_by_uuid(uuid)
        .ok()
        .flatten()
        .filter(|row| row.name == name)
        .ok_or_else(|| text(StatusCode::NOT_FOUND, "no such function"))?;
    // The operator's functions count as one owner; no tenant is named "".
    let owner = func.tenant.as_deref().unwrap_or("");
    connection.claim(owner).map_err(|refused| {
        let mut response = text(refused_status(&refused), &refused_message(&refused));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    })?;
    Ok(func)
}

fn refused_status(refused: &ConnectionError) -> StatusCode {
    match refused {
        ConnectionError::TenantFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        ConnectionError::OtherTenant => StatusCode::FORBIDDEN,
    }
}

fn refused_message(refused: &ConnectionError) -> String {
    match refused {
        ConnectionError::TenantFull { limit } => format!(
            "too many connections: calls of this function's owner already hold {limit}, \
             the most one owner's functions may hold at once on this host; close idle \
             keep-alive connections, or retry when sync calls and output waits end"
        ),
        ConnectionError::OtherTenant => "this connection carries calls of another owner's \
             functions: open a connection of its own for each owner's functions"
            .to_owned(),
    }
}

async fn call(
    daemon: &Daemon,
    func: &FuncRow,
    sync: bool,
    request: Request<Incoming>,
) -> Response<Body> {
    let name = func.name.as_str();
    let env = match environment(&request, name) {
        Ok(env) => env,
        Err(response) => return response,
    };
    let max = daemon.funcs().config().max_input;
    let body = match read_body(request.into_body(), max).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    submit_and_answer(daemon, func, &env, &body, sync).await
}

/// Submits a call and answers: its id, or (with `sync`) its result.
pub(crate) async fn submit_and_answer(
    daemon: &Daemon,
    func: &FuncRow,
    env: &[String],
    body: &[u8],
    sync: bool,
) -> Response<Body> {
    let id = match submit(daemon, func, env, body) {
        Ok(id) => id,
        Err(error) => return refused(&error),
    };
    if !sync {
        let answer = serde_json::json!({ "CallId": id });
        let mut response = text(StatusCode::ACCEPTED, &answer.to_string());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    match take(daemon, func, &id, true).await {
        Ok(row) => answer(row, &id),
        Err(error) => refused(&error),
    }
}

/// Call `id`'s result, taken if it is done.
pub(crate) async fn fetch(daemon: &Daemon, func: &FuncRow, id: &str, wait: bool) -> Response<Body> {
    super::expire(daemon);
    // A wait is bounded, then answers the call's state (201, 202) for the
    // client to ask again: callers can't pile up connections on one call.
    let taken = match tokio::time::timeout(MAX_OUTPUT_WAIT, take(daemon, func, id, wait)).await {
        Ok(taken) => taken,
        Err(_) => take(daemon, func, id, false).await,
    };
    match taken {
        Ok(row) => answer(row, id),
        Err(error) => refused(&error),
    }
}

/// A call's state as the plane answers it.
fn answer(row: Option<CallRow>, id: &str) -> Response<Body> {
    let Some(row) = row else {
        return text(
            StatusCode::NOT_FOUND,
            "no such call, or its result was fetched",
        );
    };
    let state = |status: StatusCode, state: &str| {
        let body = serde_json::json!({ "CallId": id, "State": state });
        text(status, &body.to_string())
    };
    let result = row.result.unwrap_or_default();
    let mut response = match row.state {
        CallState::Queued => state(StatusCode::ACCEPTED, "queued"),
        CallState::Running => state(StatusCode::CREATED, "running"),
        CallState::Finished => bytes(StatusCode::OK, result),
        CallState::Failed => bytes(StatusCode::INTERNAL_SERVER_ERROR, result),
        CallState::Timeout => bytes(StatusCode::GATEWAY_TIMEOUT, result),
        CallState::TooLarge => bytes(too_large(), result),
        CallState::Expired => text(StatusCode::GONE, "the call's result expired unfetched"),
    };
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert("X-Hull-Call-Id", value);
    }
    response
}

/// 509: the call's output went past its bound.
fn too_large() -> StatusCode {
    StatusCode::from_u16(509).expect("509 is a valid status")
}

fn refused(error: &FuncError) -> Response<Body> {
    let status = match error {
        FuncError::QueueFull(..) => StatusCode::TOO_MANY_REQUESTS,
        FuncError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
        // The owner's calls hold their budget of bytes: room comes back
        // as results are fetched, not by retrying.
        FuncError::Store(FuncsError::Full { .. }) => StatusCode::INSUFFICIENT_STORAGE,
        FuncError::Store(FuncsError::NoFunc(_)) => StatusCode::NOT_FOUND,
        FuncError::Store(_) | FuncError::Unreadable(..) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, &error.to_string())
}

/// The call's environment: its method, path and query, and each header as
/// `HTTP_<NAME>` (Hyper.sh's way). Headers past the bound answer 431.
#[allow(clippy::result_large_err)]
pub(crate) fn environment<B>(
    request: &Request<B>,
    name: &str,
) -> Result<Vec<String>, Response<Body>> {
    let uri = request.uri();
    let mut env = vec![
        format!("HULL_FUNC_METHOD={}", request.method()),
        // Not the request's own path: its uuid is the function's secret.
        format!("HULL_FUNC_PATH=/call/{name}"),
        format!("HULL_FUNC_QUERY={}", uri.query().unwrap_or("")),
    ];
    let mut size = 0;
    for (header, value) in request.headers() {
        // A caller's `Proxy:` would become HTTP_PROXY, which HTTP clients
        // in the function obey (httpoxy): it is dropped.
        if header.as_str() == "proxy" {
            continue;
        }
        // hyper gives names lower-case, of token characters only.
        let key: String = header
            .as_str()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let Ok(value) = value.to_str() else {
            continue;
        };
        let entry = format!("HTTP_{key}={value}");
        size += entry.len();
        if size > MAX_HEADER_ENV {
            return Err(text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &format!("the call's headers are over {MAX_HEADER_ENV} bytes"),
            ));
        }
        env.push(entry);
    }
    Ok(env)
}

/// A call's body, refused (413) past `max` bytes before anything runs.
#[allow(clippy::result_large_err)]
pub(crate) async fn read_body<B>(mut body: B, max: usize) -> Result<Vec<u8>, Response<Body>>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the call's body is over {max} bytes"),
        )
    };
    if hyper::body::Body::size_hint(&body)
        .upper()
        .or(Some(hyper::body::Body::size_hint(&body).lower()))
        .is_some_and(|n| n > max as u64)
    {
        return Err(too_large());
    }
    let read = async {
        let mut read = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if read.len() + data.len() > max {
                    return Err(too_large());
                }
                read.extend_from_slice(&data);
            }
        }
        Ok(read)
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| {
            Err(text(
                StatusCode::REQUEST_TIMEOUT,
                "the call's body came too slowly",
            ))
        })
}

fn bytes(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut response = bytes(status, serde_json::to_vec(value).expect("JSON serializes"));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut body = message.to_owned();
    body.push('\n');
    bytes(status, body.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(address: &str, tls: bool) -> String {
        let address = address.parse().unwrap();
        Endpoint { address, tls }.base_url()
    }

    #[test]
    fn call_urls_name_a_host_clients_reach_and_the_certificate_covers() {
        assert_eq!(base("127.0.0.1:8080", false), "http://127.0.0.1:8080");
        assert_eq!(base("[::1]:8080", false), "http://[::1]:8080");
        assert_eq!(base("192.0.2.7:8443", true), "https://192.0.2.7:8443");
        assert_eq!(
            base("[2001:db8::7]:8443", true),
            "https://[2001:db8::7]:8443"
        );
        let host = crate::tls::host_name().unwrap_or_else(|| "localhost".to_owned());
        for wildcard in ["0.0.0.0:8443", "[::]:8443"] {
            assert_eq!(base(wildcard, true), format!("https://{host}:8443"));
        }
    }
}
