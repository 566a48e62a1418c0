//! A client of hulld's API, used by the `hull` CLI.

mod archive;
mod containers;
mod filters;
mod images;
mod pods;
mod socket;
mod transport;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hull_cloud::sign::Credentials;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;

use transport::Transport;

use crate::types::{ErrorBody, ProgressLine, RunSpec};
use crate::RUN_UPGRADE;

pub use containers::{ContainerStream, LogsOptions, PendingWait};
pub use filters::{flag_filters, FilterFlagError};
pub use images::CommitOptions;

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no hulld is listening on {}", .socket.display())]
    NoDaemon { socket: PathBuf },
    #[error("cannot connect to hulld at {}", .socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the connection to hulld failed")]
    Http(#[from] hyper::Error),
    /// hulld answered with an error; the message is its own.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("hulld sent a malformed answer")]
    Json(#[from] serde_json::Error),
    #[error("cannot write the output")]
    WriteOutput {
        #[source]
        source: std::io::Error,
    },
    #[error("{address} is not HOST:PORT")]
    Address { address: String },
    #[error("cannot set up TLS")]
    Tls(#[from] crate::tls::TlsError),
    #[error("a signed request's body is at most {limit} bytes")]
    Body {
        limit: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cannot read {}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Talks to one hulld, over its Unix socket or, as a tenant, over TLS with
/// signed requests; one connection per request.
#[derive(Clone)]
pub struct Client {
    transport: Transport,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            transport: Transport::Unix(socket.into()),
        }
    }

    /// A tenant's client of the listener at `authority` (`host:port`),
    /// trusting the CAs in `ca`, signing with `credentials`.
    pub fn tls(authority: &str, ca: &Path, credentials: Credentials) -> Result<Self, ClientError> {
        let host = match authority.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => authority,
        };
        let server_name =
            ServerName::try_from(host.to_owned()).map_err(|_| ClientError::Address {
                address: authority.to_owned(),
            })?;
        let config = crate::tls::client_config(ca)?;
        Ok(Self {
            transport: Transport::Tls(std::sync::Arc::new(transport::TlsTarget {
                authority: authority.to_owned(),
                server_name,
                connector: tokio_rustls::TlsConnector::from(config),
                credentials,
            })),
        })
    }

    /// Where this client's requests go.
    pub fn address(&self) -> String {
        self.transport.describe()
    }

    /// Whether it talks to a cloud's tenant listener rather than a local
    /// hulld's socket.
    pub fn is_remote(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        let request = self.transport.prepare(request).await?;
        let stream = self.transport.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender.send_request(request).await?)
    }

    fn request(method: Method, path: &str, body: Body) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "hulld")
            .body(body)
            .expect("static request parts are valid")
    }

    /// Fails with hulld's own message unless the status is a success.
    async fn check(response: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
        let status = response.status();
        if status.is_success() || status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(response);
        }
        let body = response.into_body().collect().await?.to_bytes();
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(ClientError::Api { status, message })
    }

    pub async fn ping(&self) -> Result<(), ClientError> {
        let response = self
            .send(Self::request(Method::GET, "/_ping", empty()))
            .await?;
        Self::check(response).await.map(drop)
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let response = self.send(Self::request(Method::GET, path, empty())).await?;
        let body = Self::check(response).await?.into_body().collect().await?;
        Ok(serde_json::from_slice(&body.to_bytes())?)
    }

    /// Sends `method path` with a JSON body (or none) and decodes the JSON answer;
    /// an empty answer decodes as `null`.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(value) => full(serde_json::to_vec(value)?),
            None => empty(),
        };
        let mut request = Self::request(method, path, body);
        request.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let response = Self::check(self.send(request).await?).await?;
        let bytes = response.into_body().collect().await?.to_bytes();
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Streams the `docker save` archive of `names` (an OCI layout when `oci`) into `out`.
    pub async fn save(
        &self,
        names: &[String],
        oci: bool,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(), ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for name in names {
            query.append_pair("names", name);
        }
        if oci {
            query.append_pair("format", "oci");
        }
        let path = format!("/images/get?{}", query.finish());
        self.download(&path, out).await
    }

    /// Streams the body of `GET path` into `out`.
    pub(crate) async fn download(
        &self,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(), ClientError> {
        use tokio::io::AsyncWriteExt;
        let response = self.send(Self::request(Method::GET, path, empty())).await?;
        let mut body = Self::check(response).await?.into_body();
        let write_err = |source| ClientError::WriteOutput { source };
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.write_all(&data).await.map_err(write_err)?;
            }
        }
        out.flush().await.map_err(write_err)
    }

    /// Sends `method path` with `body` as is; the answer's status and bytes,
    /// whatever the status (a function call's answer is its own).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), ClientError> {
        let response = self.send(Self::request(method, path, full(body))).await?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    /// Starts pulling `reference` (docker's `POST /images/create`); the
    /// progress lines come from the returned stream as the pull runs.
    /// `registry_auth` is an `X-Registry-Auth` value; `insecure` allows plain HTTP.
    pub async fn pull(
        &self,
        reference: &str,
        registry_auth: Option<&str>,
        insecure: bool,
    ) -> Result<ProgressStream, ClientError> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("fromImage", reference);
        if insecure {
            query.append_pair("insecure", "1");
        }
        let path = format!("/images/create?{}", query.finish());
        self.progress(&path, registry_auth).await
    }

    /// Starts pushing the stored image `name` (with its tag) to its registry
    /// (docker's `POST /images/{name}/push`); progress lines come as for a pull.
    pub async fn push(
        &self,
        name: &str,
        registry_auth: Option<&str>,
        insecure: bool,
    ) -> Result<ProgressStream, ClientError> {
        let mut path = format!("/images/{name}/push");
        if insecure {
            path.push_str("?insecure=1");
        }
        self.progress(&path, registry_auth).await
    }

    /// A `POST` answered with a JSON progress stream.
    async fn progress(
        &self,
        path: &str,
        registry_auth: Option<&str>,
    ) -> Result<ProgressStream, ClientError> {
        let mut request = Self::request(Method::POST, path, empty());
        if let Some(auth) = registry_auth {
            let value = HeaderValue::from_str(auth).map_err(|_| ClientError::Api {
                status: StatusCode::BAD_REQUEST,
                message: "the registry credentials are not a valid header value".into(),
            })?;
            request.headers_mut().insert("X-Registry-Auth", value);
        }
        let response = Self::check(self.send(request).await?).await?;
        Ok(ProgressStream {
            body: response.into_body(),
            buffer: Vec::new(),
        })
    }

    /// Starts a run and returns the upgraded stream that carries its stdio.
    pub async fn run(&self, spec: &RunSpec) -> Result<TokioIo<Upgraded>, ClientError> {
        let body = full(serde_json::to_vec(spec)?);
        let (stream, _) = self.upgrade("/hull/run", body, RUN_UPGRADE).await?;
        Ok(stream)
    }

    /// Sends a `POST` that takes over the connection; returns the stream and
    /// the content type of the answer.
    async fn upgrade(
        &self,
        path: &str,
        body: Body,
        protocol: &'static str,
    ) -> Result<(TokioIo<Upgraded>, String), ClientError> {
        let mut request = Self::request(Method::POST, path, body);
        let headers = request.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
        let response = Self::check(self.send(request).await?).await?;
        let content_type = content_type(&response);
        let upgraded = hyper::upgrade::on(response).await?;
        Ok((TokioIo::new(upgraded), content_type))
    }
}

fn content_type<B>(response: &Response<B>) -> String {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A JSON-lines progress stream (`POST /images/create`), read as it arrives.
pub struct ProgressStream {
    body: Incoming,
    buffer: Vec<u8>,
}

impl ProgressStream {
    /// The next line, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<ProgressLine>, ClientError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(serde_json::from_slice(&line)?));
            }
            match self.body.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                None if self.buffer.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => {
                    let line = std::mem::take(&mut self.buffer);
                    return Ok(Some(serde_json::from_slice(&line)?));
                }
            }
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

/// The hex SHA-256 of a file's contents, read in chunks.
async fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}
