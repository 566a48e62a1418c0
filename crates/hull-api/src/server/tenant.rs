//! The tenants' listener: TLS over TCP, every request signed or sent on a
//! connection made with a tenant's client certificate (as the stock docker
//! CLI does with `--tlscert`).
//!
//! Whoever reaches the port is a stranger until a signature or a client
//! certificate proves which tenant it is. Everything is bounded before it is
//! read: the TLS handshake has a deadline, connections are counted (per
//! address until their first request authenticates, per tenant from then
//! on: `connections`), and a request's body is read only up to a limit and
//! held to the hash it was signed with before any handler sees it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full, Limited};
use hull_cloud::date::HyperDate;
use hull_cloud::sign::{self, Request as Signed};
use hull_cloud::verify::{Verifier, VerifyError};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::connections::{Connection, ConnectionError, Connections, Counted};
use super::scope::{self, Scope};
use super::tenancy::MAX_BODIES_PER_TENANT;
use super::{
    commit, containers, events, exec, import, networks, pods, system, tenant_containers,
    tenant_images, tenant_pods, volumes, ApiError, Body, BodyError, RequestBody,
};
use crate::daemon::Daemon;
use crate::metrics::Listener;
use crate::DOCKER_API_VERSION;

/// The largest body a tenant's signed request may carry.
pub const MAX_SIGNED_BODY: usize = 1 << 20;
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not sent a request's head by then is dropped, so a
/// slow one cannot hold a connection slot forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A fixed clock for signature checks, for tests that replay requests
/// signed in the past (`YYYYMMDDTHHMMSSZ`). Never set in production.
pub const TEST_CLOCK_ENV: &str = "HULL_TEST_SIGNATURE_CLOCK";

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub String);

/// Serves tenants on `listener` with TLS until the process ends.
pub async fn serve_tenants(listener: TcpListener, tls: TlsAcceptor, daemon: Arc<Daemon>) {
    let clock = test_clock();
    let connections = Arc::new(Connections::new(daemon.cloud_config().connections));
    let slots = Arc::new(Semaphore::new(connections.limits().total));
    loop {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "cannot accept a tenant connection; retrying");
                tokio::time::sleep(super::ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Closed at once, before a handshake costs anything.
        let Some(connection) = connections.admit(peer.ip()) else {
            debug!(%peer, "refused a connection: its address holds its limit of unauthenticated ones");
            daemon.metrics().refused_connection("address");
            continue;
        };
        let (daemon, tls) = (daemon.clone(), tls.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            // The verifier already checked the chain to Hull's CA; which
            // tenant it belongs to (if it is still live) is looked up on
            // each request, so a revocation holds on open connections too.
            let certificate = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| crate::tls::fingerprint(cert));
            let connection = Arc::new(connection);
            let stream = Counted::new(stream, connection.clone(), permit);
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let (daemon, connection) = (daemon.clone(), connection.clone());
                let certificate = certificate.clone();
                async move {
                    let who = Credential {
                        certificate: certificate.as_deref(),
                        clock,
                    };
                    Ok::<_, Infallible>(handle(&daemon, request, who, &connection).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = connection.await {
                debug!(%peer, error = %err, "tenant connection ended with an error");
            }
        });
    }
}

fn test_clock() -> Option<SystemTime> {
    let stamp = std::env::var(TEST_CLOCK_ENV).ok()?;
    let date = HyperDate::parse(&stamp).ok()?;
    warn!(clock = %stamp, "signatures are checked against a fixed test clock");
    Some(date.time())
}

/// What a connection brings to prove who sends its requests.
struct Credential<'a> {
    /// The SHA-256 of the client certificate it presented, if any.
    certificate: Option<&'a str>,
    /// A fixed clock for signature checks (tests only).
    clock: Option<SystemTime>,
}

/// How a request proved its tenant: a signature, which holds its body to
/// a hash, or the connection's client certificate, which has none.
enum Proof {
    Signed { payload_sha256: String },
    Certificate,
}

async fn handle(
    daemon: &Daemon,
    request: Request<Incoming>,
    who: Credential<'_>,
    connection: &Connection,
) -> Response<Body> {
    let method = request.method().clone();
    let (parts, body) = request.into_parts();
    // A connection whose request proves no tenant, or that may not carry
    // this tenant's, is closed after the answer: a stranger gets one try.
    let (mut response, close) = match identify(daemon, &parts, &who) {
        Err(error) => (error.into_response(), !connection.authenticated()),
        Ok((tenant, proof)) => match connection.claim(&tenant.0) {
            Err(refused) => {
                daemon.metrics().refused_connection(refused.limit());
                (refused_connection(&refused).into_response(), true)
            }
            Ok(()) => {
                let served = match with_body(daemon, &tenant, parts, body, proof).await {
                    Ok(request) => route(daemon, &tenant, request).await,
                    Err(error) => Err(error),
                };
                let scope = Scope::Tenant(&tenant.0);
                let response = served.unwrap_or_else(|error| {
                    // The runtime words its errors with the store's names.
                    ApiError::new(error.status, scope.unqualify_text(&error.message))
                        .into_response()
                });
                (response, false)
            }
        },
    };
    let headers = response.headers_mut();
    headers.insert("Api-Version", HeaderValue::from_static(DOCKER_API_VERSION));
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    daemon
        .metrics()
        .request(Listener::Tenant, &method, response.status());
    response
}

fn refused_connection(error: &ConnectionError) -> ApiError {
    let status = match error {
        ConnectionError::TenantFull { .. } => StatusCode::TOO_MANY_REQUESTS,
        ConnectionError::OtherTenant => StatusCode::FORBIDDEN,
    };
    ApiError::new(status, error.to_string())
}

/// The tenant a request comes from: its signature's key's, checked
/// against its head (its body is held to the signed hash as it is read),
/// or its connection's client certificate's.
fn identify(
    daemon: &Daemon,
    parts: &hyper::http::request::Parts,
    who: &Credential<'_>,
) -> Result<(Tenant, Proof), ApiError> {
    if let Some(fingerprint) = who.certificate {
        let tenant = daemon
            .tenants()
            .tenant_of_cert(fingerprint)
            .map_err(ApiError::from)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the client certificate is unknown or revoked",
                )
            })?;
        return Ok((Tenant(tenant), Proof::Certificate));
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signed = Signed {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers,
        payload_sha256: "",
    };
    let mut tenant = None;
    let verifier = Verifier::new(&daemon.cloud_config().region);
    let now = who.clock.unwrap_or_else(SystemTime::now);
    let verified = verifier
        .verify(&signed, now, |access_key| {
            let found = daemon.tenants().secret_of(access_key);
            let (owner, secret) = found
                .inspect_err(
                    |err| warn!(error = %super::error_chain(err), "cannot look up an access key"),
                )
                .ok()
                .flatten()?;
            tenant = Some(owner);
            Some(secret)
        })
        .map_err(unauthorized)?;
    let tenant = Tenant(tenant.expect("a verified request has a key's tenant"));
    let proof = Proof::Signed {
        payload_sha256: verified.payload_sha256,
    };
    Ok((tenant, proof))
}

/// The request with its body: read whole (within the tenant's body slots)
/// and held to its signed hash, or streamed to its handler.
async fn with_body(
    daemon: &Daemon,
    tenant: &Tenant,
    parts: hyper::http::request::Parts,
    body: Incoming,
    proof: Proof,
) -> Result<Request<RequestBody>, ApiError> {
    if streams(&parts) {
        let body = match proof {
            Proof::Signed { payload_sha256 } => HashChecked::new(body, payload_sha256).boxed(),
            // The certificate proved who sends it; there is no hash to hold it to.
            Proof::Certificate => body.map_err(BodyError::from).boxed(),
        };
        return Ok(Request::from_parts(parts, body));
    }
    let slot = body_slot(daemon, &tenant.0, &body)?;
    let body = read_body(body).await?;
    if let Proof::Signed { payload_sha256 } = &proof {
        if sign::payload_sha256(&body) != *payload_sha256 {
            return Err(unauthorized(VerifyError::BodyMismatch));
        }
    }
    Ok(Request::from_parts(parts, buffered(body, slot)))
}

/// Whether a request's body is streamed to its handler rather than read
/// whole first: an image upload (a load, an import), which may be far past the signed-body
/// limit. Its handler spools it to disk and acts only on its whole.
fn streams(parts: &hyper::http::request::Parts) -> bool {
    let path = super::strip_version(parts.uri.path());
    let import = path == "/images/create" && import::is_import(&parts.uri);
    parts.method == Method::POST && (path == "/images/load" || import)
}

/// A streamed body held to the hash it was signed with: its data passes
/// through as it comes, and its end is an error unless the hash matches,
/// so a handler that acts only on a whole body never acts on a forged one.
struct HashChecked {
    inner: Incoming,
    hasher: Sha256,
    signed: String,
    ended: bool,
}

impl HashChecked {
    fn new(inner: Incoming, signed: String) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            signed,
            ended: false,
        }
    }
}

impl hyper::body::Body for HashChecked {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.hasher.update(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => Poll::Ready(Some(Err(err.into()))),
            None => {
                this.ended = true;
                let hash = hex::encode(std::mem::take(&mut this.hasher).finalize());
                if hash == this.signed {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(VerifyError::BodyMismatch.into())))
                }
            }
        }
    }
}

/// A request's body, read up to the limit.
async fn read_body(body: Incoming) -> Result<bytes::Bytes, ApiError> {
    Ok(Limited::new(body, MAX_SIGNED_BODY)
        .collect()
        .await
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("a signed request's body is at most {MAX_SIGNED_BODY} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request failed: {err}"),
                )
            }
        })?
        .to_bytes())
}

/// One of the tenant's body slots, for a body that is not empty: a tenant
/// with all its slots taken is asked to wait (429), not let in to fill the
/// host's memory.
fn body_slot(
    daemon: &Daemon,
    tenant: &str,
    body: &Incoming,
) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if hyper::body::Body::is_end_stream(body) {
        return Ok(None);
    }
    daemon.admission().body_slot(tenant).map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this tenant already has {MAX_BODIES_PER_TENANT} requests with bodies in progress: retry when one ends"
            ),
        )
    })
}

/// A body read whole; it keeps its tenant's slot until the handler drops it.
fn buffered(body: bytes::Bytes, slot: Option<OwnedSemaphorePermit>) -> RequestBody {
    Held {
        inner: Full::new(body),
        _slot: slot,
    }
    .boxed()
}

struct Held {
    inner: Full<bytes::Bytes>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl hyper::body::Body for Held {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_frame(cx)
            .map_err(|never: Infallible| match never {})
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn unauthorized(error: VerifyError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, error.to_string())
}

/// What a tenant may call. Only what is already scoped to its owner is
/// open; everything else is refused, never served unscoped.
pub(super) async fn route(
    daemon: &Daemon,
    tenant: &Tenant,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let path = super::strip_version(request.uri().path()).to_owned();
    let method = request.method().clone();
    debug!(tenant = %tenant.0, %method, %path, "tenant request");
    let scope = Scope::Tenant(&tenant.0);
    match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/_ping") => Ok(system::ping()),
        (&Method::GET, "/version") => Ok(system::version()),
        (&Method::GET, "/info") => system::tenant_info(daemon, &tenant.0),
        (&Method::GET, "/containers/json") => containers::list(daemon, &request, scope).await,
        (&Method::GET, "/events") => events::events(daemon, &request, scope).await,
        (_, p) if p.starts_with("/volumes") || p.starts_with("/hull/volumes/") => {
            volumes::route(daemon, request, scope).await
        }
        (_, p) if p == "/fips" || p.starts_with("/fips/") => {
            super::fips::route(daemon, scope, request).await
        }
        (_, p) if p == "/services" || p.starts_with("/services/") => {
            super::services::route(daemon, scope, request).await
        }
        (&Method::POST, "/containers/create") => {
            tenant_containers::create(daemon, &tenant.0, request).await
        }
        (&Method::GET, "/networks") => networks::list(daemon, &request, scope),
        (&Method::GET, p) if p.starts_with("/networks/") => {
            let (reference, action) = super::split_resource(p, "/networks/");
            if !action.is_empty() {
                return Err(super::not_found(&method, &path));
            }
            networks::inspect(daemon, &reference, scope)
        }
        // Checks credentials against a registry, storing nothing (`docker login`).
        (&Method::POST, "/auth") => super::auth::login(daemon.tenant_registry(), request).await,
        (&Method::GET, "/images/json") => tenant_images::list(daemon, &tenant.0).await,
        (&Method::POST, "/images/create") if import::is_import(request.uri()) => {
            import::import(daemon, scope, request).await
        }
        (&Method::POST, "/images/create") => tenant_images::pull(daemon, &tenant.0, &request).await,
        (&Method::POST, "/commit") => commit::commit(daemon, scope, request).await,
        (&Method::POST, "/images/load") => tenant_images::load(daemon, &tenant.0, request).await,
        (&Method::POST, p) if p.starts_with("/images/") && p.ends_with("/tag") => {
            tenant_images::tag(daemon, &tenant.0, p, &request).await
        }
        (&Method::GET, p) if p.starts_with("/images/") && p.ends_with("/history") => {
            tenant_images::history(daemon, &tenant.0, p).await
        }
        (&Method::GET, p) if p.starts_with("/images/") && p.ends_with("/json") => {
            tenant_images::inspect(daemon, &tenant.0, p).await
        }
        (&Method::DELETE, p) if p.starts_with("/images/") => {
            tenant_images::remove(daemon, &tenant.0, p, &request).await
        }
        (_, p) if p.starts_with("/containers/") => {
            let (reference, action) = super::split_resource(p, "/containers/");
            let (reference, action) = super::link_form(&method, &request, reference, action);
            // Its own container's links, which name its own containers only.
            let unlink = super::removes_link(&method, &request);
            let open = unlink
                || matches!(
                    (&method, action),
                    (
                        &Method::GET,
                        "json" | "logs" | "top" | "stats" | "archive" | "export"
                    ) | (&Method::HEAD | &Method::PUT, "archive")
                        | (
                            &Method::POST,
                            "start" | "stop" | "restart" | "kill" | "wait" | "rename" | "update"
                        )
                        | (&Method::POST, "resize" | "attach" | "exec")
                        | (&Method::GET | &Method::POST, "attach/ws")
                        | (&Method::DELETE, "")
                );
            if !open {
                return Err(refused(&method, &path));
            }
            let id = scope::container_id(daemon, scope, &reference)?;
            let routed = super::container_route(daemon, &method, &id, action, request, scope);
            match action {
                // What a start takes is counted against the tenant's quota.
                "start" | "restart" => {
                    let ids = [id.clone()];
                    tenant_containers::start_within_quota(daemon, &tenant.0, &ids, routed).await
                }
                _ => routed.await,
            }
        }
        (_, p) if p.starts_with("/exec/") => {
            let (id, action) = super::split_resource(p, "/exec/");
            scope::check_exec(daemon, scope, &id)?;
            match (&method, action) {
                (&Method::POST, "start") => exec::start(daemon, &id, request).await,
                (&Method::GET, "json") => exec::inspect(daemon, &id),
                (&Method::POST, "resize") => exec::resize(daemon, &id, &request).await,
                _ => Err(super::not_found(&method, &path)),
            }
        }
        (&Method::POST, "/hull/pods/create") => {
            tenant_pods::create(daemon, &tenant.0, request).await
        }
        (&Method::GET, "/hull/pods/json") => Ok(pods::list(daemon, scope)),
        (method, p) if p == "/sg" || p.starts_with("/sg/") => {
            super::sg::route(daemon, scope, method, p, request).await
        }
        (method, p) if p.starts_with("/hull/pods/") => {
            pods::route(daemon, scope, method, p, request).await
        }
        (&Method::GET, "/hull/usage") => {
            super::usage::report(daemon, &request, Some(&tenant.0)).await
        }
        (_, p) if p == "/crons" || p.starts_with("/crons/") => {
            super::crons::route(daemon, Some(&tenant.0), request).await
        }
        (_, p) if p == "/funcs" || p.starts_with("/funcs/") => {
            super::funcs::route(daemon, Some(&tenant.0), request).await
        }
        (_, p) if p.starts_with("/hull/admin/") => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the admin API is served only on hulld's Unix socket",
        )),
        _ => Err(refused(&method, &path)),
    }
}

fn refused(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        format!("{method} {path} is not open to tenants on this host yet"),
    )
}
