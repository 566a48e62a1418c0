//! `POST /images/create?fromSrc=…` (`docker import`): a tar (plain, gzip
//! or zstd) as a one-layer image, with `changes` applied to its config.
//!
//! `fromSrc=-` takes the request's body, spooled to the store's staging
//! directory (from a tenant, streamed and held to the hash it was signed
//! with) and checked whole before anything is stored. A URL is fetched
//! only for the operator: a tenant may never make hulld reach a host.

use hull_image::{ImageConfig, NewImage};
use hyper::{Request, Response, StatusCode};

use super::images::{drain, spool_body};
use super::new_image::{self, apply_changes, target};
use super::pull::line;
use super::scope::Scope;
use super::{error_chain, ApiError, Body, RequestBody};
use crate::daemon::Daemon;
use crate::types::ProgressLine;

/// Whether a `POST /images/create` is an import rather than a pull.
pub(super) fn is_import(uri: &hyper::Uri) -> bool {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).any(|(key, _)| key == "fromSrc")
}

/// `POST /images/create?fromSrc=-|URL&repo=…&tag=…&changes=…&message=…`.
pub(super) async fn import(
    daemon: &Daemon,
    scope: Scope<'_>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let values = |key| new_image::query_all(&request, key);
    let first = |key| values(key).into_iter().next();
    let source = first("fromSrc").unwrap_or_default();
    let target = target(first("repo").as_deref(), first("tag").as_deref())?;
    let message = first("message").unwrap_or_default();
    if let Some(platform) = first("platform").filter(|p| !p.is_empty()) {
        if !platform.starts_with("linux") {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("this host imports linux images only, not {platform}"),
            ));
        }
    }
    let mut config = ImageConfig::default();
    apply_changes(&mut config, &values("changes"))?;
    let remote = match source.as_str() {
        "" => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "fromSrc is required: - for the request's body, or a URL",
            ))
        }
        "-" => false,
        _ if matches!(scope, Scope::Tenant(_)) => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a tenant imports only what it sends: use fromSrc=- with the archive as the body (hulld fetches no URL for tenants)",
            ))
        }
        _ => true,
    };
    if let Err(refused) = new_image::check_room(daemon, scope, target.as_deref()) {
        drain(request.into_body()).await;
        return Err(refused);
    }

    let staging = new_image::staging(daemon, "import-").await?;
    let layer = staging.path().join("layer");
    let budget = daemon.images().upload_budget(staging.path());
    if remote {
        hull_image::source::download(&source, &layer, budget)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, error_chain(&e)))?;
    } else {
        spool_body(request.into_body(), &layer, budget).await?;
    }
    let comment = match message.is_empty() {
        true => format!("Imported from {source}"),
        false => message,
    };
    let new = NewImage {
        config,
        created: new_image::now(),
        created_by: String::new(),
        comment,
        author: String::new(),
        container: None,
    };
    let images = daemon.images().clone();
    let created = tokio::task::spawn_blocking(move || {
        let made = images.create_image(None, &layer, &new);
        drop(staging);
        made
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the import failed"))?;
    let id = created
        .map_err(|e| new_image::layer_error("cannot import the archive", e))?
        .to_string();
    new_image::keep(daemon, scope, &id, target).await?;
    tracing::info!(image = %id, source = %source, "imported");
    // Docker's answer: a progress stream whose status is the image id.
    let status = line(&ProgressLine {
        status: Some(id),
        ..Default::default()
    });
    let mut response = Response::new(super::full(status));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
