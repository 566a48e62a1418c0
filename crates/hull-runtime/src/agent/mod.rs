//! The host side of the control channel: requests, stdio streams and exit
//! events multiplexed over one connection to the guest agent.
//!
//! The guest is not trusted. Everything it can make the host hold is
//! bounded: a frame's payload ([`hull_proto::MAX_PAYLOAD`]), each output
//! stream's buffer (the credit the host granted, [`INITIAL_WINDOW`]; a
//! guest that sends past it has its channel closed), the frames queued for
//! it ([`OUTGOING_FRAMES`], credit coalesced per stream), the requests in
//! flight ([`MAX_IN_FLIGHT`]). Answers to requests no one waits for, exits
//! of processes no one watches and data for streams no one reads are
//! dropped. Every request has a deadline ([`deadline`]).

mod deadline;
mod dispatch;
mod handshake;
mod streams;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hull_proto::{
    ExitStatus, Frame, FrameError, FrameKind, Request, RequestError, Response, StreamId,
    INITIAL_WINDOW,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Notify, Semaphore};

pub use deadline::{deadline, request_name, AFTER_UPLOAD};
pub use streams::{InputStream, OutputStream};

use streams::Output;

/// Frames waiting for the guest to read them; a guest that stops reading
/// holds requests and input here, then their senders, never more.
pub const OUTGOING_FRAMES: usize = 64;
/// Requests waiting for an answer at once; more are refused.
pub const MAX_IN_FLIGHT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent speaks protocol version {agent} ({software}) but hulld speaks {host}: rebuild the agent so both match")]
    VersionMismatch {
        agent: u32,
        host: u32,
        software: String,
    },
    #[error("the guest agent opened with a {0:?} frame instead of a hello")]
    NoHello(FrameKind),
    #[error("the connection to the guest agent was lost")]
    Disconnected,
    #[error("the guest agent sent a malformed frame")]
    Frame(#[from] FrameError),
    #[error("the guest agent refused the request: {0}")]
    Refused(#[source] RequestError),
    #[error("the guest agent answered {0:?} unexpectedly")]
    UnexpectedResponse(Response),
    #[error("the guest agent of VM {vm} did not answer {request} within {}s: the guest is hung or hostile; stop or remove its container (its VM is then killed)", .after.as_secs())]
    Deadline {
        request: &'static str,
        vm: String,
        after: Duration,
    },
    #[error("the guest agent sent {sent} bytes on stream {stream} past the {window} bytes of credit it held")]
    PastCredit {
        stream: StreamId,
        sent: u32,
        window: u64,
    },
    #[error("VM {vm} has {limit} requests to its guest agent in flight already: try again once they are answered or timed out")]
    Busy { vm: String, limit: usize },
    #[error("hulld closed the channel to the guest agent of VM {vm}: {reason}")]
    Closed { vm: String, reason: String },
}

impl AgentError {
    /// Whether the agent can take no request any more: it did not answer
    /// one in time, or its channel is gone. Whoever must end the guest's
    /// processes then halts its VM instead.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Deadline { .. } | Self::Closed { .. } | Self::Disconnected
        )
    }
}

type ProcessKey = (String, String);

/// A request waiting for its answer.
struct Pending {
    answer: oneshot::Sender<Response>,
    /// The answer to `Reattach` gives every output stream a fresh window.
    reattach: bool,
}

#[derive(Default)]
struct Shared {
    pending: HashMap<u32, Pending>,
    outputs: HashMap<StreamId, Output>,
    input_credit: HashMap<StreamId, Arc<Semaphore>>,
    exits: HashMap<ProcessKey, oneshot::Sender<ExitStatus>>,
    /// Credit taken by readers and not yet sent, by stream: one frame per
    /// stream however many chunks were read.
    owed_credit: BTreeMap<StreamId, u32>,
    /// Why the channel closed, once it has; `Some("")` for a plain end.
    closed: Option<String>,
}

struct Inner {
    /// The VM whose agent this is, for errors.
    vm: String,
    frames: mpsc::Sender<Frame>,
    /// Wakes the writer: credit is owed, or the channel closed.
    wake_writer: Notify,
    shared: Mutex<Shared>,
    next_id: AtomicU32,
}

/// A connection to one guest agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

impl AgentClient {
    /// Waits for the agent's hello, answers it, and starts serving the channel.
    pub async fn handshake<S>(vm: &str, stream: S) -> Result<Self, AgentError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        handshake::expect_hello(&mut reader).await?;
        handshake::send_hello(&mut writer).await?;
        Ok(Self::serve_channel(vm, reader, writer))
    }

    /// Connects to the agent of a VM that an earlier hulld started. The host
    /// speaks first; what the agent wrote before it noticed the new host
    /// (perhaps half a frame) precedes its resync marker and is skipped.
    /// Ask it [`Request::Reattach`] next, after registering the streams and
    /// exits to watch.
    pub async fn reconnect<S>(vm: &str, stream: S) -> Result<Self, AgentError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, mut writer) = tokio::io::split(stream);
        handshake::send_hello(&mut writer).await?;
        let mut reader = tokio::io::BufReader::new(reader);
        handshake::skip_to_resync(&mut reader).await?;
        handshake::expect_hello(&mut reader).await?;
        Ok(Self::serve_channel(vm, reader, writer))
    }

    /// Takes over the channel of a VM cloned from a template: the agent in
    /// it greeted the template's host already, so no hello is exchanged.
    pub fn resumed<S>(vm: &str, stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        Self::serve_channel(vm, reader, writer)
    }

    /// The VM whose agent this is.
    pub fn vm(&self) -> &str {
        &self.inner.vm
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the channel is gone (the agent left, or broke the protocol).
    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Why the channel is gone: [`AgentError::Closed`] when hulld closed it
    /// on a broken protocol, [`AgentError::Disconnected`] otherwise.
    pub fn lost(&self) -> AgentError {
        match self.lock().closed.as_deref() {
            Some(reason) if !reason.is_empty() => AgentError::Closed {
                vm: self.inner.vm.clone(),
                reason: reason.to_owned(),
            },
            _ => AgentError::Disconnected,
        }
    }

    /// Sends a request and waits for its response, within the request's
    /// [`deadline`].
    pub async fn request(&self, request: &Request) -> Result<Response, AgentError> {
        match deadline(request) {
            Some(after) => {
                self.within(request_name(request), after, self.ask(request))
                    .await?
            }
            None => self.ask(request).await,
        }
    }

    /// Sends a request that must be answered with `Done`.
    pub async fn request_done(&self, request: &Request) -> Result<(), AgentError> {
        match self.request(request).await? {
            Response::Done => Ok(()),
            other => Err(AgentError::UnexpectedResponse(other)),
        }
    }

    /// Runs `work`, which waits on the agent for `what`, for at most `after`.
    pub async fn within<T>(
        &self,
        what: &'static str,
        after: Duration,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, AgentError> {
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| AgentError::Deadline {
                request: what,
                vm: self.inner.vm.clone(),
                after,
            })
    }

    /// Sends a request and waits for its response, however long it takes.
    async fn ask(&self, request: &Request) -> Result<Response, AgentError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, rx) = oneshot::channel();
        {
            let mut shared = self.lock();
            if shared.closed.is_some() {
                drop(shared);
                return Err(self.lost());
            }
            if shared.pending.len() >= MAX_IN_FLIGHT {
                return Err(AgentError::Busy {
                    vm: self.inner.vm.clone(),
                    limit: MAX_IN_FLIGHT,
                });
            }
            let reattach = matches!(request, Request::Reattach);
            shared.pending.insert(id, Pending { answer, reattach });
        }
        // A caller that gives up (a deadline, a dropped future) leaves nothing.
        let _forget = ForgetPending { client: self, id };
        self.send(Frame::json(FrameKind::Request, id, request))
            .await?;
        match rx.await.map_err(|_| self.lost())? {
            Response::Failed(error) => Err(AgentError::Refused(error)),
            response => Ok(response),
        }
    }

    async fn send(&self, frame: Frame) -> Result<(), AgentError> {
        self.inner.frames.send(frame).await.map_err(|_| self.lost())
    }

    /// Registers interest in a process's exit; call before starting it.
    pub fn watch_exit(&self, container: &str, process: &str) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut shared = self.lock();
        if shared.closed.is_none() {
            // Watchers whose process never started went away: forget them.
            shared.exits.retain(|_, watcher| !watcher.is_closed());
            shared
                .exits
                .insert((container.to_string(), process.to_string()), tx);
        }
        rx
    }

    /// How many bytes of the guest's output hulld holds, over every stream.
    pub fn buffered(&self) -> usize {
        self.lock().outputs.values().map(Output::buffered).sum()
    }

    /// How many requests wait for an answer.
    pub fn in_flight(&self) -> usize {
        self.lock().pending.len()
    }
}

/// Removes a request's waiter when its caller stops waiting.
struct ForgetPending<'a> {
    client: &'a AgentClient,
    id: u32,
}

impl Drop for ForgetPending<'_> {
    fn drop(&mut self) {
        self.client.lock().pending.remove(&self.id);
    }
}

/// The credit a fresh stream starts with, in both directions.
fn initial_window() -> u64 {
    u64::from(INITIAL_WINDOW)
}
