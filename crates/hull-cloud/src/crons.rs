//! Crons and their history, owned by a tenant or by the operator.
//!
//! A cron's definition and its runs' records are JSON that this module
//! keeps but does not read (their model lives with the scheduler); what
//! it owns is who may see a cron, its counts and when it fires next, and
//! that a cron's history and a tenant's crons stay bounded.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::owned::{self, NoRoom};
use crate::store::{now, Store};

/// Crons one owner may hold: each one is state hulld keeps and wakes for.
pub const MAX_CRONS_PER_OWNER: usize = 50;
/// Runs kept per cron, as Hyper.sh kept.
pub const MAX_HISTORY: usize = 100;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS crons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL: the operator's.
    tenant TEXT REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    suspended INTEGER NOT NULL DEFAULT 0,
    next_run INTEGER,
    success_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    last_run INTEGER,
    created INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS crons_by_owner ON crons(ifnull(tenant, ''), name);
CREATE TABLE IF NOT EXISTS cron_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cron INTEGER NOT NULL REFERENCES crons(id) ON DELETE CASCADE,
    scheduled INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cron_runs_by_cron ON cron_runs(cron, seq);
";

#[derive(Debug, thiserror::Error)]
pub enum CronsError {
    #[error("the cloud database failed")]
    Db(#[from] rusqlite::Error),
    #[error("a cron named {0} already exists")]
    Exists(String),
    #[error("no cron {0}")]
    NoCron(String),
    #[error("no tenant {0}")]
    NoTenant(String),
    #[error("{owner} already has {MAX_CRONS_PER_OWNER} crons: remove one first")]
    TooMany { owner: String },
}

/// A cron as stored. `tenant` is `None` for the operator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CronRow {
    pub id: i64,
    pub tenant: Option<String>,
    pub name: String,
    /// Its definition, as JSON.
    pub spec: String,
    pub suspended: bool,
    /// The first fire time not yet handled (Unix seconds).
    pub next_run: Option<i64>,
    pub success_count: u64,
    pub error_count: u64,
    /// When its last run started (Unix seconds).
    pub last_run: Option<i64>,
    pub created: u64,
}

/// How a finished run moves a cron's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Error,
    /// Missed or skipped: in the history, in neither count.
    Uncounted,
}

const COLUMNS: &str =
    "id, tenant, name, spec, suspended, next_run, success_count, error_count, last_run, created";

fn row_of(row: &Row<'_>) -> rusqlite::Result<CronRow> {
    Ok(CronRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        spec: row.get(3)?,
        suspended: row.get(4)?,
        next_run: row.get(5)?,
        success_count: row.get(6)?,
        error_count: row.get(7)?,
        last_run: row.get(8)?,
        created: row.get(9)?,
    })
}

impl Store {
    /// Creates `tenant`'s (`None`: the operator's) cron `name`.
    pub fn create_cron(
        &self,
        tenant: Option<&str>,
        name: &str,
        spec: &str,
        next_run: Option<i64>,
    ) -> Result<CronRow, CronsError> {
        let mut db = self.db();
        // IMMEDIATE: the count and the insert see the same crons.
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match owned::room(&tx, "crons", tenant, MAX_CRONS_PER_OWNER)? {
            Ok(()) => {}
            Err(NoRoom::NoTenant(tenant)) => return Err(CronsError::NoTenant(tenant)),
            Err(NoRoom::Full(owner)) => return Err(CronsError::TooMany { owner }),
        }
        let inserted = tx.execute(
            "INSERT INTO crons (tenant, name, spec, next_run, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![tenant, name, spec, next_run, now()],
        )?;
        if inserted == 0 {
            return Err(CronsError::Exists(name.to_owned()));
        }
        let id = tx.last_insert_rowid();
        let row = tx.query_row(
            &format!("SELECT {COLUMNS} FROM crons WHERE id = ?1"),
            [id],
            row_of,
        )?;
        tx.commit()?;
        Ok(row)
    }

    /// `tenant`'s cron `name`: another owner's answers as a missing one.
    pub fn cron(&self, tenant: Option<&str>, name: &str) -> Result<CronRow, CronsError> {
        self.db()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM crons WHERE ifnull(tenant, '') = ifnull(?1, '') AND name = ?2"
                ),
                params![tenant, name],
                row_of,
            )
            .optional()?
            .ok_or_else(|| CronsError::NoCron(name.to_owned()))
    }

    /// A cron by its id, if it still exists.
    pub fn cron_by_id(&self, id: i64) -> Result<Option<CronRow>, CronsError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM crons WHERE id = ?1"),
                [id],
                row_of,
            )
            .optional()?)
    }

    /// `tenant`'s crons by name; every owner's with `all`.
    pub fn crons(&self, tenant: Option<&str>, all: bool) -> Result<Vec<CronRow>, CronsError> {
        let db = self.db();
        let mut statement = db.prepare(&format!(
            "SELECT {COLUMNS} FROM crons WHERE ?2 OR ifnull(tenant, '') = ifnull(?1, '')
             ORDER BY ifnull(tenant, ''), name"
        ))?;
        let rows = statement.query_map(params![tenant, all], row_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes `tenant`'s cron `name` and its history.
    pub fn remove_cron(&self, tenant: Option<&str>, name: &str) -> Result<CronRow, CronsError> {
        let row = self.cron(tenant, name)?;
        self.db()
            .execute("DELETE FROM crons WHERE id = ?1", [row.id])?;
        Ok(row)
    }

    /// Suspends or resumes `tenant`'s cron `name`; a resumed cron fires
    /// next at `next_run`, not at the times it slept through.
    pub fn suspend_cron(
        &self,
        tenant: Option<&str>,
        name: &str,
        suspended: bool,
        next_run: Option<i64>,
    ) -> Result<CronRow, CronsError> {
        let row = self.cron(tenant, name)?;
        self.db().execute(
            "UPDATE crons SET suspended = ?2, next_run = ifnull(?3, next_run) WHERE id = ?1",
            params![row.id, suspended, next_run],
        )?;
        self.cron(tenant, name)
    }

    /// Moves cron `id`'s first unhandled fire time to `next_run`.
    pub fn set_cron_next(&self, id: i64, next_run: Option<i64>) -> Result<(), CronsError> {
        self.db().execute(
            "UPDATE crons SET next_run = ?2 WHERE id = ?1",
            params![id, next_run],
        )?;
        Ok(())
    }

    /// Adds a run's record to cron `id`'s history (dropping the oldest past
    /// `MAX_HISTORY`) and counts it. A cron removed meanwhile keeps nothing.
    pub fn record_cron_run(
        &self,
        id: i64,
        scheduled: i64,
        started: Option<i64>,
        outcome: Outcome,
        record: &str,
    ) -> Result<(), CronsError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (successes, errors) = match outcome {
            Outcome::Success => (1, 0),
            Outcome::Error => (0, 1),
            Outcome::Uncounted => (0, 0),
        };
        let changed = tx.execute(
            "UPDATE crons SET success_count = success_count + ?2, error_count = error_count + ?3,
             last_run = CASE WHEN ?4 IS NULL THEN last_run ELSE max(ifnull(last_run, ?4), ?4) END
             WHERE id = ?1",
            params![id, successes, errors, started],
        )?;
        if changed == 0 {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO cron_runs (cron, scheduled, record) VALUES (?1, ?2, ?3)",
            params![id, scheduled, record],
        )?;
        tx.execute(
            "DELETE FROM cron_runs WHERE cron = ?1 AND seq NOT IN
             (SELECT seq FROM cron_runs WHERE cron = ?1 ORDER BY seq DESC LIMIT ?2)",
            params![id, MAX_HISTORY],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Cron `id`'s run records, oldest first: those scheduled at or after
    /// `since`, the last `tail` of them.
    pub fn cron_history(
        &self,
        id: i64,
        since: Option<i64>,
        tail: Option<usize>,
    ) -> Result<Vec<String>, CronsError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT record FROM (SELECT seq, record FROM cron_runs
             WHERE cron = ?1 AND scheduled >= ?2 ORDER BY seq DESC LIMIT ?3) ORDER BY seq",
        )?;
        let limit = tail.unwrap_or(MAX_HISTORY).min(MAX_HISTORY);
        let rows = statement.query_map(params![id, since.unwrap_or(i64::MIN), limit], |r| {
            r.get::<_, String>(0)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
#[path = "crons_tests.rs"]
mod tests;
