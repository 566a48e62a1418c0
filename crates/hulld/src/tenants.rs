//! The tenants' TLS listener, and the addresses hulld's listeners take.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hull_api::tls;
use hull_api::Daemon;
use tracing::info;

use crate::certs::ServerTls;

/// `tcp://ADDR:PORT`, given to `flag`, into a socket address.
pub fn parse_tcp(flag: &str, text: &str) -> Result<SocketAddr> {
    let Some(addr) = text.strip_prefix("tcp://") else {
        bail!("{flag} takes tcp://ADDR:PORT, not {text:?}");
    };
    addr.parse()
        .with_context(|| format!("{flag} {text:?} is not tcp://ADDR:PORT"))
}

/// Binds `addr` and serves tenants there with TLS: `cert`'s certificate,
/// and client certificates of Hull's own CA.
pub async fn listen(
    addr: SocketAddr,
    cert: &ServerTls,
    daemon: Arc<Daemon>,
) -> Result<tokio::task::JoinHandle<()>> {
    let config =
        tls::server_config(&cert.files, &cert.ca.pem_path()).with_context(|| cert.unusable())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on tcp://{addr}"))?;
    info!(address = %listener.local_addr()?, "serving tenants over TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    Ok(tokio::spawn(hull_api::server::serve_tenants(
        listener, acceptor, daemon,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_must_be_tcp() {
        assert_eq!(
            parse_tcp("--listen", "tcp://127.0.0.1:8443").unwrap(),
            "127.0.0.1:8443".parse().unwrap()
        );
        assert!(parse_tcp("--listen", "127.0.0.1:8443").is_err());
        assert!(parse_tcp("--listen", "tcp://nowhere").is_err());
    }
}
