//! Metering: one record per container run (who, which container, which
//! size, from when to when), billed by the second with a 10 s minimum per
//! start as Hyper.sh billed. Kept in SQLite beside the cloud's database,
//! every change a transaction, so that a crash of hulld loses none.
//!
//! A run is closed by whoever sees its end first: hulld on the container's
//! `die`, or the run's witness (a small process that outlives hulld and
//! holds a pidfd on the VM's QEMU) when the VM ends while no hulld runs.
//! A run whose end nobody saw (the host itself went down) is closed at the
//! last time it was seen alive: the witness and hulld note that every
//! [`BEAT`].

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Every run is billed at least this long.
pub const MINIMUM_SECONDS: u64 = 10;
/// How often a running run is noted as alive.
pub const BEAT: Duration = Duration::from_secs(30);
/// The most runs one report lists.
pub const MAX_REPORT: usize = 10_000;
/// How far past now a `since` may lie (clocks of clients drift a little).
const SINCE_SLACK_MS: i64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("the usage database failed")]
    Db(#[from] rusqlite::Error),
    #[error("since {0:?} is not a time: give seconds since the epoch")]
    BadSince(String),
    #[error("since {0:?} lies in the future")]
    FutureSince(String),
    #[error("the report holds more than {MAX_REPORT} runs: ask from a later since")]
    TooMany,
}

/// A VM size as billed: its name (`S4`, or `2x1024` for one without) and
/// what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Size {
    pub name: String,
    pub vcpus: u32,
    #[serde(rename = "MemoryMiB")]
    pub memory_mib: u32,
}

/// What ran: a container in a VM of its own, or a pod's VM, billed as one
/// from its boot to its power-off whatever its containers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunKind {
    #[default]
    Container,
    Pod,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Container => "container",
            RunKind::Pod => "pod",
        }
    }
}

/// A run as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// `None`: the operator's own.
    pub tenant: Option<String>,
    pub kind: RunKind,
    /// The container's id, or the pod's.
    pub container_id: String,
    pub container_name: String,
    pub size: Size,
    /// Milliseconds since the epoch.
    pub start_ms: i64,
}

/// Who closed a run, which says how exact its end is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// hulld, at the container's end.
    Daemon,
    /// The run's witness, at QEMU's exit.
    Witness,
    /// hulld at its start, for a run whose end nobody saw: its last beat.
    LastSeen,
}

impl EndedBy {
    fn as_str(self) -> &'static str {
        match self {
            EndedBy::Daemon => "hulld",
            EndedBy::Witness => "witness",
            EndedBy::LastSeen => "last-seen",
        }
    }
}

/// One run as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Run {
    pub id: i64,
    pub tenant: Option<String>,
    /// `container` or `pod`.
    #[serde(default = "container_kind")]
    pub kind: String,
    pub container_id: String,
    pub container_name: String,
    pub size: Size,
    /// Milliseconds since the epoch.
    pub start: i64,
    /// `None` while it runs.
    pub end: Option<i64>,
    /// What it is billed: whole seconds, rounded up, at least
    /// [`MINIMUM_SECONDS`]; a running one's so far.
    pub seconds: u64,
    /// `hulld`, `witness` or `last-seen`, once ended.
    pub ended_by: Option<String>,
}

fn container_kind() -> String {
    RunKind::Container.as_str().to_owned()
}

/// What `GET /hull/usage` answers: container runs and stored volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageReport {
    pub runs: Vec<Run>,
    pub storage: Vec<crate::storage::StorageUse>,
}

/// Whose runs a report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    Everyone,
    /// The operator's own runs.
    Operator,
    Tenant(&'a str),
}

impl<'a> Owner<'a> {
    /// The query's parameters: (everyone, the tenant; `None` is the operator).
    pub(crate) fn filter(self) -> (bool, Option<&'a str>) {
        match self {
            Owner::Everyone => (true, None),
            Owner::Operator => (false, None),
            Owner::Tenant(name) => (false, Some(name)),
        }
    }
}

pub struct Usage {
    db: Mutex<Connection>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Usage")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT,
    container_id TEXT NOT NULL,
    container_name TEXT NOT NULL,
    size TEXT NOT NULL,
    vcpus INTEGER NOT NULL,
    memory_mib INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    seen_ms INTEGER NOT NULL,
    ended_by TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_end ON runs(end_ms);
CREATE INDEX IF NOT EXISTS runs_by_container ON runs(container_id) WHERE end_ms IS NULL;
";

/// Runs recorded before pods were billed as a unit have no kind: they are
/// containers'.
const ADD_KIND: &str = "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'container'";

/// Billed seconds of a run from `start` to `end` (milliseconds).
pub fn billed_seconds(start_ms: i64, end_ms: i64) -> u64 {
    let ms = u64::try_from(end_ms.saturating_sub(start_ms)).unwrap_or(0);
    ms.div_ceil(1000).max(MINIMUM_SECONDS)
}

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    ms_of(SystemTime::now())
}

pub fn ms_of(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A report's `since` (seconds since the epoch, with an optional fraction)
/// in milliseconds; empty is the beginning. Refused if it is not a time or
/// lies in the future.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, UsageError> {
    if text.is_empty() {
        return Ok(0);
    }
    let bad = || UsageError::BadSince(text.chars().take(40).collect());
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str, most: usize| {
        (1..=most).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !digits(seconds, 12) || !digits(fraction, 9) {
        return Err(bad());
    }
    let seconds: i64 = seconds.parse().map_err(|_| bad())?;
    let millis: i64 = format!("{:0<3}", &fraction[..fraction.len().min(3)])
        .parse()
        .map_err(|_| bad())?;
    let since = seconds * 1000 + millis;
    if since > now_ms + SINCE_SLACK_MS {
        return Err(UsageError::FutureSince(text.to_owned()));
    }
    Ok(since)
}

impl Usage {
    /// Opens (creating) the usage database at `path`.
    pub fn open(path: &Path) -> Result<Self, UsageError> {
        let db = Connection::open(path)?;
        // WAL with synchronous=FULL: a committed record survives a crash of
        // hulld or of the host; WAL also lets witnesses write beside hulld.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(SCHEMA)?;
        let has_kind: bool = db.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('runs') WHERE name = 'kind'",
            [],
            |row| row.get(0),
        )?;
        if !has_kind {
            db.execute_batch(ADD_KIND)?;
        }
        db.execute_batch(crate::storage::SCHEMA)?;
        Ok(Self { db: Mutex::new(db) })
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // Every change is a transaction: a panic under the lock leaves the
        // database consistent.
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a run's start; returns its id. A run of the same container
    /// still open (its end was never seen) is closed at its last beat first.
    pub fn start(&self, run: &NewRun) -> Result<i64, UsageError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE runs SET end_ms = MAX(start_ms, MIN(seen_ms, ?2)), ended_by = ?3
             WHERE container_id = ?1 AND end_ms IS NULL",
            params![run.container_id, run.start_ms, EndedBy::LastSeen.as_str()],
        )?;
        tx.execute(
            "INSERT INTO runs (tenant, container_id, container_name, size, vcpus, memory_mib,
                               start_ms, seen_ms, kind)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
            params![
                run.tenant,
                run.container_id,
                run.container_name,
                run.size.name,
                run.size.vcpus,
                run.size.memory_mib,
                run.start_ms,
                run.kind.as_str(),
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    /// Closes the run `id` at `end_ms` unless it is closed already (the
    /// first to see an end wins). Returns whether it closed it.
    pub fn end(&self, id: i64, end_ms: i64, by: EndedBy) -> Result<bool, UsageError> {
        let changed = self.db().execute(
            "UPDATE runs SET end_ms = MAX(start_ms, ?2), ended_by = ?3
             WHERE id = ?1 AND end_ms IS NULL",
            params![id, end_ms, by.as_str()],
        )?;
        Ok(changed > 0)
    }

    /// Closes the open runs of a container at `end_ms`; returns how many.
    pub fn end_container(
        &self,
        container_id: &str,
        end_ms: i64,
        by: EndedBy,
    ) -> Result<usize, UsageError> {
        Ok(self.db().execute(
            "UPDATE runs SET end_ms = MAX(start_ms, ?2), ended_by = ?3
             WHERE container_id = ?1 AND end_ms IS NULL",
            params![container_id, end_ms, by.as_str()],
        )?)
    }

    /// Notes that the run `id` (or, with `None`, every open run) is alive
    /// at `now_ms`.
    pub fn beat(&self, id: Option<i64>, now_ms: i64) -> Result<(), UsageError> {
        self.db().execute(
            "UPDATE runs SET seen_ms = MAX(seen_ms, ?2)
             WHERE end_ms IS NULL AND (?1 IS NULL OR id = ?1)",
            params![id, now_ms],
        )?;
        Ok(())
    }

    /// The open run of a container, if any.
    pub fn open_run_of(&self, container_id: &str) -> Result<Option<i64>, UsageError> {
        Ok(self
            .db()
            .query_row(
                "SELECT id FROM runs WHERE container_id = ?1 AND end_ms IS NULL
                 ORDER BY id DESC LIMIT 1",
                [container_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// At hulld's start: closes every open run whose container `alive` does
    /// not report running, at its last beat (its witness would have closed
    /// it at its real end had it seen one). Returns the runs it closed.
    pub fn reconcile(&self, alive: impl Fn(&str) -> bool) -> Result<Vec<i64>, UsageError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let open: Vec<(i64, String)> = {
            let mut statement =
                tx.prepare("SELECT id, container_id FROM runs WHERE end_ms IS NULL")?;
            let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut closed = Vec::new();
        for (id, container) in open {
            if alive(&container) {
                continue;
            }
            tx.execute(
                "UPDATE runs SET end_ms = seen_ms, ended_by = ?2 WHERE id = ?1",
                params![id, EndedBy::LastSeen.as_str()],
            )?;
            closed.push(id);
        }
        tx.commit()?;
        Ok(closed)
    }

    /// The runs of `owner` that ran at or after `since_ms`, oldest first;
    /// running ones are billed up to `now_ms`.
    pub fn report(
        &self,
        owner: Owner<'_>,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Run>, UsageError> {
        let (everyone, tenant) = owner.filter();
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT id, tenant, container_id, container_name, size, vcpus, memory_mib,
                    start_ms, end_ms, ended_by, kind
             FROM runs
             WHERE (end_ms IS NULL OR end_ms >= ?1)
               AND (?2 OR tenant IS ?3)
             ORDER BY start_ms, id LIMIT ?4",
        )?;
        let rows = statement.query_map(
            params![since_ms, everyone, tenant, MAX_REPORT as i64 + 1],
            |row| {
                let start: i64 = row.get(7)?;
                let end: Option<i64> = row.get(8)?;
                Ok(Run {
                    id: row.get(0)?,
                    tenant: row.get(1)?,
                    kind: row.get(10)?,
                    container_id: row.get(2)?,
                    container_name: row.get(3)?,
                    size: Size {
                        name: row.get(4)?,
                        vcpus: row.get(5)?,
                        memory_mib: row.get(6)?,
                    },
                    start,
                    end,
                    seconds: billed_seconds(start, end.unwrap_or(now_ms)),
                    ended_by: row.get(9)?,
                })
            },
        )?;
        let runs: Vec<Run> = rows.collect::<Result<_, _>>()?;
        if runs.len() > MAX_REPORT {
            return Err(UsageError::TooMany);
        }
        Ok(runs)
    }

    /// Billed seconds of every run so far, by tenant (`None`: the
    /// operator's) and size name: what the metrics count.
    pub fn totals(&self, now_ms: i64) -> Result<Vec<(Option<String>, String, u64)>, UsageError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT tenant, size,
                    SUM(MAX((COALESCE(end_ms, ?1) - start_ms + 999) / 1000, ?2))
             FROM runs GROUP BY tenant, size ORDER BY tenant, size",
        )?;
        let rows = statement.query_map(params![now_ms, MINIMUM_SECONDS as i64], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
