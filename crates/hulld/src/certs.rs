//! The server certificate of hulld's TLS listeners: the tenants' and, off
//! loopback, the call plane's serve one and the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hull_api::tls::{self, CertFiles, OwnCa};
use tracing::info;

/// The certificate the TLS listeners serve, and Hull's own CA.
pub struct ServerTls {
    pub files: CertFiles,
    /// It issues tenants' client certificates whoever signed `files`.
    pub ca: OwnCa,
}

/// The certificate for listeners on `addresses`: `given` (`--tls-cert`,
/// `--tls-key`) when the operator brings one, otherwise one that Hull's
/// own CA under `<root>/tls` signs for every listener's names.
pub fn server_tls(
    given: Option<CertFiles>,
    root: &Path,
    addresses: &[SocketAddr],
) -> Result<ServerTls> {
    let dir = root.join("tls");
    let ca = OwnCa::open_or_create(&dir)
        .with_context(|| format!("cannot make Hull's CA in {}", dir.display()))?;
    let files = match given {
        Some(files) => files,
        None => {
            let files = ca
                .server_certificate(&server_names(addresses))
                .with_context(|| format!("cannot make a TLS certificate in {}", dir.display()))?;
            info!(ca = %ca.pem_path().display(), "clients trust this CA (--tlscacert, curl --cacert)");
            files
        }
    };
    Ok(ServerTls { files, ca })
}

impl ServerTls {
    /// What to say when the certificate is unusable.
    pub fn unusable(&self) -> String {
        format!(
            "cannot use the certificate {} with the key {}",
            self.files.cert.display(),
            self.files.key.display()
        )
    }
}

/// The names a self-made server certificate covers: loopback, the host's
/// name (what URLs of a listener bound to every address name), and each
/// listening address that is not a wildcard.
fn server_names(addresses: &[SocketAddr]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(tls::host_name());
    for address in addresses {
        let ip = address.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            names.push(ip.to_string());
        }
    }
    let mut unique = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    unique
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

    use std::sync::Arc;
    use tokio_rustls::rustls;

    /// Whether a client trusting `ca` accepts the certificate in `cert`
    /// for `name`.
    fn verifies(ca: &Path, cert: &Path, name: &str) -> bool {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(der.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn own_certificate_covers_every_listener_and_loopback_but_no_wildcard() {
        let root = tempfile::tempdir().unwrap();
        let tenants: SocketAddr = "192.0.2.7:8443".parse().unwrap();
        let calls: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let tls = server_tls(None, root.path(), &[tenants, calls]).unwrap();
        assert_eq!(tls.files.cert, root.path().join("tls/cert.pem"));
        let ca = tls.ca.pem_path();
        for name in ["localhost", "127.0.0.1", "::1", "192.0.2.7"] {
            assert!(verifies(&ca, &tls.files.cert, name), "{name}");
        }
        if let Some(host) = tls::host_name() {
            assert!(verifies(&ca, &tls.files.cert, &host), "{host}");
        }
        assert!(!server_names(&[calls]).contains(&"0.0.0.0".to_owned()));
        assert!(!verifies(&ca, &tls.files.cert, "198.51.100.1"));
        tls::server_config_without_clients(&tls.files).unwrap();
        tls::server_config(&tls.files, &ca).unwrap();
    }

    #[test]
    fn own_certificate_is_kept_and_made_again_only_for_new_names() {
        let root = tempfile::tempdir().unwrap();
        let first: SocketAddr = "192.0.2.7:8443".parse().unwrap();
        let made = server_tls(None, root.path(), &[first]).unwrap();
        let pem = std::fs::read(&made.files.cert).unwrap();
        let again = server_tls(None, root.path(), &[first]).unwrap();
        assert_eq!(std::fs::read(&again.files.cert).unwrap(), pem);
        // The call plane now listens on another address too.
        let moved: SocketAddr = "198.51.100.1:8080".parse().unwrap();
        let remade = server_tls(None, root.path(), &[first, moved]).unwrap();
        assert_ne!(std::fs::read(&remade.files.cert).unwrap(), pem);
        let ca = remade.ca.pem_path();
        assert!(verifies(&ca, &remade.files.cert, "198.51.100.1"));
        assert!(verifies(&ca, &remade.files.cert, "192.0.2.7"));
    }

    #[test]
    fn a_given_certificate_is_served_as_is() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let issuer = OwnCa::open_or_create(elsewhere.path()).unwrap();
        let given = issuer
            .server_certificate(&["calls.example".to_owned()])
            .unwrap();
        let address: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let tls = server_tls(Some(given.clone()), root.path(), &[address]).unwrap();
        assert_eq!(tls.files.cert, given.cert);
        assert_eq!(tls.files.key, given.key);
        // Hull's CA is still made (it issues tenants' certificates), but
        // no certificate of its own.
        assert!(root.path().join("tls/ca.pem").exists());
        assert!(!root.path().join("tls/cert.pem").exists());
        tls::server_config_without_clients(&tls.files).unwrap();
    }

    #[test]
    fn cert_and_key_go_together() {
        let path = || Some(PathBuf::from("/x.pem"));
        assert!(cert_files(path(), path()).unwrap().is_some());
        assert!(cert_files(None, None).unwrap().is_none());
        assert!(cert_files(path(), None).is_err());
        assert!(cert_files(None, path()).is_err());
    }
}
