//! One call: a new container of the function's image made and started
//! through the API's own routes, as its owner would (the same checks,
//! quotas and metering as the owner's `docker run`), its stdin fed, its
//! stdout and stderr read within bounds, killed at its timeout, removed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hull_cloud::funcs::CallState;
use hull_runtime::container::{LogStream, StdinMessage};
use hull_runtime::WaitCondition;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tracing::warn;

use super::FuncSpec;
use crate::daemon::Daemon;
use crate::server::crons::call as api;

/// Stdin is handed to the container in pieces of this size.
const STDIN_PIECE: usize = 64 * 1024;
/// The most of a failed call's stderr kept.
const MAX_STDERR: usize = 64 * 1024;

/// The container of call `id` of function `func`.
pub(super) fn container_name(func: &str, id: &str) -> String {
    format!("{func}-call-{id}")
}

pub(super) struct Request<'a> {
    pub owner: Option<&'a str>,
    pub func: &'a str,
    pub id: &'a str,
    pub spec: &'a FuncSpec,
    pub env: Vec<String>,
    pub stdin: Vec<u8>,
    pub max_output: usize,
}

/// Runs the call; its outcome and result (stdout, or what went wrong).
pub(super) async fn run(daemon: &Arc<Daemon>, request: Request<'_>) -> (CallState, Vec<u8>) {
    let owner = request.owner;
    let name = container_name(request.func, request.id);
    let config = request.spec.container_config(&request.env);
    let body = Bytes::from(serde_json::to_vec(&config).expect("JSON serializes"));
    let created = api(
        daemon,
        owner,
        Method::POST,
        &format!("/containers/create?name={name}"),
        body,
    )
    .await;
    let id = match expect(created, StatusCode::CREATED, "create") {
        Ok(answer) => serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v["Id"].as_str().map(str::to_owned)),
        Err(message) => return (CallState::Failed, message.into_bytes()),
    };
    let Some(id) = id else {
        return (
            CallState::Failed,
            b"the call's container has no id".to_vec(),
        );
    };
    let outcome = attend(daemon, &request, &id).await;
    let removed = api(
        daemon,
        owner,
        Method::DELETE,
        &format!("/containers/{id}?force=1"),
        Bytes::new(),
    )
    .await;
    if let Err(message) = expect(removed, StatusCode::NO_CONTENT, "remove") {
        warn!(container = %id, %message, "cannot remove a call's container");
    }
    outcome
}

async fn attend(daemon: &Arc<Daemon>, request: &Request<'_>, id: &str) -> (CallState, Vec<u8>) {
    let container = match daemon.containers().get(id) {
        Ok(container) => container,
        Err(err) => {
            return (
                CallState::Failed,
                hull_runtime::error_chain(&err).into_bytes(),
            )
        }
    };
    // Subscribed before the start: the first bytes must not be missed.
    let mut output = container.attach_output(true, true);
    let stdin = container.stdin();
    let started = api(
        daemon,
        request.owner,
        Method::POST,
        &format!("/containers/{id}/start"),
        Bytes::new(),
    )
    .await;
    if let Err(message) = expect(started, StatusCode::NO_CONTENT, "start") {
        return (CallState::Failed, message.into_bytes());
    }
    if let Some(stdin) = stdin {
        let bytes = Bytes::from(request.stdin.clone());
        tokio::spawn(async move {
            for piece in bytes.chunks(STDIN_PIECE) {
                let piece = bytes.slice_ref(piece);
                if stdin.send(StdinMessage::Data(piece)).await.is_err() {
                    return;
                }
            }
            let _ = stdin.send(StdinMessage::Close).await;
        });
    }
    let max_output = request.max_output;
    let ran = async {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some((stream, bytes)) = output.recv().await {
            match stream {
                LogStream::Stdout => {
                    if stdout.len() + bytes.len() > max_output {
                        return Err(());
                    }
                    stdout.extend_from_slice(&bytes);
                }
                LogStream::Stderr => {
                    let room = MAX_STDERR.saturating_sub(stderr.len());
                    stderr.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
        }
        let (code, error) = container.wait(WaitCondition::NotRunning).await;
        Ok((code, error, stdout, stderr))
    };
    let timeout = Duration::from_secs(request.spec.timeout_seconds);
    let outcome = match tokio::time::timeout(timeout, ran).await {
        Ok(Ok((0, _, stdout, _))) => return (CallState::Finished, stdout),
        Ok(Ok((code, error, _, mut stderr))) => {
            if stderr.is_empty() {
                stderr = format!("the call exited with code {code}: {error}").into_bytes();
            }
            return (CallState::Failed, stderr);
        }
        Ok(Err(())) => (
            CallState::TooLarge,
            format!("the call wrote more than {max_output} bytes to stdout"),
        ),
        Err(_) => (
            CallState::Timeout,
            format!(
                "the call ran past its timeout of {} s",
                request.spec.timeout_seconds
            ),
        ),
    };
    // The VM is killed at once: a call past its bounds gets no grace.
    let killed = api(
        daemon,
        request.owner,
        Method::POST,
        &format!("/containers/{id}/kill"),
        Bytes::new(),
    )
    .await;
    if let Err(message) = expect(killed, StatusCode::NO_CONTENT, "kill") {
        warn!(container = %id, %message, "cannot kill a call's container");
    }
    (outcome.0, outcome.1.into_bytes())
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
    Err(format!(
        "cannot {step} the call's container ({status}): {message}"
    ))
}
