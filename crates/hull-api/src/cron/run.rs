//! One run of a cron: its container made, started, waited for, read and
//! removed through the API's own routes, as its owner would call them.
//! A tenant's run thereby passes the same checks, quotas and metering as
//! the tenant's own `docker run` would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hull_cron::record::{container_name, output_tail};
use hull_cron::{CronSpec, Run, Status};
use hyper::{Method, StatusCode};

use crate::daemon::Daemon;
use crate::server::crons::call;
use crate::stdcopy::{Decoder, Stream};

/// Runs `spec`'s container for the time `scheduled` of the cron `name`
/// owned by `owner` (`adopted`: a stopped hulld started it; it is only
/// waited for); `replaced` is set when a later run (policy Replace)
/// stopped it.
pub(super) async fn run(
    daemon: &Arc<Daemon>,
    owner: Option<&str>,
    name: &str,
    spec: &CronSpec,
    scheduled: i64,
    adopted: bool,
    replaced: &AtomicBool,
) -> Run {
    let container = container_name(name, scheduled);
    let mut record = Run::not_started(name, scheduled, Status::Failed);
    let outcome = if adopted {
        attend(daemon, owner, &container, false).await
    } else {
        record.started = Some(super::unix_now());
        match create(daemon, owner, &container, spec).await {
            Ok(()) => attend(daemon, owner, &container, true).await,
            Err(message) => Err(message),
        }
    };
    record.finished = Some(super::unix_now());
    match outcome {
        Ok((exit_code, output)) => {
            record.exit_code = Some(exit_code);
            record.output = output;
            record.status = if replaced.load(Ordering::SeqCst) {
                Status::Replaced
            } else if exit_code == 0 {
                Status::Succeeded
            } else {
                Status::Failed
            };
        }
        Err(message) => record.error = Some(message),
    }
    record
}

async fn create(
    daemon: &Arc<Daemon>,
    owner: Option<&str>,
    container: &str,
    spec: &CronSpec,
) -> Result<(), String> {
    let body = Bytes::from(serde_json::to_vec(&spec.config).expect("JSON serializes"));
    let path = format!("/containers/create?name={container}");
    let created = call(daemon, owner, Method::POST, &path, body).await;
    expect(created, StatusCode::CREATED, "create").map(drop)
}

/// Starts the container (with `start`) and waits for it, then reads its
/// output's tail and removes it: its exit code and output, or why it did
/// not run.
async fn attend(
    daemon: &Arc<Daemon>,
    owner: Option<&str>,
    container: &str,
    start: bool,
) -> Result<(i64, String), String> {
    let path = format!("/containers/{container}");
    let ran = async {
        if start {
            let start = format!("{path}/start");
            let started = call(daemon, owner, Method::POST, &start, Bytes::new()).await;
            expect(started, StatusCode::NO_CONTENT, "start")?;
        }
        let wait = format!("{path}/wait");
        let waited = call(daemon, owner, Method::POST, &wait, Bytes::new()).await;
        let waited = expect(waited, StatusCode::OK, "wait for")?;
        let exit_code = serde_json::from_slice::<serde_json::Value>(&waited)
            .ok()
            .and_then(|v| v.get("StatusCode").and_then(serde_json::Value::as_i64))
            .ok_or("the container's exit code could not be read")?;
        let logs = format!(
            "{path}/logs?stdout=1&stderr=1&tail={}",
            hull_cron::record::OUTPUT_LINES
        );
        let logs = call(daemon, owner, Method::GET, &logs, Bytes::new()).await;
        let output = match expect(logs, StatusCode::OK, "read the output of") {
            Ok(bytes) => output_tail(&demux(&bytes)),
            Err(message) => message,
        };
        Ok::<_, String>((exit_code, output))
    }
    .await;
    let remove = format!("{path}?force=1");
    let removed = call(daemon, owner, Method::DELETE, &remove, Bytes::new()).await;
    if let Err(message) = expect(removed, StatusCode::NO_CONTENT, "remove") {
        tracing::warn!(%container, %message, "cannot remove a cron run's container");
    }
    ran
}

fn expect(
    (status, body): (StatusCode, Bytes),
    wanted: StatusCode,
    step: &str,
) -> Result<Bytes, String> {
    if status == wanted {
        return Ok(body);
    }
    let message = serde_json::from_slice::<crate::types::ErrorBody>(&body)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    Err(format!("cannot {step} the container ({status}): {message}"))
}

/// Docker's multiplexed log stream as plain bytes; a container with a
/// terminal sends plain bytes already.
fn demux(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = Decoder::default();
    decoder.extend(bytes);
    let mut out = Vec::with_capacity(bytes.len());
    loop {
        match decoder.next_chunk() {
            Ok(Some((Stream::Stdout | Stream::Stderr, chunk))) => out.extend_from_slice(&chunk),
            Ok(Some(_)) => {}
            Ok(None) if !decoder.has_partial_chunk() => return out,
            Ok(None) | Err(_) if out.is_empty() => return bytes.to_vec(),
            Ok(None) | Err(_) => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplexed_output_is_joined_and_plain_output_kept() {
        let mut framed = vec![1, 0, 0, 0, 0, 0, 0, 3];
        framed.extend_from_slice(b"hi\n");
        framed.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 4]);
        framed.extend_from_slice(b"err\n");
        assert_eq!(demux(&framed), b"hi\nerr\n");
        assert_eq!(demux(b"plain text\n"), b"plain text\n");
        assert_eq!(demux(b""), b"");
    }
}
