//! What happened to a function's calls, as `func logs` and `func status`
//! show it: each call's events (CALL, QUEUED, RUNNING, FINISHED, FAILED)
//! with the first bytes of its stdin, stdout and stderr, and counts of its
//! calls over the function's life.
//!
//! Events are kept per function up to a bound, oldest dropped first, so a
//! busy function's log holds its recent calls and never grows without
//! end; the counts are kept apart and survive the dropping.

use rusqlite::{params, Row, TransactionBehavior};
use serde::Serialize;

use crate::funcs::FuncsError;
use crate::store::Store;

/// Events one function keeps; older ones are dropped as new ones come.
pub const MAX_EVENTS_PER_FUNC: usize = 1000;
/// The most bytes of stdin, stdout or stderr an event shows (Hyper.sh's).
pub const SHORT: usize = 255;
/// The most bytes of an event's message.
const MAX_MESSAGE: usize = 1024;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS func_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    func INTEGER NOT NULL REFERENCES funcs(id) ON DELETE CASCADE,
    call TEXT NOT NULL,
    -- Milliseconds since the epoch.
    time INTEGER NOT NULL,
    event TEXT NOT NULL,
    stdin TEXT NOT NULL DEFAULT '',
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS func_events_by_func ON func_events(func, seq);
CREATE TABLE IF NOT EXISTS func_counts (
    func INTEGER PRIMARY KEY REFERENCES funcs(id) ON DELETE CASCADE,
    total INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0
);
";

/// A step of a call's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Event {
    /// Received, with its stdin.
    Call,
    /// Recorded and waiting for a slot.
    Queued,
    /// Its container started.
    Running,
    /// Exited 0, with its stdout.
    Finished,
    /// Anything else, with its stderr or what went wrong.
    Failed,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "CALL",
            Self::Queued => "QUEUED",
            Self::Running => "RUNNING",
            Self::Finished => "FINISHED",
            Self::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "CALL" => Self::Call,
            "QUEUED" => Self::Queued,
            "RUNNING" => Self::Running,
            "FINISHED" => Self::Finished,
            _ => Self::Failed,
        }
    }
}

/// One event as stored and as `func logs` streams it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventRow {
    /// Orders events across functions; a follower resumes after it.
    #[serde(skip)]
    pub seq: i64,
    #[serde(skip)]
    pub func: i64,
    pub call_id: String,
    /// Milliseconds since the epoch.
    #[serde(skip)]
    pub time_ms: i64,
    pub event: Event,
    pub short_stdin: String,
    pub short_stdout: String,
    pub short_stderr: String,
    pub message: String,
}

/// What an event carries beside its kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Detail<'a> {
    pub stdin: &'a [u8],
    pub stdout: &'a [u8],
    pub stderr: &'a [u8],
    pub message: &'a str,
}

/// A function's calls counted: Hyper.sh's `func status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FuncStatus {
    /// Calls received over the function's life.
    pub total: u64,
    /// Waiting for a slot now.
    pub pending: u64,
    pub running: u64,
    /// Ended with exit code 0.
    pub finished: u64,
    /// Ended otherwise: a non-zero exit, a timeout, too much output.
    pub failed: u64,
}

/// The first `max` bytes of `bytes` as text. A character the bound cuts
/// in two is left out rather than shown as a replacement.
pub fn short(bytes: &[u8], max: usize) -> String {
    let mut end = bytes.len().min(max);
    let mut steps = 0;
    while end < bytes.len() && end > 0 && steps < 3 && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
        steps += 1;
    }
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn event_of(row: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        seq: row.get(0)?,
        func: row.get(1)?,
        call_id: row.get(2)?,
        time_ms: row.get(3)?,
        event: Event::parse(&row.get::<_, String>(4)?),
        short_stdin: row.get(5)?,
        short_stdout: row.get(6)?,
        short_stderr: row.get(7)?,
        message: row.get(8)?,
    })
}

const EVENT_COLUMNS: &str = "seq, func, call, time, event, stdin, stdout, stderr, message";

impl Store {
    /// Records `event` of call `call` of function `func`, counts it, and
    /// drops the function's oldest events past the bound. Answers the
    /// stored event, or `None` when the function is gone.
    pub fn add_func_event(
        &self,
        func: i64,
        call: &str,
        event: Event,
        detail: Detail<'_>,
    ) -> Result<Option<EventRow>, FuncsError> {
        let time = crate::usage::now_ms();
        let mut db = self.db();
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT INTO func_events (func, call, time, event, stdin, stdout, stderr, message)
             SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8 FROM funcs WHERE id = ?1",
            params![
                func,
                call,
                time,
                event.as_str(),
                short(detail.stdin, SHORT),
                short(detail.stdout, SHORT),
                short(detail.stderr, SHORT),
                short(detail.message.as_bytes(), MAX_MESSAGE),
            ],
        )?;
        if inserted == 0 {
            return Ok(None);
        }
        let seq = tx.last_insert_rowid();
        let counted = match event {
            Event::Call => Some("total"),
            Event::Finished => Some("finished"),
            Event::Failed => Some("failed"),
            Event::Queued | Event::Running => None,
        };
        if let Some(column) = counted {
            tx.execute(
                &format!(
                    "INSERT INTO func_counts (func, {column}) VALUES (?1, 1)
                     ON CONFLICT (func) DO UPDATE SET {column} = {column} + 1"
                ),
                [func],
            )?;
        }
        tx.execute(
            "DELETE FROM func_events WHERE func = ?1 AND seq <= (
                 SELECT seq FROM func_events WHERE func = ?1
                 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            params![func, MAX_EVENTS_PER_FUNC as i64],
        )?;
        let row = tx.query_row(
            &format!("SELECT {EVENT_COLUMNS} FROM func_events WHERE seq = ?1"),
            [seq],
            event_of,
        )?;
        tx.commit()?;
        Ok(Some(row))
    }

    /// Function `func`'s kept events, oldest first: of call `call` only
    /// when given, the last `tail` when given.
    pub fn func_events(
        &self,
        func: i64,
        call: Option<&str>,
        tail: Option<usize>,
    ) -> Result<Vec<EventRow>, FuncsError> {
        let db = self.db();
        let limit = tail.map_or(-1, |t| t.min(MAX_EVENTS_PER_FUNC) as i64);
        let mut statement = db.prepare(&format!(
            "SELECT {EVENT_COLUMNS} FROM (
                 SELECT {EVENT_COLUMNS} FROM func_events
                 WHERE func = ?1 AND (?2 IS NULL OR call = ?2)
                 ORDER BY seq DESC LIMIT ?3)
             ORDER BY seq"
        ))?;
        let rows = statement.query_map(params![func, call, limit], event_of)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Function `func`'s calls counted.
    pub fn func_status(&self, func: i64) -> Result<FuncStatus, FuncsError> {
        let db = self.db();
        let (total, finished, failed): (i64, i64, i64) = db
            .query_row(
                "SELECT total, finished, failed FROM func_counts WHERE func = ?1",
                [func],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok((0, 0, 0)),
                e => Err(e),
            })?;
        let (pending, running): (i64, i64) = db.query_row(
            "SELECT ifnull(sum(state = 'queued'), 0), ifnull(sum(state = 'running'), 0)
             FROM func_calls WHERE func = ?1",
            [func],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let count = |n: i64| n.max(0) as u64;
        Ok(FuncStatus {
            total: count(total),
            pending: count(pending),
            running: count(running),
            finished: count(finished),
            failed: count(failed),
        })
    }
}

#[cfg(test)]
#[path = "func_events_tests.rs"]
mod tests;
