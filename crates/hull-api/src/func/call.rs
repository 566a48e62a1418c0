//! One call: a new container of the function's image made and started
//! through the API's own routes, as its owner would (the same checks,
//! quotas and metering as the owner's `docker run`), its stdin fed, its
//! stdout and stderr read within bounds, killed at its timeout, removed.
//!
//! What a call writes is also spooled to files under the daemon's root as
//! it comes, so that a hulld that stops while calls run can take them
//! back: their VMs go on, the next hulld re-attaches them, reads the
//! spool, follows the rest of their output and keeps their results.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hull_cloud::funcs::CallState;
use hull_runtime::container::{Container, LogStream, OutputChunk, StdinMessage};
use hull_runtime::WaitCondition;
use hyper::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::warn;

use super::spool::Spool;
use super::FuncSpec;
use crate::daemon::Daemon;
use crate::server::crons::call as api;

/// Stdin is handed to the container in pieces of this size.
const STDIN_PIECE: usize = 64 * 1024;
/// The most of a failed call's stderr kept.
pub(super) const MAX_STDERR: usize = 64 * 1024;

/// The container of call `id` of function `func`.
pub(super) fn container_name(func: &str, id: &str) -> String {
    format!("{func}-call-{id}")
}

/// The container of call `id` of `owner`'s function `func`, if it exists.
pub(super) fn container_of(
    daemon: &Daemon,
    owner: Option<&str>,
    func: &str,
    id: &str,
) -> Option<Arc<Container>> {
    let name = container_name(func, id);
    let qualified = match owner {
        Some(owner) => format!("{owner}/{name}"),
        None => name,
    };
    daemon.containers().get(&qualified).ok()
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
    // Removing the function stopped the containers of the calls it saw
    // running; one made after that finds its call's record gone.
    let outcome = if call_exists(daemon, request.id) {
        let outcome = attend(daemon, &request, &id).await;
        // Every function's image gets a template, so its next calls are
        // resumes; asked once this call is done, not to slow it.
        if let (Some(runtime), Ok(container)) =
            (daemon.started_runtime(), daemon.containers().get(&id))
        {
            let config = container.config();
            runtime.want_image_template(&config.image_id, config.size);
        }
        outcome
    } else {
        (
            CallState::Failed,
            b"the function was removed while the call started".to_vec(),
        )
    };
    remove(daemon, owner, &id).await;
    outcome
}

fn call_exists(daemon: &Daemon, id: &str) -> bool {
    matches!(daemon.tenants().call(id), Ok(Some(_)))
}

/// Removes a call's container, VM and all.
pub(super) async fn remove(daemon: &Arc<Daemon>, owner: Option<&str>, container: &str) {
    let removed = api(
        daemon,
        owner,
        Method::DELETE,
        &format!("/containers/{container}?force=1"),
        Bytes::new(),
    )
    .await;
    if let Err(message) = expect(removed, StatusCode::NO_CONTENT, "remove") {
        warn!(%container, %message, "cannot remove a call's container");
    }
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
    let collected = match Spool::create(daemon.root(), request.id) {
        Ok(spool) => Collected::new(spool, request.max_output),
        Err(err) => return (CallState::Failed, err.to_string().into_bytes()),
    };
    // Subscribed before the start: the first bytes must not be missed.
    let output = container.attach_output(true, true);
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
        collected.spool.remove();
        return (CallState::Failed, message.into_bytes());
    }
    if let Some(stdin) = stdin {
        let bytes = Bytes::from(request.stdin.clone());
        let spool = collected.spool.clone();
        tokio::spawn(async move {
            for piece in bytes.chunks(STDIN_PIECE) {
                let piece = bytes.slice_ref(piece);
                if stdin.send(StdinMessage::Data(piece)).await.is_err() {
                    return;
                }
            }
            if stdin.send(StdinMessage::Close).await.is_ok() {
                spool.mark_fed();
            }
        });
    } else {
        collected.spool.mark_fed();
    }
    let timeout = Duration::from_secs(request.spec.timeout_seconds);
    finish(daemon, request, &container, id, collected, output, timeout).await
}

/// Takes back call `request` whose container a stopped hulld left, once
/// it is re-attached: `output` was subscribed to before the re-attach, so
/// nothing it wrote since is missed. `started` is when hulld started:
/// a container that ended before it wrote output no hulld read.
pub(super) async fn resume(
    daemon: &Arc<Daemon>,
    request: Request<'_>,
    container: Arc<Container>,
    output: mpsc::Receiver<OutputChunk>,
    started: SystemTime,
) -> (CallState, Vec<u8>) {
    let id = container.id.clone();
    let state = container.state();
    let outcome = match Spool::open(daemon.root(), request.id) {
        // Never started, or its spool is gone: it never ran, so it runs now.
        _ if state.started_at.is_none() => None,
        Err(_) => None,
        Ok(spool) if !spool.fed() => Some((
            CallState::Failed,
            b"hulld stopped while it sent the call its request body: call again".to_vec(),
        )),
        Ok(_) if !state.running() && state.finished_at.is_none_or(|at| at < started) => Some((
            CallState::Failed,
            b"the call ended while hulld was stopped, and what it wrote then was not kept: \
              call again"
                .to_vec(),
        )),
        Ok(spool) => {
            let collected = Collected::resume(spool, request.max_output);
            let elapsed = state
                .started_at
                .and_then(|at| at.elapsed().ok())
                .unwrap_or_default();
            let left = Duration::from_secs(request.spec.timeout_seconds).saturating_sub(elapsed);
            // Its run is over: no output is coming, and a subscription
            // would wait for a next run.
            let output = if state.running() {
                output
            } else {
                mpsc::channel(1).1
            };
            Some(finish(daemon, &request, &container, &id, collected, output, left).await)
        }
    };
    remove(daemon, request.owner, &id).await;
    match outcome {
        Some(outcome) => outcome,
        None => run(daemon, request).await,
    }
}

/// Reads the call's output until it ends, within its bounds and `timeout`;
/// a call past them is killed. Its outcome and result.
async fn finish(
    daemon: &Arc<Daemon>,
    request: &Request<'_>,
    container: &Container,
    id: &str,
    mut collected: Collected,
    mut output: mpsc::Receiver<OutputChunk>,
    timeout: Duration,
) -> (CallState, Vec<u8>) {
    let max_output = request.max_output;
    let ran = async {
        while let Some((stream, bytes)) = output.recv().await {
            collected.take(stream, &bytes)?;
        }
        Ok::<_, TooLarge>(container.wait(WaitCondition::NotRunning).await)
    };
    let outcome = match tokio::time::timeout(timeout, ran).await {
        Ok(Ok((code, error))) => {
            let (stdout, stderr) = collected.into_parts();
            if code == 0 {
                return (CallState::Finished, stdout);
            }
            let stderr = if stderr.is_empty() {
                format!("the call exited with code {code}: {error}").into_bytes()
            } else {
                stderr
            };
            return (CallState::Failed, stderr);
        }
        Ok(Err(TooLarge)) => (
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
    collected.spool.remove();
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

/// Stdout went past its bound.
struct TooLarge;

/// A call's output so far, in memory and in its spool.
struct Collected {
    spool: Spool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    max_output: usize,
}

impl Collected {
    fn new(spool: Spool, max_output: usize) -> Self {
        Self {
            spool,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output,
        }
    }

    /// What the spool kept, bounded as a live call's output is.
    fn resume(spool: Spool, max_output: usize) -> Self {
        let (stdout, stderr) = spool.read(max_output, MAX_STDERR);
        Self {
            spool,
            stdout,
            stderr,
            max_output,
        }
    }

    fn take(&mut self, stream: LogStream, bytes: &[u8]) -> Result<(), TooLarge> {
        match stream {
            LogStream::Stdout => {
                if self.stdout.len() + bytes.len() > self.max_output {
                    return Err(TooLarge);
                }
                self.stdout.extend_from_slice(bytes);
                self.spool.append(stream, bytes);
            }
            LogStream::Stderr => {
                let room = MAX_STDERR.saturating_sub(self.stderr.len());
                let kept = &bytes[..bytes.len().min(room)];
                self.stderr.extend_from_slice(kept);
                self.spool.append(stream, kept);
            }
        }
        Ok(())
    }

    /// The output, the spool gone: the result is stored from here.
    fn into_parts(self) -> (Vec<u8>, Vec<u8>) {
        self.spool.remove();
        (self.stdout, self.stderr)
    }
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
