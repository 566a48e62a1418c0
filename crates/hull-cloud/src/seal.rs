//! Secret keys at rest.
//!
//! HMAC verification needs each secret itself, so secrets cannot be stored
//! hashed. They are sealed with ChaCha20-Poly1305 under a master key kept in
//! a file outside the state directory (`/etc/hull/secrets.key` by default):
//! a copy of the state directory alone holds only ciphertext. The access key
//! is the associated data, so a sealed secret moved to another key's row
//! does not open.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read the secrets key {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the secrets key {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secrets key {} is not {KEY_LEN} bytes: restore it, or remove it and every access key (new keys must then be issued)", .path.display())]
    BadKey { path: PathBuf },
    #[error("the secrets key {} may be read by others (mode {mode:o}): make it 0600 and owned by hulld's user", .path.display())]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the system's random source failed")]
    Random,
    #[error("a sealed secret does not open under this secrets key: the key file was replaced or the record altered")]
    Open,
}

/// The master key that seals and opens secrets.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// Loads the master key at `path`, making a new one (mode 0600, its
    /// directory 0700 when created) if there is none.
    pub fn open_or_create(path: &Path) -> Result<Self, SealError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map_err(|source| SealError::Read {
                        path: path.to_owned(),
                        source,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(SealError::Exposed {
                        path: path.to_owned(),
                        mode: mode & 0o7777,
                    });
                }
                Self::from_bytes(&bytes).ok_or_else(|| SealError::BadKey {
                    path: path.to_owned(),
                })
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(source) => Err(SealError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn create(path: &Path) -> Result<Self, SealError> {
        let create_err = |source| SealError::Create {
            path: path.to_owned(),
            source,
        };
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create_err)?;
        }
        // create_new: two daemons racing must not each write a key.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create_err)?;
        file.write_all(&bytes).map_err(create_err)?;
        file.sync_all().map_err(create_err)?;
        Ok(Self::from_bytes(&bytes).expect("a key of the right length"))
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&aead::CHACHA20_POLY1305, bytes).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// A random key, for tests.
    pub fn ephemeral() -> Result<Self, SealError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::Random)?;
        Ok(Self::from_bytes(&bytes).expect("a key of the right length"))
    }

    /// Seals `secret` for `access_key`: a random nonce, then the ciphertext and tag.
    pub fn seal(&self, access_key: &str, secret: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let mut sealed = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(access_key.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, access_key: &str, sealed: &[u8]) -> Result<String, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(access_key.as_bytes()), &mut buffer)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_key_under_its_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/secrets.key");
        let sealer = Sealer::open_or_create(&path).unwrap();
        let sealed = sealer.seal("AK1", "the secret").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_eq!(sealer.open("AK1", &sealed).unwrap(), "the secret");
        assert!(matches!(sealer.open("AK2", &sealed), Err(SealError::Open)));

        let again = Sealer::open_or_create(&path).unwrap();
        assert_eq!(again.open("AK1", &sealed).unwrap(), "the secret");
        let other = Sealer::ephemeral().unwrap();
        assert!(matches!(other.open("AK1", &sealed), Err(SealError::Open)));

        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            sealer.open("AK1", &tampered),
            Err(SealError::Open)
        ));
        assert!(matches!(
            sealer.open("AK1", &sealed[..5]),
            Err(SealError::Open)
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_file_others_can_read_or_of_the_wrong_length_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        Sealer::open_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Sealer::open_or_create(&path),
            Err(SealError::Exposed { mode: 0o644, .. })
        ));
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Sealer::open_or_create(&path),
            Err(SealError::BadKey { .. })
        ));
    }
}
