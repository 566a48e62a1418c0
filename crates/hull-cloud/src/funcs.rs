//! Functions and their calls, owned by a tenant or by the operator.
//!
//! A function's definition is JSON this module keeps but does not read
//! (its model lives with the call plane); what it owns is who may see a
//! function, the uuid that is its calls' secret, and each call's state
//! from queued to fetched, durable so that a queued call outlives hulld.

use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

use crate::owned::{self, NoRoom};
use crate::store::{now, Store};

/// Functions one owner may hold.
pub const MAX_FUNCS_PER_OWNER: usize = 50;
/// What a kept call costs its owner beside its bytes (its record and its
/// index entries), so that calls with no body and no output still count.
pub const CALL_OVERHEAD: u64 = 256;

/// The bytes an owner's calls hold: each kept call's record, and its
/// environment and body while queued, its result until fetched. `?1` is
/// the owner (`NULL`: the operator).
const HELD_BYTES: &str = "
SELECT ifnull(sum(?2 + ifnull(length(c.env), 0) + ifnull(length(c.body), 0)
                  + ifnull(length(c.result), 0)), 0)
FROM func_calls c JOIN funcs f ON f.id = c.func
WHERE ifnull(f.tenant, '') = ifnull(?1, '')";

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS funcs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL: the operator's.
    tenant TEXT REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    uuid TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS funcs_by_owner ON funcs(ifnull(tenant, ''), name);
CREATE TABLE IF NOT EXISTS func_calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    func INTEGER NOT NULL REFERENCES funcs(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    -- The call's environment (a JSON array) and stdin, kept until it runs.
    env TEXT,
    body BLOB,
    -- stdout, or stderr of a failed call.
    result BLOB,
    created INTEGER NOT NULL,
    finished INTEGER
);
CREATE INDEX IF NOT EXISTS func_calls_by_state ON func_calls(state, seq);
-- An owner's held bytes are summed over its functions' calls.
CREATE INDEX IF NOT EXISTS func_calls_by_func ON func_calls(func);
";

#[derive(Debug, thiserror::Error)]
pub enum FuncsError {
    #[error("the cloud database failed")]
    Db(#[from] rusqlite::Error),
    #[error("a function named {0} already exists")]
    Exists(String),
    #[error("no function {0}")]
    NoFunc(String),
    #[error("no tenant {0}")]
    NoTenant(String),
    #[error("{owner} already has {MAX_FUNCS_PER_OWNER} functions: remove one first")]
    TooMany { owner: String },
    #[error("the system's random source failed")]
    Random,
    #[error(
        "the calls of {}'s functions hold {held} bytes (queued requests and results not \
         fetched yet), and this call's {adding} more would pass their budget of {budget}: \
         fetch the results of finished calls, remove functions whose calls are not wanted, \
         or wait for unfetched results to expire, then call again",
        who(.owner)
    )]
    Full {
        owner: Option<String>,
        held: u64,
        adding: u64,
        budget: u64,
    },
}

/// An owner as messages name it.
fn who(owner: &Option<String>) -> String {
    owner
        .as_ref()
        .map_or_else(|| "the operator".to_owned(), |t| format!("tenant {t}"))
}

/// A function as stored. `tenant` is `None` for the operator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FuncRow {
    pub id: i64,
    pub tenant: Option<String>,
    pub name: String,
    /// Its definition, as JSON.
    pub spec: String,
    /// The secret part of its call URL.
    pub uuid: String,
    pub created: u64,
}

/// Where a call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CallState {
    Queued,
    Running,
    Finished,
    Failed,
    Timeout,
    TooLarge,
    /// Its result was kept unfetched past its time, then dropped.
    Expired,
}

impl CallState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::TooLarge => "too-large",
            Self::Expired => "expired",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "finished" => Self::Finished,
            "timeout" => Self::Timeout,
            "too-large" => Self::TooLarge,
            "expired" => Self::Expired,
            _ => Self::Failed,
        }
    }

    /// Whether the call has its result (or has lost it).
    pub fn is_done(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// A call as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    pub id: String,
    pub func: i64,
    pub state: CallState,
    /// The call's environment, as a JSON array; `None` once it ran.
    pub env: Option<String>,
    pub body: Option<Vec<u8>>,
    pub result: Option<Vec<u8>>,
    pub created: u64,
    pub finished: Option<u64>,
}

const COLUMNS: &str = "id, tenant, name, spec, uuid, created";
const CALL_COLUMNS: &str = "id, func, state, env, body, result, created, finished";

fn row_of(row: &Row<'_>) -> rusqlite::Result<FuncRow> {
    Ok(FuncRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        name: row.get(2)?,
        spec: row.get(3)?,
        uuid: row.get(4)?,
        created: row.get(5)?,
    })
}

fn call_of(row: &Row<'_>) -> rusqlite::Result<CallRow> {
    Ok(CallRow {
        id: row.get(0)?,
        func: row.get(1)?,
        state: CallState::parse(&row.get::<_, String>(2)?),
        env: row.get(3)?,
        body: row.get(4)?,
        result: row.get(5)?,
        created: row.get(6)?,
        finished: row.get(7)?,
    })
}

/// `tenant`'s (`None`: the operator's) function `name`.
fn func_named(
    db: &rusqlite::Connection,
    tenant: Option<&str>,
    name: &str,
) -> Result<FuncRow, FuncsError> {
    db.query_row(
        &format!(
            "SELECT {COLUMNS} FROM funcs WHERE ifnull(tenant, '') = ifnull(?1, '') AND name = ?2"
        ),
        params![tenant, name],
        row_of,
    )
    .optional()?
    .ok_or_else(|| FuncsError::NoFunc(name.to_owned()))
}

/// `bytes` random bytes as hex: a function's uuid, a call's id.
fn random_hex(bytes: usize) -> Result<String, FuncsError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| FuncsError::Random)?;
    Ok(hex::encode(buf))
}

impl Store {
    /// Creates `tenant`'s (`None`: the operator's) function `name`.
    pub fn create_func(
        &self,
        tenant: Option<&str>,
        name: &str,
        spec: &str,
    ) -> Result<FuncRow, FuncsError> {
        let uuid = random_hex(16)?;
        let mut db = self.db();
        // IMMEDIATE: the count and the insert see the same functions.
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match owned::room(&tx, "funcs", tenant, MAX_FUNCS_PER_OWNER)? {
            Ok(()) => {}
            Err(NoRoom::NoTenant(tenant)) => return Err(FuncsError::NoTenant(tenant)),
            Err(NoRoom::Full(owner)) => return Err(FuncsError::TooMany { owner }),
        }
        let inserted = tx.execute(
            "INSERT INTO funcs (tenant, name, spec, uuid, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO NOTHING",
            params![tenant, name, spec, uuid, now()],
        )?;
        if inserted == 0 {
            return Err(FuncsError::Exists(name.to_owned()));
        }
        let id = tx.last_insert_rowid();
        let row = tx.query_row(
            &format!("SELECT {COLUMNS} FROM funcs WHERE id = ?1"),
            [id],
            row_of,
        )?;
        tx.commit()?;
        Ok(row)
    }

    /// `tenant`'s function `name`: another owner's answers as a missing one.
    pub fn func(&self, tenant: Option<&str>, name: &str) -> Result<FuncRow, FuncsError> {
        func_named(&self.db(), tenant, name)
    }

    /// The function whose uuid is `uuid`, if any.
    pub fn func_by_uuid(&self, uuid: &str) -> Result<Option<FuncRow>, FuncsError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM funcs WHERE uuid = ?1"),
                [uuid],
                row_of,
            )
            .optional()?)
    }

    /// A function by its id, if it still exists.
    pub fn func_by_id(&self, id: i64) -> Result<Option<FuncRow>, FuncsError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM funcs WHERE id = ?1"),
                [id],
                row_of,
            )
            .optional()?)
    }

    /// `tenant`'s functions by name; every owner's with `all`.
    pub fn funcs(&self, tenant: Option<&str>, all: bool) -> Result<Vec<FuncRow>, FuncsError> {
        let db = self.db();
        let mut statement = db.prepare(&format!(
            "SELECT {COLUMNS} FROM funcs WHERE ?2 OR ifnull(tenant, '') = ifnull(?1, '')
             ORDER BY ifnull(tenant, ''), name"
        ))?;
        let rows = statement.query_map(params![tenant, all], row_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes `tenant`'s function `name` and its calls: the function and
    /// the ids of its calls that were running, whose containers are the
    /// caller's to stop. A call that starts after this finds its record
    /// gone.
    pub fn remove_func(
        &self,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<(FuncRow, Vec<String>), FuncsError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = func_named(&tx, tenant, name)?;
        let running = {
            let mut statement = tx.prepare(
                "SELECT id FROM func_calls WHERE func = ?1 AND state = 'running' ORDER BY seq",
            )?;
            let ids = statement.query_map([row.id], |r| r.get(0))?;
            ids.collect::<Result<Vec<String>, _>>()?
        };
        tx.execute("DELETE FROM funcs WHERE id = ?1", [row.id])?;
        tx.commit()?;
        Ok((row, running))
    }

    /// Replaces `tenant`'s function `name`'s definition (with `spec`) and
    /// its uuid (with `refresh`: the old call URL answers 404 from now on).
    pub fn update_func(
        &self,
        tenant: Option<&str>,
        name: &str,
        spec: Option<&str>,
        refresh: bool,
    ) -> Result<FuncRow, FuncsError> {
        let row = self.func(tenant, name)?;
        let uuid = if refresh {
            random_hex(16)?
        } else {
            row.uuid.clone()
        };
        self.db().execute(
            "UPDATE funcs SET spec = ifnull(?2, spec), uuid = ?3 WHERE id = ?1",
            params![row.id, spec, uuid],
        )?;
        self.func(tenant, name)
    }

    /// Records a queued call of function `func`; its id. Refused if the
    /// bytes the calls of the function's owner hold would pass `budget`.
    pub fn add_call(
        &self,
        func: &FuncRow,
        env: &str,
        body: &[u8],
        budget: u64,
    ) -> Result<String, FuncsError> {
        let id = random_hex(12)?;
        let adding = CALL_OVERHEAD + (env.len() + body.len()) as u64;
        let mut db = self.db();
        // IMMEDIATE: the sum and the insert see the same calls.
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let held: i64 = tx.query_row(HELD_BYTES, params![func.tenant, CALL_OVERHEAD], |r| {
            r.get(0)
        })?;
        let held = held.max(0) as u64;
        if held.saturating_add(adding) > budget {
            return Err(FuncsError::Full {
                owner: func.tenant.clone(),
                held,
                adding,
                budget,
            });
        }
        let inserted = tx.execute(
            "INSERT INTO func_calls (id, func, state, env, body, created)
             SELECT ?1, id, 'queued', ?3, ?4, ?5 FROM funcs WHERE id = ?2",
            params![id, func.id, env, body, now()],
        )?;
        if inserted == 0 {
            return Err(FuncsError::NoFunc(func.name.clone()));
        }
        tx.commit()?;
        Ok(id)
    }

    /// The bytes the calls of `tenant`'s (`None`: the operator's)
    /// functions hold, as `add_call` counts them against its budget.
    pub fn held_bytes(&self, tenant: Option<&str>) -> Result<u64, FuncsError> {
        let held: i64 = self
            .db()
            .query_row(HELD_BYTES, params![tenant, CALL_OVERHEAD], |r| r.get(0))?;
        Ok(held.max(0) as u64)
    }

    /// Call `id`, if it is still kept.
    pub fn call(&self, id: &str) -> Result<Option<CallRow>, FuncsError> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM func_calls WHERE id = ?1"),
                [id],
                call_of,
            )
            .optional()?)
    }

    /// Marks call `id` running. Its environment and body are kept (and
    /// counted against its owner's budget) until its result takes their
    /// place, so that what the owner holds does not dip while the call
    /// runs, and a call whose container never started can run again after
    /// a restart.
    pub fn start_call(&self, id: &str) -> Result<(), FuncsError> {
        self.db().execute(
            "UPDATE func_calls SET state = 'running' WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Stores call `id`'s outcome.
    pub fn finish_call(&self, id: &str, state: CallState, result: &[u8]) -> Result<(), FuncsError> {
        self.db().execute(
            "UPDATE func_calls SET state = ?2, result = ?3, finished = ?4, env = NULL, body = NULL
             WHERE id = ?1",
            params![id, state.as_str(), result, now()],
        )?;
        Ok(())
    }

    /// Takes call `id` of function `func` if it is done: a result is
    /// fetched once. A call not done yet is answered and kept; one of
    /// another function answers as missing.
    pub fn take_call(&self, func: i64, id: &str) -> Result<Option<CallRow>, FuncsError> {
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM func_calls WHERE id = ?1 AND func = ?2"),
                params![id, func],
                call_of,
            )
            .optional()?;
        if row.as_ref().is_some_and(|r| r.state.is_done()) {
            tx.execute("DELETE FROM func_calls WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(row)
    }

    /// Calls waiting to run, oldest first: (function, its owner, call).
    pub fn queued_calls(&self) -> Result<Vec<(i64, Option<String>, String)>, FuncsError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT c.func, f.tenant, c.id FROM func_calls c JOIN funcs f ON f.id = c.func
             WHERE c.state = 'queued' ORDER BY c.seq",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls marked running, oldest first: (function, its owner, call).
    /// At start they are those a stopped hulld left running, to be taken
    /// back with their containers.
    pub fn running_calls(&self) -> Result<Vec<(i64, Option<String>, String)>, FuncsError> {
        let db = self.db();
        let mut statement = db.prepare(
            "SELECT c.func, f.tenant, c.id FROM func_calls c JOIN funcs f ON f.id = c.func
             WHERE c.state = 'running' ORDER BY c.seq",
        )?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Drops the results of calls done before `unfetched_before` (they then
    /// answer as expired) and forgets expired ones done before
    /// `forget_before`.
    pub fn expire_calls(
        &self,
        unfetched_before: u64,
        forget_before: u64,
    ) -> Result<(), FuncsError> {
        let db = self.db();
        db.execute(
            "DELETE FROM func_calls WHERE state = 'expired' AND finished < ?1",
            [forget_before],
        )?;
        db.execute(
            "UPDATE func_calls SET state = 'expired', result = NULL
             WHERE state NOT IN ('queued', 'running', 'expired') AND finished < ?1",
            [unfetched_before],
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "funcs_tests.rs"]
mod tests;
