//! `/hull/templates` and `/hull/pool`: what fast starts are made of.

use http_body_util::BodyExt;
use hull_runtime::image_template::{ImageTemplateError, ImageTemplateInfo};
use hull_runtime::size::VmSize;
use hull_runtime::TemplateInfo;
use hyper::{Request, Response, StatusCode};

use super::{json_response, ApiError, Body, RequestBody};
use crate::daemon::Daemon;
use crate::types::{PoolStatus, TemplateCreate, TemplateSummary};
use crate::units::unix_seconds;

/// `GET /hull/templates`: the ready templates, one per size at most, then
/// the image templates, ready or being built. Asking boots nothing.
pub(super) fn list(daemon: &Daemon) -> Response<Body> {
    let Some(runtime) = daemon.started_runtime() else {
        return json_response(StatusCode::OK, &Vec::<TemplateSummary>::new());
    };
    let mut templates: Vec<TemplateSummary> = runtime
        .templates_by_size()
        .into_iter()
        .filter_map(|(size, templates)| {
            let info = templates.describe()?;
            Some(summary(size, Some(info), templates.key(), "ready"))
        })
        .collect();
    templates.extend(runtime.image_templates().into_iter().map(image_summary));
    json_response(StatusCode::OK, &templates)
}

fn summary(size: VmSize, info: Option<TemplateInfo>, key: &str, status: &str) -> TemplateSummary {
    TemplateSummary {
        key: key.to_owned(),
        dir: info
            .as_ref()
            .map(|i| i.dir.display().to_string())
            .unwrap_or_default(),
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        memory_bytes: info.as_ref().map_or(0, |i| i.memory_bytes),
        state_bytes: info.as_ref().map_or(0, |i| i.state_bytes),
        built: info.and_then(|i| i.built).map(unix_seconds),
        image: None,
        pinned: false,
        uses: 0,
        status: status.to_owned(),
    }
}

fn image_summary(template: ImageTemplateInfo) -> TemplateSummary {
    TemplateSummary {
        image: Some(format!("sha256:{}", template.image_id)),
        pinned: template.pinned,
        uses: template.uses,
        ..summary(
            template.size,
            template.template,
            &template.key,
            template.status,
        )
    }
}

/// The most a `POST /hull/templates` body may be.
const MAX_CREATE_BODY: usize = 64 << 10;

/// `POST /hull/templates` `{"Image": …, "Size": …}`: builds that image's
/// template, pinned, and answers once it is ready (a cold boot and the
/// rootfs's first reads: seconds under TCG).
pub(super) async fn create(
    daemon: &Daemon,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    // An image's name and a size: a few hundred bytes are plenty.
    let mut body = request.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request failed: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > MAX_CREATE_BODY {
            // Read on a little, so that the client sees why.
            super::images::drain(body).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request's body is refused: it takes at most {MAX_CREATE_BODY} bytes"),
            ));
        }
        bytes.extend_from_slice(&data);
    }
    let create: TemplateCreate = super::containers::parse_json(&bytes)?;
    let size = match create.size.as_deref() {
        None | Some("") => None,
        Some(name) => Some(
            hull_runtime::size::named(name)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?,
        ),
    };
    let runtime = super::containers::runtime(daemon).await?;
    let built = runtime.create_image_template(&create.image, size).await;
    let template = built.map_err(|err| {
        let status = match &err {
            ImageTemplateError::Image(hull_image::StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            ImageTemplateError::Off | ImageTemplateError::Full { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, hull_runtime::error_chain(&err))
    })?;
    Ok(json_response(StatusCode::CREATED, &image_summary(template)))
}

/// `DELETE /hull/templates/{key}`: a key prefix will do.
pub(super) fn remove(daemon: &Daemon, key: &str) -> Result<Response<Body>, ApiError> {
    let removed = daemon.started_runtime().is_some_and(|runtime| {
        runtime
            .templates_by_size()
            .iter()
            .any(|(_, templates)| templates.remove(key))
            || runtime.remove_image_template(key)
    });
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no such VM template: {key}"),
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "Deleted": key }),
    ))
}

/// `GET /hull/pool`: each size's pool.
pub(super) fn pool(daemon: &Daemon) -> Response<Body> {
    let pools: Vec<PoolStatus> = daemon
        .started_runtime()
        .map(|runtime| runtime.pool_status())
        .unwrap_or_default()
        .into_iter()
        .map(|pool| PoolStatus {
            size: pool.size.name().map(str::to_owned),
            vcpus: pool.size.vcpus,
            memory_mib: pool.size.memory_mib,
            target: pool.target,
            ready: pool.ready,
            primed: pool.primed,
        })
        .collect();
    json_response(StatusCode::OK, &pools)
}
