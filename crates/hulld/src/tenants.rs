//! The tenants' TLS listener: its address and certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hull_api::tls::{self, CertFiles};
use hull_api::Daemon;
use tracing::info;

/// `tcp://ADDR:PORT`, given to `flag`, into a socket address.
pub fn parse_tcp(flag: &str, text: &str) -> Result<SocketAddr> {
    let Some(addr) = text.strip_prefix("tcp://") else {
        bail!("{flag} takes tcp://ADDR:PORT, not {text:?}");
    };
    addr.parse()
        .with_context(|| format!("{flag} {text:?} is not tcp://ADDR:PORT"))
}

/// Binds `addr` and serves tenants there with TLS: `cert` when given,
/// otherwise Hull's own CA and certificate under `<root>/tls`.
pub async fn listen(
    addr: SocketAddr,
    cert: Option<CertFiles>,
    root: &Path,
    daemon: Arc<Daemon>,
) -> Result<tokio::task::JoinHandle<()>> {
    // Hull's own CA issues tenants' client certificates whatever the
    // server's certificate is.
    let dir = root.join("tls");
    let ca = tls::OwnCa::open_or_create(&dir)
        .with_context(|| format!("cannot make Hull's CA in {}", dir.display()))?;
    let files = match cert {
        Some(files) => files,
        None => {
            let files = ca
                .server_certificate(&server_names(addr))
                .with_context(|| format!("cannot make a TLS certificate in {}", dir.display()))?;
            info!(ca = %ca.pem_path().display(), "tenants' clients trust this CA (--tlscacert)");
            files
        }
    };
    let config = tls::server_config(&files, &ca.pem_path()).with_context(|| {
        format!(
            "cannot use the certificate {} with the key {}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on tcp://{addr}"))?;
    info!(address = %listener.local_addr()?, "serving tenants over TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    Ok(tokio::spawn(hull_api::server::serve_tenants(
        listener, acceptor, daemon,
    )))
}

/// The names a self-made server certificate covers: loopback, the host's
/// name, and the listening address unless it is a wildcard.
fn server_names(addr: SocketAddr) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        names.push(host.trim().to_owned());
    }
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        names.push(addr.ip().to_string());
    }
    names.retain(|n| !n.is_empty());
    names.dedup();
    names
}

/// `--tls-cert` and `--tls-key` together, or neither.
pub fn cert_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<CertFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(CertFiles { cert, key })),
        (None, None) => Ok(None),
        _ => bail!("--tls-cert and --tls-key go together"),
    }
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
