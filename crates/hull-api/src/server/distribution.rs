//! `GET /distribution/{name}/json`: an image's descriptor and platforms
//! as its registry has them, asked of the registry as docker asks (never
//! of the local store). A registry that cannot be reached is an error, as
//! it is to docker without the internet.

use hull_image::registry::manifest::{self, Document};
use hull_image::Reference;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::{error_chain, json_response, ApiError, Body, RequestBody};
use crate::daemon::Daemon;

/// The most bytes of an image config read for its platform.
const MAX_CONFIG: usize = 1 << 20;

/// `GET /distribution/{name}/json`, `path` without the API version.
pub(super) async fn inspect(
    daemon: &Daemon,
    path: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let encoded = path
        .strip_prefix("/distribution/")
        .and_then(|p| p.strip_suffix("/json"))
        .unwrap_or_default();
    let name: String = form_urlencoded::parse(format!("n={encoded}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let reference = Reference::parse(&name).map_err(|e| bad(e.to_string()))?;
    let credentials = super::pull::credentials(daemon, request, &reference)?;
    let repository = daemon.registry().repository(&reference, credentials);
    let wanted = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, Some(tag)) => tag.to_owned(),
        (None, None) => "latest".to_owned(),
    };
    let failed = |e: &(dyn std::error::Error + 'static)| {
        let status = match e.to_string() {
            text if text.contains("not found") => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error_chain(e))
    };
    let (bytes, content_type, digest) = repository
        .manifest(&name, &wanted)
        .await
        .map_err(|e| failed(&e))?;
    let document = manifest::parse(content_type.as_deref(), &bytes).map_err(|e| failed(&e))?;
    let (media_type, platforms) = match document {
        Document::Index(index) => {
            let platforms = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| platform(&p.os, &p.architecture, p.variant.as_deref()))
                .collect();
            (index.media_type, platforms)
        }
        Document::Manifest(image) => {
            // A single image's platform is in its config.
            let mut response = repository
                .blob(&image.config.digest, 0)
                .await
                .map_err(|e| failed(&e))?;
            let mut config = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
                config.extend_from_slice(&chunk);
                if config.len() > MAX_CONFIG {
                    return Err(ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!("the image config of {name} is larger than {MAX_CONFIG} bytes"),
                    ));
                }
            }
            let config: Value = serde_json::from_slice(&config).unwrap_or_default();
            let field = |key: &str| config[key].as_str().unwrap_or_default().to_owned();
            let variant = field("variant");
            let found = platform(
                &field("os"),
                &field("architecture"),
                Some(variant.as_str()).filter(|v| !v.is_empty()),
            );
            (image.media_type, vec![found])
        }
    };
    let media_type = media_type.or(content_type).unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "Descriptor": {"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()},
            "Platforms": platforms,
        }),
    ))
}

fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Value {
    let mut platform = json!({"architecture": architecture, "os": os});
    if let Some(variant) = variant {
        platform["variant"] = variant.into();
    }
    platform
}
