//! TLS for the tenants' listener, the call plane off loopback, and for
//! clients that reach them.
//!
//! Without `--tls-cert`, hulld makes its own certificate authority at first
//! start (`<root>/tls/ca.pem`) and a server certificate it signs: clients
//! trust the CA (`hull --tlscacert`, `docker --tlscacert`), and the same CA
//! is the one that tenants' client certificates will come from.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
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
    #[error("cannot read {}", .path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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

/// Hull's own certificate authority: it signs the server certificate when
/// the operator brings none, and tenants' client certificates always.
pub struct OwnCa {
    dir: PathBuf,
    key: KeyPair,
    cert: rcgen::Certificate,
}

/// A tenant's client certificate, its key and the CA, as the docker CLI
/// takes them (`--tlscacert`, `--tlscert`, `--tlskey`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClientBundle {
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// Hex SHA-256 of the certificate: how hulld knows it.
    #[serde(skip)]
    pub fingerprint: String,
}

const CA_NAME: &str = "Hull tenant CA";

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    Ok(params)
}

impl OwnCa {
    /// Loads the CA under `dir`, making it (and `dir`, 0700) if missing.
    pub fn open_or_create(dir: &Path) -> Result<Self, TlsError> {
        let pem = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let read_err = |path: &Path| {
            let path = path.to_owned();
            move |source| TlsError::ReadFile { path, source }
        };
        let key = if key_path.exists() && pem.exists() {
            let text = std::fs::read_to_string(&key_path).map_err(read_err(&key_path))?;
            KeyPair::from_pem(&text)?
        } else {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| TlsError::Write {
                    path: dir.to_owned(),
                    source,
                })?;
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_private(&key_path, &key.serialize_pem())?;
            write_file(&pem, &cert.pem())?;
            key
        };
        // Signing needs only the CA's name and key, both as on disk: a
        // certificate rebuilt from them issues children that chain to ca.pem.
        let cert = ca_params()?.self_signed(&key)?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            cert,
        })
    }

    pub fn pem_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate under the CA's directory, made if missing,
    /// covering `names` (DNS names and IP addresses).
    pub fn server_certificate(&self, names: &[String]) -> Result<CertFiles, TlsError> {
        let files = CertFiles {
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
        };
        // One made for other names (the listeners moved) is made again.
        if files.cert.exists() && files.key.exists() && self.covers(&files.cert, names) {
            return Ok(files);
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.clone().try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        params.distinguished_name.push(DnType::CommonName, "hulld");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        write_private(&files.key, &key.serialize_pem())?;
        write_file(&files.cert, &cert.pem())?;
        Ok(files)
    }

    /// Whether the certificate chain in `path` is the CA's and valid now
    /// for every one of `names`.
    fn covers(&self, path: &Path, names: &[String]) -> bool {
        use rustls::client::danger::ServerCertVerifier as _;
        let Ok(chain) = certificates(path) else {
            return false;
        };
        let mut roots = rustls::RootCertStore::empty();
        if roots.add(self.cert.der().clone()).is_err() {
            return false;
        }
        let Ok(verifier) = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build() else {
            return false;
        };
        let now = rustls::pki_types::UnixTime::now();
        names.iter().all(|name| {
            // A name no client can ask for needs no cover.
            let Ok(server) = rustls::pki_types::ServerName::try_from(name.as_str()) else {
                return true;
            };
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &server, &[], now)
                .is_ok()
        })
    }

    /// A new client certificate for `tenant`.
    pub fn issue_client(&self, tenant: &str) -> Result<ClientBundle, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, tenant);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let ca = std::fs::read_to_string(self.pem_path()).map_err(|source| TlsError::ReadFile {
            path: self.pem_path(),
            source,
        })?;
        Ok(ClientBundle {
            ca,
            cert: cert.pem(),
            key: key.serialize_pem(),
            fingerprint: fingerprint(cert.der()),
        })
    }
}

/// Hex SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

fn write_file(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
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
/// Clients may present a certificate of `client_ca` (tenants' client
/// certificates) or none (they sign their requests instead).
pub fn server_config(
    files: &CertFiles,
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(client_ca)? {
        roots.add(cert)?;
    }
    let clients =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients);
    with_certificate(config, files)
}

/// The server's TLS configuration from its certificate chain and key, for
/// a listener whose requests carry their own secret (the call plane's
/// uuids): no client is asked for a certificate.
pub fn server_config_without_clients(
    files: &CertFiles,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth();
    with_certificate(config, files)
}

fn with_certificate(
    config: rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>,
    files: &CertFiles,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let mut config = config.with_single_cert(certificates(&files.cert)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The host's name, as a self-made server certificate covers it and as
/// URLs name a listener bound to every address; `None` if it has none.
pub fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "(none)").then(|| name.to_owned())
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
        let ca = OwnCa::open_or_create(&tls).unwrap();
        let files = ca.server_certificate(&names).unwrap();
        let first = std::fs::read(&files.cert).unwrap();
        let again = OwnCa::open_or_create(&tls).unwrap();
        let files = again.server_certificate(&names).unwrap();
        assert_eq!(std::fs::read(&files.cert).unwrap(), first);
        server_config(&files, &again.pem_path()).unwrap();
        client_config(&again.pem_path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for private in [&files.key, &tls.join("ca-key.pem")] {
            let mode = std::fs::metadata(private).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", private.display());
        }
    }

    #[test]
    fn client_certificates_of_a_reopened_ca_chain_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = OwnCa::open_or_create(dir.path()).unwrap();
        let files = first.server_certificate(&["localhost".to_owned()]).unwrap();
        let reopened = OwnCa::open_or_create(dir.path()).unwrap();
        let bundle = reopened.issue_client("acme").unwrap();
        let ca = std::fs::read(first.pem_path()).unwrap();
        assert_eq!(bundle.ca.as_bytes(), ca);
        // The server's verifier (rooted at ca.pem) accepts the client's chain.
        let roots = {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&first.pem_path()).unwrap() {
                roots.add(cert).unwrap();
            }
            Arc::new(roots)
        };
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .unwrap();
        let cert = CertificateDer::from_pem_slice(bundle.cert.as_bytes()).unwrap();
        assert_eq!(bundle.fingerprint, fingerprint(&cert));
        let now = rustls::pki_types::UnixTime::now();
        verifier.verify_client_cert(&cert, &[], now).unwrap();
        // A certificate from some other CA is not accepted.
        let stranger = OwnCa::open_or_create(&dir.path().join("other")).unwrap();
        let foreign = stranger.issue_client("acme").unwrap();
        let foreign = CertificateDer::from_pem_slice(foreign.cert.as_bytes()).unwrap();
        assert!(verifier.verify_client_cert(&foreign, &[], now).is_err());
        server_config(&files, &first.pem_path()).unwrap();
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
