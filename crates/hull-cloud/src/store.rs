//! The control plane's durable state: tenants and their access keys, in an
//! SQLite database under the state directory, every change a transaction.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use crate::quota::Quota;
use crate::seal::{SealError, Sealer};

/// Live keys a tenant may hold at once, as Hyper.sh allowed.
pub const MAX_KEYS_PER_TENANT: usize = 3;
const ACCESS_KEY_LEN: usize = 20;
const SECRET_KEY_LEN: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the cloud database failed")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("a tenant's name is 1-63 of a-z, 0-9, '-', '_' and '.', starting with a letter or digit; {0:?} is not")]
    BadName(String),
    #[error("tenant {0} already exists")]
    Exists(String),
    #[error("no tenant {0}")]
    NoTenant(String),
    #[error(
        "an access key is 8-64 letters and digits and a secret key 16-128 printable characters"
    )]
    BadKey,
    #[error("the access key {0} is taken")]
    KeyExists(String),
    #[error("no access key {0}")]
    NoKey(String),
    #[error("tenant {0} already has {MAX_KEYS_PER_TENANT} live keys: remove one first")]
    TooManyKeys(String),
    #[error("the cloud database's quota record of {0} is malformed")]
    BadQuota(String, #[source] serde_json::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tenant {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub quota: Quota,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyInfo {
    pub access_key: String,
    pub tenant: String,
    pub created: u64,
}

/// A new key: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NewKey {
    #[serde(rename = "AccessKey")]
    pub access_key: String,
    #[serde(rename = "SecretKey")]
    pub secret_key: String,
}

pub struct Store {
    db: Mutex<Connection>,
    secrets_key: PathBuf,
    /// Loaded (or made) when a secret is first sealed or opened, so that a
    /// host that never issues keys never writes a master key.
    sealer: OnceLock<Sealer>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    quota TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    access_key TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    sealed_secret BLOB NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_tenant ON keys(tenant);
CREATE TABLE IF NOT EXISTS client_certs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
";

impl Store {
    /// Opens (creating) the database at `path`; secrets are sealed under the
    /// master key at `secrets_key`.
    pub fn open(path: &Path, secrets_key: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        // WAL with synchronous=FULL: a committed change survives a crash of
        // hulld or of the host.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        db.execute_batch(crate::images::SCHEMA)?;
        db.execute_batch(crate::crons::SCHEMA)?;
        db.execute_batch(crate::funcs::SCHEMA)?;
        db.execute_batch(crate::func_events::SCHEMA)?;
        Ok(Self {
            db: Mutex::new(db),
            secrets_key: secrets_key.to_owned(),
            sealer: OnceLock::new(),
        })
    }

    fn sealer(&self) -> Result<&Sealer, SealError> {
        if let Some(sealer) = self.sealer.get() {
            return Ok(sealer);
        }
        let sealer = Sealer::open_or_create(&self.secrets_key)?;
        Ok(self.sealer.get_or_init(|| sealer))
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every
        // change is a transaction), so the connection stays usable.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn create_tenant(&self, name: &str, quota: Quota) -> Result<Tenant, StoreError> {
        check_name(name)?;
        let tenant = Tenant {
            name: name.to_owned(),
            created: now(),
            quota,
        };
        let quota = serde_json::to_string(&quota).expect("a quota serializes");
        let inserted = self.db().execute(
            "INSERT INTO tenants (name, created, quota) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            params![name, tenant.created, quota],
        )?;
        if inserted == 0 {
            return Err(StoreError::Exists(name.to_owned()));
        }
        Ok(tenant)
    }

    pub fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let db = self.db();
        let mut statement = db.prepare("SELECT name, created, quota FROM tenants ORDER BY name")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (name, created, quota) = row?;
            tenant_of(name, created, &quota)
        })
        .collect()
    }

    pub fn tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let row = self
            .db()
            .query_row(
                "SELECT created, quota FROM tenants WHERE name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get::<_, String>(1)?)),
            )
            .optional()?;
        let (created, quota) = row.ok_or_else(|| StoreError::NoTenant(name.to_owned()))?;
        tenant_of(name.to_owned(), created, &quota)
    }

    pub fn set_quota(&self, name: &str, quota: Quota) -> Result<(), StoreError> {
        let quota = serde_json::to_string(&quota).expect("a quota serializes");
        let changed = self.db().execute(
            "UPDATE tenants SET quota = ?2 WHERE name = ?1",
            params![name, quota],
        )?;
        if changed == 0 {
            return Err(StoreError::NoTenant(name.to_owned()));
        }
        Ok(())
    }

    /// Removes a tenant and, with it, every key it had.
    pub fn remove_tenant(&self, name: &str) -> Result<(), StoreError> {
        let changed = self
            .db()
            .execute("DELETE FROM tenants WHERE name = ?1", [name])?;
        if changed == 0 {
            return Err(StoreError::NoTenant(name.to_owned()));
        }
        Ok(())
    }

    /// Issues a new key to `tenant`.
    pub fn create_key(&self, tenant: &str) -> Result<NewKey, StoreError> {
        let key = NewKey {
            access_key: random_text(ACCESS_KEY_LEN, UPPER_ALNUM)?,
            secret_key: random_text(SECRET_KEY_LEN, ALNUM)?,
        };
        self.add_key(tenant, key)
    }

    /// Gives `tenant` a key the operator brings (one issued elsewhere, say).
    pub fn import_key(&self, tenant: &str, key: NewKey) -> Result<NewKey, StoreError> {
        let access_ok = (8..=64).contains(&key.access_key.len())
            && key.access_key.bytes().all(|b| b.is_ascii_alphanumeric());
        let secret_ok = (16..=128).contains(&key.secret_key.len())
            && key.secret_key.bytes().all(|b| b.is_ascii_graphic());
        if !access_ok || !secret_ok {
            return Err(StoreError::BadKey);
        }
        self.add_key(tenant, key)
    }

    fn add_key(&self, tenant: &str, key: NewKey) -> Result<NewKey, StoreError> {
        let sealed = self.sealer()?.seal(&key.access_key, &key.secret_key)?;
        let mut db = self.db();
        // IMMEDIATE: the count and the insert see the same keys, so two
        // concurrent requests cannot both pass the limit.
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_room(&tx, tenant)?;
        let inserted = tx.execute(
            "INSERT INTO keys (access_key, tenant, sealed_secret, created) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![key.access_key, tenant, sealed, now()],
        )?;
        if inserted == 0 {
            return Err(StoreError::KeyExists(key.access_key));
        }
        tx.commit()?;
        Ok(key)
    }

    /// Records a client certificate issued to `tenant` (by its SHA-256);
    /// returns the id that lists and revokes it.
    pub fn add_client_cert(&self, tenant: &str, fingerprint: &str) -> Result<KeyInfo, StoreError> {
        let id = format!(
            "CERT{}",
            fingerprint[..16.min(fingerprint.len())].to_ascii_uppercase()
        );
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_room(&tx, tenant)?;
        let created = now();
        tx.execute(
            "INSERT INTO client_certs (id, tenant, fingerprint, created) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, fingerprint, created],
        )?;
        tx.commit()?;
        Ok(KeyInfo {
            access_key: id,
            tenant: tenant.to_owned(),
            created,
        })
    }

    /// The tenant a live client certificate (by its SHA-256) was issued to.
    pub fn tenant_of_cert(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db()
            .query_row(
                "SELECT tenant FROM client_certs WHERE fingerprint = ?1",
                [fingerprint],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// The keys of `tenant`, or of every tenant.
    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, StoreError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT access_key, tenant, created FROM keys WHERE ?1 IS NULL OR tenant = ?1
             UNION ALL
             SELECT id, tenant, created FROM client_certs WHERE ?1 IS NULL OR tenant = ?1
             ORDER BY 2, 3, 1",
        )?;
        let rows = statement.query_map([tenant], |row| {
            Ok(KeyInfo {
                access_key: row.get(0)?,
                tenant: row.get(1)?,
                created: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes a key or client certificate: requests signed with it, or
    /// connections made with it, are refused from now on.
    pub fn remove_key(&self, access_key: &str) -> Result<(), StoreError> {
        let db = self.db();
        let changed = db.execute("DELETE FROM keys WHERE access_key = ?1", [access_key])?
            + db.execute("DELETE FROM client_certs WHERE id = ?1", [access_key])?;
        if changed == 0 {
            return Err(StoreError::NoKey(access_key.to_owned()));
        }
        Ok(())
    }

    /// The tenant and secret of a live key.
    pub fn secret_of(&self, access_key: &str) -> Result<Option<(String, String)>, StoreError> {
        if access_key.len() > 64 {
            return Ok(None);
        }
        let row: Option<(String, Vec<u8>)> = self
            .db()
            .query_row(
                "SELECT tenant, sealed_secret FROM keys WHERE access_key = ?1",
                [access_key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(tenant, sealed)| Ok((tenant, self.sealer()?.open(access_key, &sealed)?)))
            .transpose()
    }
}

/// Refuses a new credential when `tenant` is missing or holds its limit.
fn check_room(tx: &rusqlite::Transaction<'_>, tenant: &str) -> Result<(), StoreError> {
    let exists: Option<i64> = tx
        .query_row("SELECT 1 FROM tenants WHERE name = ?1", [tenant], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::NoTenant(tenant.to_owned()));
    }
    let live: usize = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM keys WHERE tenant = ?1)
              + (SELECT COUNT(*) FROM client_certs WHERE tenant = ?1)",
        [tenant],
        |r| r.get(0),
    )?;
    if live >= MAX_KEYS_PER_TENANT {
        return Err(StoreError::TooManyKeys(tenant.to_owned()));
    }
    Ok(())
}

fn tenant_of(name: String, created: u64, quota: &str) -> Result<Tenant, StoreError> {
    let quota = serde_json::from_str(quota).map_err(|e| StoreError::BadQuota(name.clone(), e))?;
    Ok(Tenant {
        name,
        created,
        quota,
    })
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let valid = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(StoreError::BadName(name.chars().take(80).collect()))
    }
}

const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `len` characters drawn uniformly from `alphabet` (rejection sampling:
/// no modulo bias).
fn random_text(len: usize, alphabet: &[u8]) -> Result<String, SealError> {
    let rng = SystemRandom::new();
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut byte = [0u8; 1];
    while out.len() < len {
        rng.fill(&mut byte).map_err(|_| SealError::Random)?;
        if usize::from(byte[0]) < limit {
            out.push(char::from(alphabet[usize::from(byte[0]) % alphabet.len()]));
        }
    }
    Ok(out)
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
