//! The HTTP server: routing, Docker-shaped errors, and one module per resource.

mod admin;
mod archive;
mod attach;
mod attach_ws;
mod auth;
mod commit;
pub mod connections;
pub(crate) mod containers;
pub(crate) mod crons;
mod detach;
mod distribution;
mod events;
mod exec;
mod fips;
mod funcs;
mod images;
mod import;
mod networks;
mod new_image;
mod pods;
mod pull;
mod push;
mod run;
mod save;
pub(crate) mod scope;
mod services;
pub(crate) mod sg;
mod stats;
pub(crate) mod stream;
mod system;
mod templates;
mod tenancy;
mod tenant;
mod tenant_containers;
mod tenant_images;
pub(crate) mod tenant_net;
mod tenant_pods;
mod top;
mod usage;
mod volumes;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hull_image::{StoreError, TagError};
use hull_runtime::RunError;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tracing::debug;

pub use auth::registry_domain;
pub use tenancy::Admission;
pub use tenant::{serve_tenants, Tenant, MAX_SIGNED_BODY, TEST_CLOCK_ENV};
pub use tenant_containers::{DEFAULT_SIZE, SIZE_LABEL};

use crate::daemon::Daemon;
use crate::metrics::Listener;
use crate::types::ErrorBody;
use crate::DOCKER_API_VERSION;

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;
/// A request's body: hyper's own from the Unix socket, or one the tenant
/// listener has already read and checked against its signature.
pub(crate) type RequestBody = BoxBody<Bytes, BodyError>;
/// Why a request's body could not be read: the connection's error, or a
/// streamed body that did not match its signed hash.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// An error answered in the Engine API's shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
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

/// Builds the erofs rootfs of new images in the background, so that their
/// first run does not wait for it.
pub(crate) fn prebuild_rootfs(images: Arc<hull_image::ImageStore>, ids: Vec<String>) {
    tokio::task::spawn_blocking(move || {
        for id in ids {
            let built = images.resolve(&id).and_then(|image| images.rootfs(&image));
            if let Err(err) = built {
                tracing::warn!(image = %id, error = %error_chain(&err), "cannot build the rootfs ahead of a run");
            }
        }
    });
}

pub use hull_runtime::error_chain;

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        let status = match error {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Tag(TagError::MultipleTags { .. } | TagError::InUse { .. }) => {
                StatusCode::CONFLICT
            }
            StoreError::Archive(_)
            | StoreError::Reference(_)
            | StoreError::Ambiguous { .. }
            | StoreError::Tag(_) => StatusCode::BAD_REQUEST,
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
            // The host is full: the client may try again once VMs end.
            RunError::Admission(refused) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, refused.to_string())
            }
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&other)),
        }
    }
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub(crate) fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let mut response = Response::new(full(serde_json::to_vec(body).expect("API types serialize")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// How long the server pauses after a failed accept: out of descriptors
/// (EMFILE) or memory, accepting again at once would spin.
pub(crate) const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves the API on `listener` until the process ends. A failed accept
/// is logged and retried: one client too many must not end the daemon.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) -> std::io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept an API connection; retrying");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let daemon = daemon.clone();
                let request = request.map(|body| body.map_err(BodyError::from).boxed());
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
pub(super) fn strip_version(path: &str) -> &str {
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

async fn route(daemon: Arc<Daemon>, request: Request<RequestBody>) -> Response<Body> {
    let path = strip_version(request.uri().path()).to_string();
    let method = request.method().clone();
    let result = match (&method, path.as_str()) {
        (&Method::GET | &Method::HEAD, "/_ping") => Ok(system::ping()),
        (&Method::GET, "/version") => Ok(system::version()),
        (&Method::GET, "/info") => system::info(&daemon).await,
        (&Method::GET, "/images/json") => images::list(&daemon).await,
        (&Method::POST, "/images/load") => images::load(&daemon, request).await,
        (&Method::POST, "/images/create") if import::is_import(request.uri()) => {
            import::import(&daemon, scope::Scope::Operator, request).await
        }
        (&Method::POST, "/images/create") => pull::create(&daemon, request).await,
        (&Method::POST, "/commit") => {
            commit::commit(&daemon, scope::Scope::Operator, request).await
        }
        (&Method::POST, "/images/prune") => images::prune(&daemon, &request).await,
        (&Method::GET, "/system/df") => system::df(&daemon).await,
        (&Method::POST, "/auth") => auth::login(daemon.registry(), request).await,
        (&Method::POST, p) if p.starts_with("/images/") && p.ends_with("/push") => {
            push::push(&daemon, p, request).await
        }
        (&Method::POST, p) if p.starts_with("/images/") && p.ends_with("/tag") => {
            images::tag(&daemon, p, &request).await
        }
        (&Method::GET, p)
            if p == "/images/get" || (p.starts_with("/images/") && p.ends_with("/get")) =>
        {
            save::save(&daemon, p, &request).await
        }
        (&Method::GET, p) if p.starts_with("/images/") && p.ends_with("/history") => {
            images::history(&daemon, p).await
        }
        (&Method::GET, p) if p.starts_with("/images/") && p.ends_with("/json") => {
            images::inspect(&daemon, p).await
        }
        (&Method::DELETE, p) if p.starts_with("/images/") => {
            images::remove(&daemon, p, &request).await
        }
        (&Method::GET, "/hull/usage" | "/hull/admin/usage") => {
            usage::report(&daemon, &request, None).await
        }
        (_, p) if p.starts_with("/hull/admin/") => admin::route(&daemon, &method, p, request).await,
        (&Method::POST, "/hull/run") => run::start(&daemon, request).await,
        (&Method::GET, "/hull/templates") => Ok(templates::list(&daemon)),
        (&Method::POST, "/hull/templates") => templates::create(&daemon, request).await,
        (&Method::GET, "/hull/pool") => Ok(templates::pool(&daemon)),
        (&Method::POST, "/hull/pods/create") => pods::create(&daemon, request).await,
        (&Method::GET, "/hull/pods/json") => Ok(pods::list(&daemon, scope::Scope::Operator)),
        (method, p) if p.starts_with("/hull/pods/") => {
            pods::route(&daemon, scope::Scope::Operator, method, p, request).await
        }
        (&Method::DELETE, p) if p.starts_with("/hull/templates/") => {
            let (key, _) = split_resource(p, "/hull/templates/");
            templates::remove(&daemon, &key)
        }
        (&Method::POST, "/containers/create") => containers::create(&daemon, request).await,
        (&Method::GET, "/containers/json") => {
            containers::list(&daemon, &request, scope::Scope::Operator).await
        }
        (&Method::GET, "/events") => {
            events::events(&daemon, &request, scope::Scope::Operator).await
        }
        (&Method::POST, "/containers/prune") => containers::prune(&daemon).await,
        (&Method::GET, "/networks") => networks::list(&daemon, &request, scope::Scope::Operator),
        (&Method::POST, "/networks/create") => networks::create(&daemon, request).await,
        (&Method::POST, "/networks/prune") => networks::prune(&daemon, &request),
        (method, p) if p.starts_with("/networks/") => {
            let (reference, action) = split_resource(p, "/networks/");
            match (method, action) {
                (&Method::GET, "") => {
                    networks::inspect(&daemon, &reference, scope::Scope::Operator)
                }
                (&Method::DELETE, "") => networks::remove(&daemon, &reference),
                (&Method::POST, "connect") => networks::connect(&daemon, &reference, request).await,
                (&Method::POST, "disconnect") => {
                    networks::disconnect(&daemon, &reference, request).await
                }
                _ => Err(not_found(method, p)),
            }
        }
        (_, p) if p.starts_with("/volumes") || p.starts_with("/hull/volumes/") => {
            volumes::route(&daemon, request, scope::Scope::Operator).await
        }
        (_, p) if p == "/crons" || p.starts_with("/crons/") => {
            crons::route(&daemon, None, request).await
        }
        (_, p) if p == "/funcs" || p.starts_with("/funcs/") => {
            funcs::route(&daemon, None, request).await
        }
        (method, p) if p == "/sg" || p.starts_with("/sg/") => {
            sg::route(&daemon, scope::Scope::Operator, method, p, request).await
        }
        (_, p) if p == "/fips" || p.starts_with("/fips/") => {
            fips::route(&daemon, scope::Scope::Operator, request).await
        }
        (_, p) if p == "/services" || p.starts_with("/services/") => {
            services::route(&daemon, scope::Scope::Operator, request).await
        }
        (_, p) if p.starts_with("/containers/") => {
            let (reference, action) = split_resource(p, "/containers/");
            let (reference, action) = link_form(&method, &request, reference, action);
            let scope = scope::Scope::Operator;
            container_route(&daemon, &method, &reference, action, request, scope).await
        }
        (_, p) if p.starts_with("/exec/") => {
            let (id, action) = split_resource(p, "/exec/");
            match (&method, action) {
                (&Method::POST, "start") => exec::start(&daemon, &id, request).await,
                (&Method::GET, "json") => exec::inspect(&daemon, &id),
                (&Method::POST, "resize") => exec::resize(&daemon, &id, &request).await,
                _ => Err(not_found(&method, &path)),
            }
        }
        (&Method::GET, p) if p.starts_with("/distribution/") && p.ends_with("/json") => {
            distribution::inspect(&daemon, p, &request).await
        }
        (_, p) if system::is_swarm(p) => Err(system::not_in_swarm()),
        _ => Err(not_found(&method, &path)),
    };
    let mut response = result.unwrap_or_else(ApiError::into_response);
    response
        .headers_mut()
        .insert("Api-Version", HeaderValue::from_static(DOCKER_API_VERSION));
    daemon
        .metrics()
        .request(Listener::Unix, &method, response.status());
    response
}

pub(super) fn not_found(method: &Method, path: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("page not found: {method} {path}"),
    )
}

/// `/containers/{reference}/{action}` → the percent-decoded reference and the action.
pub(super) fn split_resource<'a>(path: &'a str, prefix: &str) -> (String, &'a str) {
    let rest = path.strip_prefix(prefix).unwrap_or("");
    let (reference, action) = rest.split_once('/').unwrap_or((rest, ""));
    let decoded = form_urlencoded::parse(format!("r={reference}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    (decoded, action)
}

/// Whether the request removes a link (`DELETE …?link=true`).
pub(super) fn removes_link<B>(method: &Method, request: &Request<B>) -> bool {
    method == Method::DELETE && containers::Query::of(request).flag("link")
}

/// `docker rm --link /web/db` asks `DELETE /containers//web/db?link=1`: the
/// container is then the first part of what follows the empty reference.
pub(super) fn link_form<'a, B>(
    method: &Method,
    request: &Request<B>,
    reference: String,
    action: &'a str,
) -> (String, &'a str) {
    if reference.is_empty() && removes_link(method, request) {
        let (container, alias) = action.split_once('/').unwrap_or((action, ""));
        return (container.to_owned(), alias);
    }
    (reference, action)
}

pub(super) async fn container_route(
    daemon: &Daemon,
    method: &Method,
    reference: &str,
    action: &str,
    request: Request<RequestBody>,
    scope: scope::Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    match (method, action) {
        (&Method::GET, "json") => containers::inspect(daemon, reference, scope),
        (&Method::POST, "start") => containers::start(daemon, reference).await,
        (&Method::POST, "stop") => containers::stop(daemon, reference, &request).await,
        (&Method::POST, "restart") => containers::restart(daemon, reference, &request).await,
        (&Method::POST, "kill") => containers::kill(daemon, reference, &request).await,
        (&Method::POST, "pause") => containers::pause(daemon, reference).await,
        (&Method::POST, "unpause") => containers::unpause(daemon, reference).await,
        (&Method::POST, "wait") => containers::wait(daemon, reference, &request, scope).await,
        (&Method::POST, "rename") => containers::rename(daemon, reference, &request),
        (&Method::POST, "update") => containers::update(daemon, reference, request).await,
        (&Method::POST, "resize") => containers::resize(daemon, reference, &request).await,
        (&Method::GET, "logs") => containers::logs(daemon, reference, &request).await,
        (&Method::POST, "attach") => attach::attach(daemon, reference, request).await,
        (&Method::GET | &Method::POST, "attach/ws") => {
            attach_ws::attach(daemon, reference, request).await
        }
        (&Method::POST, "exec") => exec::create(daemon, reference, request).await,
        (&Method::DELETE, alias) if removes_link(method, &request) => {
            containers::remove_link(daemon, reference, alias).await
        }
        (&Method::DELETE, "") => containers::remove(daemon, reference, &request).await,
        (&Method::GET, "top") => {
            let host_names = matches!(scope, scope::Scope::Operator);
            top::top(daemon, reference, &request, host_names).await
        }
        (&Method::GET, "stats") => stats::stats(daemon, reference, &request).await,
        (&Method::HEAD, "archive") => archive::stat(daemon, reference, &request).await,
        (&Method::GET, "archive") => archive::get(daemon, reference, &request).await,
        (&Method::PUT, "archive") => archive::put(daemon, reference, request).await,
        (&Method::GET, "export") => commit::export(daemon, reference).await,
        (&Method::GET, "changes") => containers::changes(daemon, reference).await,
        _ => Err(not_found(
            method,
            &format!("/containers/{reference}/{action}"),
        )),
    }
}

/// The whole body of a request; a client that breaks off sending it gets 400.
pub(super) async fn body_bytes(request: &mut Request<RequestBody>) -> Result<Bytes, ApiError> {
    Ok(request
        .body_mut()
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request failed: {e}"),
            )
        })?
        .to_bytes())
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "an image task failed"))?
        .map_err(ApiError::from)
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
