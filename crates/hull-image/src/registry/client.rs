//! HTTP to one registry repository: URL building, authentication on demand
//! (anonymous, basic, bearer tokens fetched on a 401 challenge), manifests
//! and blob requests.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, RANGE, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;

use super::auth::{Challenge, Credentials, TokenResponse};
use super::manifest;
use super::mirror::{Mirror, MirrorError};
use super::reach::Reach;
use super::RegistryConfig;
use crate::digest::Digest;
use crate::reference::Reference;

use crate::limits::MAX_MANIFEST;

/// Largest error body read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Largest token document: tokens are a few KiB.
const MAX_TOKEN_BODY: u64 = 1 << 20;

/// Errors of talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach registry {registry}")]
    Http {
        registry: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("registry {registry} answered {status} to {what}{}", detail(.message))]
    Status {
        registry: String,
        what: String,
        status: StatusCode,
        message: String,
    },
    #[error("access to {repository} on {registry} was denied{}: log in or check the credentials", detail(.message))]
    Unauthorized {
        registry: String,
        repository: String,
        message: String,
    },
    #[error("login to {registry} was refused{}: check the username and password", detail(.message))]
    LoginRefused { registry: String, message: String },
    #[error("manifest for {reference} not found")]
    ManifestNotFound { reference: String },
    #[error("cannot get a token for {repository} from {realm}")]
    Token {
        realm: String,
        repository: String,
        #[source]
        source: Box<ClientError>,
    },
    #[error("the token server {realm} answered without a token")]
    NoToken { realm: String },
    #[error("the token server {realm} answered with no valid token document (JSON of at most {MAX_TOKEN_BODY} bytes)")]
    TokenBody { realm: String },
    #[error("the manifest of {reference} is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge { reference: String },
    #[error("the manifest of {reference} has digest {actual}, not the {expected} asked for")]
    ManifestDigest {
        reference: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("cannot build an HTTP client")]
    Build(#[source] reqwest::Error),
    #[error(transparent)]
    NotPublic(#[from] super::reach::NotPublic),
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The HTTP client shared by all registry operations of a daemon.
#[derive(Clone, Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    reach: Reach,
    config: RegistryConfig,
    /// Shared by every clone and replaceable while pulls run, as docker
    /// reloads its `registry-mirrors` without a restart.
    mirrors: Arc<RwLock<Vec<Mirror>>>,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<RegistryClient, ClientError> {
        Self::with_reach(config, Reach::Any)
    }

    /// A client that reaches only what `reach` allows, whatever address a
    /// registry, its token realm or a redirect names.
    pub fn with_reach(config: RegistryConfig, reach: Reach) -> Result<RegistryClient, ClientError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("hull/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .redirect(reach.redirect_policy());
        if let Some(resolver) = reach.resolver() {
            builder = builder.dns_resolver(resolver);
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(RegistryClient {
            http,
            reach,
            config,
            mirrors: Arc::default(),
        })
    }

    /// Makes pulls of Docker Hub images try the mirrors at `urls`, in order,
    /// first (see [`Mirror::parse`]); with none, they go to Docker Hub alone.
    pub fn set_mirrors(&self, urls: &[impl AsRef<str>]) -> Result<(), MirrorError> {
        let mirrors = urls
            .iter()
            .map(|url| Mirror::parse(url.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        for mirror in &mirrors {
            tracing::info!(mirror = %mirror.base, "registry mirror");
        }
        *self.mirrors.write().unwrap_or_else(|e| e.into_inner()) = mirrors;
        Ok(())
    }

    /// Sessions with the mirrors' copies of the repository `reference` names:
    /// none unless it is on the default domain. A mirror gets only its own
    /// configured credentials, never Docker Hub's.
    pub fn mirror_repositories(&self, reference: &Reference) -> Vec<Repository> {
        if reference.domain() != crate::reference::DEFAULT_DOMAIN {
            return Vec::new();
        }
        let mirrors = self.mirrors.read().unwrap_or_else(|e| e.into_inner());
        mirrors
            .iter()
            .map(|mirror| Repository {
                http: self.http.clone(),
                reach: self.reach.clone(),
                base: mirror.base.clone(),
                domain: mirror.domain.clone(),
                path: reference.path().to_owned(),
                credentials: self.config.credentials_for(&mirror.domain).cloned(),
                auth: Mutex::new(None),
            })
            .collect()
    }

    /// This client, reaching `domain` over plain HTTP as well.
    pub fn with_insecure(&self, domain: &str) -> RegistryClient {
        let mut client = self.clone();
        client.config.insecure.push(domain.to_owned());
        client
    }

    /// A session with the repository `reference` names, with `credentials`
    /// if given, else those configured for its registry.
    pub fn repository(
        &self,
        reference: &Reference,
        credentials: Option<Credentials>,
    ) -> Repository {
        let credentials =
            credentials.or_else(|| self.config.credentials_for(reference.domain()).cloned());
        self.repository_as(reference, credentials)
    }

    /// A session with the repository `reference` names, with exactly
    /// `credentials` (none: anonymous), never those configured: a tenant's.
    pub fn repository_as(
        &self,
        reference: &Reference,
        credentials: Option<Credentials>,
    ) -> Repository {
        let domain = reference.domain().to_owned();
        Repository {
            http: self.http.clone(),
            reach: self.reach.clone(),
            base: self.config.base_url(&domain),
            domain,
            path: reference.path().to_owned(),
            credentials,
            auth: Mutex::new(None),
        }
    }
}

impl RegistryClient {
    /// Checks `credentials` against the registry at `domain` as `docker login`
    /// does: `GET /v2/`, answering a basic or bearer challenge.
    pub async fn login(&self, domain: &str, credentials: Credentials) -> Result<(), ClientError> {
        let registry = Repository {
            http: self.http.clone(),
            reach: self.reach.clone(),
            base: self.config.base_url(domain),
            domain: domain.to_owned(),
            path: String::new(),
            credentials: Some(credentials),
            auth: Mutex::new(None),
        };
        let url = format!("{}/v2/", registry.base);
        let refused = |message| ClientError::LoginRefused {
            registry: domain.to_owned(),
            message,
        };
        let checked = match registry.send(Method::GET, &url, HeaderMap::new()).await {
            Ok(response) => registry.check(response, "the login").await.map(drop),
            Err(err) => Err(err),
        };
        checked.map_err(|err| match err {
            ClientError::Unauthorized { message, .. } => refused(message),
            ClientError::Token { source, .. }
                if matches!(*source, ClientError::Unauthorized { .. }) =>
            {
                refused(String::new())
            }
            other => other,
        })
    }
}

/// How requests are authorized, once a challenge said how.
#[derive(Clone, Debug)]
enum Auth {
    Basic,
    Bearer(String),
}

/// One repository of one registry, with the authorization it has earned.
#[derive(Debug)]
pub struct Repository {
    http: reqwest::Client,
    reach: Reach,
    base: String,
    domain: String,
    path: String,
    credentials: Option<Credentials>,
    auth: Mutex<Option<Auth>>,
}

impl Repository {
    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// `<base>/v2/<name>/manifests/<tag or digest>`.
    pub fn manifest_url(&self, tag_or_digest: &str) -> String {
        format!("{}/v2/{}/manifests/{tag_or_digest}", self.base, self.path)
    }

    /// `<base>/v2/<name>/blobs/<digest>`.
    pub fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base, self.path)
    }

    /// Fetches a manifest by tag or digest: its bytes, media type and digest.
    /// A manifest asked for by digest must have that digest.
    pub async fn manifest(
        &self,
        reference: &str,
        tag_or_digest: &str,
    ) -> Result<(Bytes, Option<String>, Digest), ClientError> {
        let url = self.manifest_url(tag_or_digest);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        let response = self.send(Method::GET, &url, headers).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ClientError::ManifestNotFound {
                reference: reference.to_owned(),
            });
        }
        let response = self
            .check(response, &format!("the manifest of {reference}"))
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_capped(response, MAX_MANIFEST)
            .await
            .map_err(|e| self.http_err(e))?
            .ok_or_else(|| ClientError::ManifestTooLarge {
                reference: reference.to_owned(),
            })?;
        let digest = Digest::of(&bytes);
        if let Ok(expected) = tag_or_digest.parse::<Digest>() {
            if expected != digest {
                return Err(ClientError::ManifestDigest {
                    reference: reference.to_owned(),
                    expected,
                    actual: digest,
                });
            }
        }
        Ok((bytes, content_type, digest))
    }

    /// Starts the download of a blob from byte `offset`; the answer is checked
    /// for success (200, or 206 when resuming), its body not yet read.
    pub async fn blob(&self, digest: &Digest, offset: u64) -> Result<Response, ClientError> {
        let mut headers = HeaderMap::new();
        if offset > 0 {
            let range = HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii");
            headers.insert(RANGE, range);
        }
        let response = self
            .send(Method::GET, &self.blob_url(digest), headers)
            .await?;
        self.check(response, &format!("blob {digest}")).await
    }

    /// `<base>/v2/<name>/blobs/uploads/`.
    pub fn upload_url(&self) -> String {
        format!("{}/v2/{}/blobs/uploads/", self.base, self.path)
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Response, ClientError> {
        self.send_with(method, url, headers, None).await
    }

    /// Sends a request with the authorization earned so far and no retry: for
    /// bodies that cannot be sent twice.
    pub(crate) async fn send_stream(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<Response, ClientError> {
        let auth = self.auth.lock().await.clone();
        let request = self.http.request(method, url).headers(headers).body(body);
        self.execute(self.authorize(request, auth.as_ref())).await
    }

    /// Sends a request, answering one authentication challenge if it gets one.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, ClientError> {
        let request = || {
            let request = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            match &body {
                Some(body) => request.body(body.clone()),
                None => request,
            }
        };
        let auth = self.auth.lock().await.clone();
        let response = self
            .execute(self.authorize(request(), auth.as_ref()))
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse);
        let Some(challenge) = challenge else {
            return Ok(response);
        };
        let auth = match challenge {
            Challenge::Basic if self.credentials.is_some() => Auth::Basic,
            Challenge::Basic => return Ok(response),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Auth::Bearer(self.token(&realm, service, scope).await?),
        };
        tracing::debug!(registry = %self.domain, repository = %self.path, "authenticated");
        *self.auth.lock().await = Some(auth.clone());
        self.execute(self.authorize(request(), Some(&auth))).await
    }

    fn authorize(&self, request: RequestBuilder, auth: Option<&Auth>) -> RequestBuilder {
        match (auth, &self.credentials) {
            (Some(Auth::Bearer(token)), _) => request.bearer_auth(token),
            (Some(Auth::Basic), Some(c)) => request.basic_auth(&c.username, Some(&c.password)),
            _ => request,
        }
    }

    /// Fetches a bearer token for the challenge's scope (or pulling this repository).
    async fn token(
        &self,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
    ) -> Result<String, ClientError> {
        // A login asks for a token of no scope, as docker's does.
        let scope = scope
            .or_else(|| (!self.path.is_empty()).then(|| format!("repository:{}:pull", self.path)));
        let mut query: Vec<(&str, String)> = scope.map(|s| ("scope", s)).into_iter().collect();
        if let Some(service) = service {
            query.push(("service", service));
        }
        let token_err = |source| ClientError::Token {
            realm: realm.to_owned(),
            repository: self.path.clone(),
            source: Box::new(source),
        };
        let mut request = self.http.get(realm).query(&query);
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = self.execute(request).await.map_err(token_err)?;
        let response = self
            .check(response, "the token request")
            .await
            .map_err(token_err)?;
        let body = read_capped(response, MAX_TOKEN_BODY)
            .await
            .map_err(|e| token_err(self.http_err(e)))?;
        let body: TokenResponse = body
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ClientError::TokenBody {
                realm: realm.to_owned(),
            })?;
        body.into_token().ok_or_else(|| ClientError::NoToken {
            realm: realm.to_owned(),
        })
    }

    async fn execute(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let request = request.build().map_err(|e| self.http_err(e))?;
        self.reach.check_url(request.url().as_str())?;
        self.http
            .execute(request)
            .await
            .map_err(|e| self.http_err(e))
    }

    pub(crate) fn http_err(&self, source: reqwest::Error) -> ClientError {
        ClientError::Http {
            registry: self.domain.clone(),
            source,
        }
    }

    /// Passes successes through; turns failures into errors carrying the registry's message.
    pub(crate) async fn check(
        &self,
        response: Response,
        what: &str,
    ) -> Result<Response, ClientError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_capped(response, MAX_ERROR_BODY).await;
        let message = error_message(&body.ok().flatten().unwrap_or_default());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ClientError::Unauthorized {
                registry: self.domain.clone(),
                repository: self.path.clone(),
                message,
            },
            _ => ClientError::Status {
                registry: self.domain.clone(),
                what: what.to_owned(),
                status,
                message,
            },
        })
    }
}

/// A response's body, read as it streams in; `None` if it passes `limit`
/// bytes, which are all it ever holds.
pub(crate) async fn read_capped(
    mut response: Response,
    limit: u64,
) -> Result<Option<Bytes>, reqwest::Error> {
    if response.content_length().is_some_and(|l| l > limit) {
        return Ok(None);
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// The messages of a distribution-spec error body (`{"errors":[{"code","message"}]}`).
pub fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Errors>(body) {
        Ok(e) => e
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{} ({})", e.message, e.code),
                (true, _) => e.message.clone(),
                (false, true) => e.code.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_distribution_spec() {
        let client = RegistryClient::new(RegistryConfig::default()).unwrap();
        let repo = client.repository(&Reference::parse("busybox:1.36").unwrap(), None);
        assert_eq!(
            repo.manifest_url("1.36"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/1.36"
        );
        let local = client.repository(&Reference::parse("127.0.0.1:5000/a/b").unwrap(), None);
        let digest = Digest::of(b"");
        assert_eq!(
            local.blob_url(&digest),
            format!("http://127.0.0.1:5000/v2/a/b/blobs/{digest}")
        );
    }

    #[test]
    fn a_session_as_someone_never_borrows_the_configured_credentials() {
        let client = RegistryClient::new(RegistryConfig {
            credentials: vec![("127.0.0.1:5000".into(), Credentials::new("op", "secret"))],
            ..Default::default()
        })
        .unwrap();
        let reference = Reference::parse("127.0.0.1:5000/private/app").unwrap();
        assert!(client.repository(&reference, None).credentials.is_some());
        assert!(client.repository_as(&reference, None).credentials.is_none());
        let own = Credentials::new("tenant", "pw");
        let theirs = client.repository_as(&reference, Some(own));
        assert_eq!(
            theirs.credentials.map(|c| c.username),
            Some("tenant".to_owned())
        );
    }

    #[test]
    fn registry_error_bodies_become_messages() {
        assert_eq!(
            error_message(br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#),
            "authentication required (UNAUTHORIZED)"
        );
        assert_eq!(error_message(b"plain text\n"), "plain text");
    }
}
