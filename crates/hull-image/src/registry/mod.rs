//! A client of the OCI distribution spec (v2): resolving references to
//! manifests, token and basic authentication, verified blob downloads,
//! pulling whole images into the store and pushing them out of it.
//!
//! Unlike the rest of the crate this part is async: it runs on the daemon's
//! tokio runtime and reaches the blocking store through `spawn_blocking`.

pub mod auth;
#[cfg(test)]
mod bounds_tests;
pub mod client;
mod download;
pub(crate) mod inflight;
pub mod manifest;
pub mod mirror;
pub mod pull;
pub mod push;
pub mod reach;
mod streamed;
#[cfg(test)]
mod transfer_tests;

use std::net::IpAddr;

pub use auth::{Credentials, CredentialsError};
pub use client::{ClientError, RegistryClient, Repository};
pub use mirror::{Mirror, MirrorError};
pub use pull::{pull, pull_with, PullError, PullEvent, PullOptions, Pulled};
pub use push::{push, PushError, Pushed};
pub use reach::Reach;

/// The host serving the default domain's API.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// How Hull reaches registries: which may be spoken to in plain HTTP, and
/// which credentials to present.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Registries (`host[:port]`) reached over plain HTTP although not on loopback.
    pub insecure: Vec<String>,
    /// Credentials per registry domain.
    pub credentials: Vec<(String, Credentials)>,
}

impl RegistryConfig {
    /// The credentials configured for `domain`.
    pub fn credentials_for(&self, domain: &str) -> Option<&Credentials> {
        self.credentials
            .iter()
            .find(|(d, _)| d == domain || (is_docker_hub(d) && is_docker_hub(domain)))
            .map(|(_, c)| c)
    }

    /// The base URL (`scheme://host[:port]`) of a registry domain's API.
    pub fn base_url(&self, domain: &str) -> String {
        let host = if domain == crate::reference::DEFAULT_DOMAIN {
            DOCKER_HUB_HOST
        } else {
            domain
        };
        let plain = is_loopback(host) || self.insecure.iter().any(|i| i == domain || i == host);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }
}

fn is_docker_hub(domain: &str) -> bool {
    matches!(
        domain,
        "docker.io" | "index.docker.io" | DOCKER_HUB_HOST | "https://index.docker.io/v1/"
    )
}

/// Whether `host[:port]` names this machine: `localhost`, 127.0.0.0/8 or ::1.
/// Like docker, such registries are spoken to in plain HTTP.
pub fn is_loopback(domain: &str) -> bool {
    let host = match domain.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => domain.rsplit_once(':').map_or(domain, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') {
                h
            } else {
                domain
            }
        }),
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_io_is_served_by_registry_1() {
        let config = RegistryConfig::default();
        assert_eq!(config.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(config.base_url("quay.io"), "https://quay.io");
    }

    #[test]
    fn loopback_registries_speak_plain_http() {
        let config = RegistryConfig::default();
        for domain in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "[::1]:5000",
        ] {
            assert!(config.base_url(domain).starts_with("http://"), "{domain}");
        }
        assert!(config.base_url("10.0.0.1:5000").starts_with("https://"));
    }

    #[test]
    fn insecure_registries_speak_plain_http() {
        let config = RegistryConfig {
            insecure: vec!["registry.lan:5000".into()],
            ..Default::default()
        };
        assert_eq!(
            config.base_url("registry.lan:5000"),
            "http://registry.lan:5000"
        );
        assert!(config.base_url("registry.lan").starts_with("https://"));
    }

    #[test]
    fn docker_hub_credentials_match_any_of_its_names() {
        let config = RegistryConfig {
            credentials: vec![(
                "https://index.docker.io/v1/".into(),
                Credentials::new("u", "p"),
            )],
            ..Default::default()
        };
        assert!(config.credentials_for("docker.io").is_some());
        assert!(config.credentials_for("quay.io").is_none());
    }
}
