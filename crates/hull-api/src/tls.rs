//! TLS for the tenants' listener and for clients that reach it.
//!
//! Without `--tls-cert`, hulld makes its own certificate authority at first
//! start (`<root>/tls/ca.pem`) and a server certificate it signs: clients
//! trust the CA (`hull --tlscacert`, `docker --tlscacert`), and the same CA
//! is the one that tenants' client certificates will come from.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key are not usable for TLS")]
    Config(#[from] rustls::Error),
}

/// Paths of a certificate chain and its key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Hull's own CA and a server certificate under `dir`, made if missing.
/// `names` are the DNS names and IP addresses the server certificate covers.
pub fn own_certificates(dir: &Path, names: &[String]) -> Result<(PathBuf, CertFiles), TlsError> {
    let ca = dir.join("ca.pem");
    let ca_key = dir.join("ca-key.pem");
    let server = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if ca.exists() && server.cert.exists() && server.key.exists() {
        return Ok((ca, server));
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Write { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(write_err(dir))?;

    let ca_pair = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Hull tenant CA");
    let ca_cert = params.self_signed(&ca_pair)?;

    let server_pair = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names
        .iter()
        .map(|name| match name.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.distinguished_name.push(DnType::CommonName, "hulld");
    let server_cert = params.signed_by(&server_pair, &ca_cert, &ca_pair)?;

    write_private(&ca_key, &ca_pair.serialize_pem())?;
    write_private(&server.key, &server_pair.serialize_pem())?;
    std::fs::write(&server.cert, server_cert.pem()).map_err(write_err(&server.cert))?;
    std::fs::write(&ca, ca_cert.pem()).map_err(write_err(&ca))?;
    Ok((ca, server))
}

fn write_private(path: &Path, pem: &str) -> Result<(), TlsError> {
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    file.write_all(pem.as_bytes()).map_err(write_err)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration from its certificate chain and key.
pub fn server_config(files: &CertFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates(&files.cert)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client's TLS configuration that trusts the CAs in `ca`.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_certificates_are_made_once_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let names = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (ca, files) = own_certificates(&tls, &names).unwrap();
        let first = std::fs::read(&files.cert).unwrap();
        let (_, again) = own_certificates(&tls, &names).unwrap();
        assert_eq!(std::fs::read(&again.cert).unwrap(), first);
        server_config(&files).unwrap();
        client_config(&ca).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for private in [&files.key, &tls.join("ca-key.pem")] {
            let mode = std::fs::metadata(private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", private.display());
        }
    }

    #[test]
    fn a_file_without_a_certificate_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = client_config(&path).unwrap_err();
        assert!(error.to_string().contains("empty.pem"), "{error}");
    }
}
