//! `POST /auth`: checks credentials against a registry, as `docker login`
//! asks the daemon to. Storing them is the client's part.

use super::RequestBody;
use hull_image::registry::{ClientError, Credentials};
use hyper::{Request, Response, StatusCode};

use super::{error_chain, json_response, ApiError, Body};
use crate::types::{AuthConfig, AuthResponse};

/// The registry domain of a login's server address: docker sends Docker
/// Hub's as `https://index.docker.io/v1/`, others as `host[:port]`.
pub fn registry_domain(server_address: &str) -> String {
    let host = server_address
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
            hull_image::reference::DEFAULT_DOMAIN.to_owned()
        }
        other => other.to_owned(),
    }
}

/// `client` is the daemon's own registry client, or the tenants' one.
pub(super) async fn login(
    client: &hull_image::registry::RegistryClient,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let body = super::body_bytes(&mut request).await?;
    let config: AuthConfig =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid login request: {e}")))?;
    if config.username.is_empty() {
        return Err(bad("a username is required to log in".into()));
    }
    let domain = registry_domain(&config.server_address);
    let mut credentials = Credentials::new(&config.username, &config.password);
    credentials.server_address = domain.clone();
    client.login(&domain, credentials).await.map_err(|err| {
        let status = match err {
            ClientError::LoginRefused { .. } => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error_chain(&err))
    })?;
    tracing::info!(registry = %domain, user = %config.username, "login succeeded");
    Ok(json_response(
        StatusCode::OK,
        &AuthResponse {
            status: "Login Succeeded".into(),
            identity_token: String::new(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_name_registry_domains() {
        assert_eq!(registry_domain("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            registry_domain("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_domain("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_domain(""), "docker.io");
    }
}
