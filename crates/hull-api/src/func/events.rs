//! A function's call events, stored and streamed: what `func logs` shows
//! (Hyper.sh's CALL, QUEUED, RUNNING, FINISHED, FAILED with the first
//! bytes of stdin, stdout and stderr) and what `func status` counts.

use bytes::Bytes;
use hull_cloud::func_events::{Detail, Event, EventRow};
use hull_cloud::funcs::{CallState, FuncRow};
use hyper::header::{self, HeaderValue};
use hyper::Response;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use crate::daemon::Daemon;
use crate::server::containers::Query;
use crate::server::stream::channel_body;
use crate::server::Body;

/// Which events a `func logs` request wants.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    /// One call's events only.
    pub call: Option<String>,
    /// The last N kept events; all kept ones when `None`.
    pub tail: Option<usize>,
    /// Keep streaming new events until the client leaves.
    pub follow: bool,
}

impl LogsRequest {
    /// `callid`, `tail` (a count or `all`) and `follow` from a query.
    pub(crate) fn parse(query: &Query) -> Result<Self, String> {
        let call = query.get("callid").filter(|c| !c.is_empty());
        if let Some(call) = call {
            // Call ids are hex: anything else names no call.
            if call.len() > 64 || !call.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "invalid callid {:?}: give a call's id",
                    short(call)
                ));
            }
        }
        let tail = match query.get("tail").filter(|t| !t.is_empty() && *t != "all") {
            None => None,
            Some(tail) => Some(tail.parse::<usize>().map_err(|_| {
                format!(
                    "invalid tail {:?}: give a number of events or all",
                    short(tail)
                )
            })?),
        };
        Ok(Self {
            call: call.map(str::to_owned),
            tail,
            follow: query.flag("follow"),
        })
    }
}

/// At most 64 characters of what a client sent, for a message.
fn short(text: &str) -> String {
    text.chars().take(64).collect()
}

/// An event as the logs stream carries it: Hyper.sh's fields.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "Time")]
    time: String,
    #[serde(flatten)]
    event: &'a EventRow,
}

/// Records `event` of call `call` and hands it to followers. A failure to
/// store is logged: the call itself goes on.
pub(super) fn record(daemon: &Daemon, func: i64, call: &str, event: Event, detail: Detail<'_>) {
    match daemon.tenants().add_func_event(func, call, event, detail) {
        Ok(Some(row)) => {
            // No follower is not an error.
            let _ = daemon.funcs().events.send(row);
        }
        // The function was removed meanwhile: its events went with it.
        Ok(None) => {}
        Err(err) => {
            warn!(call, error = %hull_runtime::error_chain(&err), "cannot record a call's event")
        }
    }
}

/// The event that ends a call in `state` with `result` (its stdout, or its
/// stderr or what went wrong).
pub(super) fn record_end(daemon: &Daemon, func: i64, call: &str, state: CallState, result: &[u8]) {
    let what = String::from_utf8_lossy(result);
    let detail = match state {
        CallState::Finished => Detail {
            stdout: result,
            ..Detail::default()
        },
        CallState::Failed => Detail {
            stderr: result,
            message: "the call failed",
            ..Detail::default()
        },
        // A timeout or too much output: the result says which.
        _ => Detail {
            message: &what,
            ..Detail::default()
        },
    };
    let event = match state {
        CallState::Finished => Event::Finished,
        _ => Event::Failed,
    };
    record(daemon, func, call, event, detail);
}

fn encode(row: &EventRow) -> Bytes {
    let line = Line {
        time: hull_cron::rfc3339(row.time_ms.div_euclid(1000)),
        event: row,
    };
    let mut bytes = serde_json::to_vec(&line).expect("events serialize");
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// `func`'s events as a stream of JSON lines, oldest first; with `follow`,
/// new ones as they come until the client leaves.
pub(crate) fn logs(daemon: &Daemon, func: &FuncRow, request: LogsRequest) -> Response<Body> {
    // Subscribed before the kept events are read: none falls between.
    let mut live = daemon.funcs().events.subscribe();
    let kept = daemon
        .tenants()
        .func_events(func.id, request.call.as_deref(), request.tail);
    let (tx, mut response) = channel_body(64);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let kept = match kept {
        Ok(kept) => kept,
        Err(err) => {
            let message = format!(
                "{{\"Message\":{}}}\n",
                serde_json::Value::from(hull_runtime::error_chain(&err))
            );
            let _ = tx.try_send(Bytes::from(message));
            return response;
        }
    };
    let func = func.id;
    tokio::spawn(async move {
        let last = kept.last().map_or(0, |row| row.seq);
        for row in &kept {
            if tx.send(encode(row)).await.is_err() {
                return;
            }
        }
        if !request.follow {
            return;
        }
        let wanted = |row: &EventRow| {
            row.func == func
                && row.seq > last
                && request.call.as_deref().is_none_or(|c| c == row.call_id)
        };
        loop {
            let row = tokio::select! {
                row = live.recv() => row,
                // A client that left ends the stream at once, not at
                // the next event.
                () = tx.closed() => return,
            };
            match row {
                Ok(row) if wanted(&row) => {
                    if tx.send(encode(&row)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // A follower too slow for the host's events is told so
                // and let go, rather than shown a log with holes.
                Err(RecvError::Lagged(missed)) => {
                    let message = format!(
                        "{{\"Message\":\"the log fell {missed} events behind: ask again with --tail\"}}\n"
                    );
                    let _ = tx.send(Bytes::from(message)).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    response
}
