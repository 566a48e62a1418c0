//! How the client reaches hulld: its Unix socket, or a tenant listener over
//! TLS with every request signed (HYPER-HMAC-SHA256).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use http_body_util::{BodyExt, Full, Limited};
use hull_cloud::date::HyperDate;
use hull_cloud::sign::{self, Credentials};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::Request;
use rustls::pki_types::ServerName;
use tokio::net::{TcpStream, UnixStream};

use super::{socket::QuietStream, Body, ClientError};
use crate::server::MAX_SIGNED_BODY;

/// A connected stream to hulld, either kind.
pub(super) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

#[derive(Clone)]
pub(super) enum Transport {
    Unix(PathBuf),
    Tls(Arc<TlsTarget>),
}

pub(super) struct TlsTarget {
    /// `host:port`, as dialled and as the signed `Host` header.
    pub authority: String,
    pub server_name: ServerName<'static>,
    pub connector: tokio_rustls::TlsConnector,
    pub credentials: Credentials,
}

impl Transport {
    /// Where requests go, for messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Self::Unix(path) => path.display().to_string(),
            Self::Tls(target) => format!("tcp://{}", target.authority),
        }
    }

    pub(super) async fn connect(&self) -> Result<Box<dyn Stream>, ClientError> {
        match self {
            Self::Unix(socket) => {
                let stream =
                    UnixStream::connect(socket)
                        .await
                        .map_err(|source| match source.kind() {
                            std::io::ErrorKind::NotFound
                            | std::io::ErrorKind::ConnectionRefused => ClientError::NoDaemon {
                                socket: socket.clone(),
                            },
                            _ => ClientError::Connect {
                                socket: socket.clone(),
                                source,
                            },
                        })?;
                Ok(Box::new(QuietStream::new(stream)))
            }
            Self::Tls(target) => {
                let connect_err = |source| ClientError::Connect {
                    socket: PathBuf::from(format!("tcp://{}", target.authority)),
                    source,
                };
                let tcp = TcpStream::connect(&target.authority)
                    .await
                    .map_err(connect_err)?;
                let tls = target
                    .connector
                    .connect(target.server_name.clone(), QuietStream::new(tcp))
                    .await
                    .map_err(connect_err)?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Readies `request` for the wire: over TLS, signs it (reading its body,
    /// which a signature covers, up to the listener's limit).
    pub(super) async fn prepare(
        &self,
        request: Request<Body>,
    ) -> Result<Request<Body>, ClientError> {
        let Self::Tls(target) = self else {
            return Ok(request);
        };
        let (mut parts, body) = request.into_parts();
        // A streamed upload comes with its hash, taken as it was spooled;
        // any other body is read whole and hashed here.
        let hashed = parts
            .headers
            .get(sign::CONTENT_SHA256_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (payload, body) = match hashed {
            Some(payload) => (payload, body),
            None => {
                let body = Limited::new(body, MAX_SIGNED_BODY)
                    .collect()
                    .await
                    .map_err(|source| ClientError::Body {
                        limit: MAX_SIGNED_BODY,
                        source,
                    })?
                    .to_bytes();
                let payload = sign::payload_sha256(&body);
                let body = Full::new(body)
                    .map_err(|never: std::convert::Infallible| match never {})
                    .boxed();
                (payload, body)
            }
        };
        let date = HyperDate::from_time(SystemTime::now());
        let headers = &mut parts.headers;
        let value = |text: &str| HeaderValue::from_str(text).expect("printable ASCII");
        headers.insert(header::HOST, value(&target.authority));
        headers.insert(
            HeaderName::from_static(sign::DATE_HEADER),
            value(date.stamp()),
        );
        headers.insert(
            HeaderName::from_static(sign::CONTENT_SHA256_HEADER),
            value(&payload),
        );
        let signed = sign::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            payload_sha256: &payload,
        };
        let authorization = sign::authorization(&target.credentials, &signed, &date);
        parts
            .headers
            .insert(header::AUTHORIZATION, value(&authorization));
        Ok(Request::from_parts(parts, body))
    }
}
