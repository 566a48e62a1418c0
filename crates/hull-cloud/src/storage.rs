//! Metering of what is stored: volumes' GB-seconds, sampled. Every sample
//! charges each item the size it had at the sample before for the time
//! since (a hulld that was down charges the time it was down at the next
//! sample: the disks were there all along). An item gone between two
//! samples is charged to the earlier one: never more than it held.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::usage::{Owner, Usage, UsageError, MAX_REPORT};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS storage (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    tenant TEXT,
    bytes INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    gone_ms INTEGER,
    mib_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS storage_open ON storage(kind, name) WHERE gone_ms IS NULL;
";

/// One stored item as sampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    /// `None`: the operator's.
    pub tenant: Option<String>,
    pub bytes: u64,
}

/// One stored item as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StorageUse {
    /// `volume`.
    pub kind: String,
    pub name: String,
    pub tenant: Option<String>,
    /// Its size at the last sample.
    pub bytes: u64,
    /// Milliseconds since the epoch: first and last sampled, and when it
    /// was found gone (at its last sample).
    pub first: i64,
    pub last: i64,
    pub gone: Option<i64>,
    /// GiB × seconds charged so far.
    pub gb_seconds: f64,
}

/// MiB, rounded up: what a sample charges per millisecond.
fn mib(bytes: u64) -> i64 {
    i64::try_from(bytes.div_ceil(1 << 20)).unwrap_or(i64::MAX)
}

impl Usage {
    /// Records a sample of every item of `kind` (`volume`) at `now_ms`.
    pub fn sample(&self, kind: &str, items: &[Stored], now_ms: i64) -> Result<(), UsageError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let open: BTreeMap<String, (i64, u64, i64)> = {
            let mut statement = tx.prepare(
                "SELECT name, id, bytes, last_ms FROM storage WHERE kind = ?1 AND gone_ms IS NULL",
            )?;
            let rows = statement.query_map([kind], |row| {
                Ok((row.get(0)?, (row.get(1)?, row.get(2)?, row.get(3)?)))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for item in items {
            match open.get(&item.name) {
                Some(&(id, bytes, last)) => {
                    let charged = mib(bytes).saturating_mul(now_ms.saturating_sub(last).max(0));
                    tx.execute(
                        "UPDATE storage SET mib_ms = mib_ms + ?2, bytes = ?3, last_ms = MAX(last_ms, ?4)
                         WHERE id = ?1",
                        params![id, charged, item.bytes, now_ms],
                    )?;
                }
                None => {
                    tx.execute(
                        "INSERT INTO storage (kind, name, tenant, bytes, first_ms, last_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                        params![kind, item.name, item.tenant, item.bytes, now_ms],
                    )?;
                }
            }
        }
        for (name, (id, _, _)) in &open {
            if !items.iter().any(|item| &item.name == name) {
                tx.execute("UPDATE storage SET gone_ms = last_ms WHERE id = ?1", [id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// What `owner` stored at or after `since_ms`.
    pub fn storage_report(
        &self,
        owner: Owner<'_>,
        since_ms: i64,
    ) -> Result<Vec<StorageUse>, UsageError> {
        let (everyone, tenant) = owner.filter();
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT kind, name, tenant, bytes, first_ms, last_ms, gone_ms, mib_ms FROM storage
             WHERE (gone_ms IS NULL OR gone_ms >= ?1) AND (?2 OR tenant IS ?3)
             ORDER BY first_ms, id LIMIT ?4",
        )?;
        let rows = statement.query_map(
            params![since_ms, everyone, tenant, MAX_REPORT as i64 + 1],
            |row| {
                let mib_ms: i64 = row.get(7)?;
                Ok(StorageUse {
                    kind: row.get(0)?,
                    name: row.get(1)?,
                    tenant: row.get(2)?,
                    bytes: row.get(3)?,
                    first: row.get(4)?,
                    last: row.get(5)?,
                    gone: row.get(6)?,
                    gb_seconds: mib_ms as f64 / 1024.0 / 1000.0,
                })
            },
        )?;
        let stored: Vec<StorageUse> = rows.collect::<Result<_, _>>()?;
        if stored.len() > MAX_REPORT {
            return Err(UsageError::TooMany);
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(name: &str, tenant: Option<&str>, gib: u64) -> Stored {
        Stored {
            name: name.into(),
            tenant: tenant.map(str::to_owned),
            bytes: gib << 30,
        }
    }

    #[test]
    fn volumes_are_charged_their_size_between_samples_and_stop_when_gone() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Usage::open(&dir.path().join("usage.db")).unwrap();
        usage
            .sample(
                "volume",
                &[volume("data", Some("acme"), 2), volume("ops", None, 1)],
                0,
            )
            .unwrap();
        // 10 s at 2 GiB, then it grows to 4 GiB for 5 s more.
        usage
            .sample(
                "volume",
                &[volume("data", Some("acme"), 4), volume("ops", None, 1)],
                10_000,
            )
            .unwrap();
        usage
            .sample("volume", &[volume("data", Some("acme"), 4)], 15_000)
            .unwrap();
        // Gone since: charged nothing more.
        usage.sample("volume", &[], 60_000).unwrap();
        let acme = usage.storage_report(Owner::Tenant("acme"), 0).unwrap();
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0].gb_seconds, 2.0 * 10.0 + 4.0 * 5.0);
        assert_eq!(acme[0].gone, Some(15_000));
        let ops = usage.storage_report(Owner::Operator, 0).unwrap();
        assert_eq!(ops[0].gb_seconds, 10.0);
        assert_eq!(ops[0].gone, Some(10_000));
        assert!(usage
            .storage_report(Owner::Everyone, 20_000)
            .unwrap()
            .is_empty());
        // A name used again is a new item.
        usage
            .sample("volume", &[volume("data", Some("beta"), 1)], 70_000)
            .unwrap();
        let beta = usage.storage_report(Owner::Tenant("beta"), 0).unwrap();
        assert_eq!((beta.len(), beta[0].gb_seconds), (1, 0.0));
    }
}
