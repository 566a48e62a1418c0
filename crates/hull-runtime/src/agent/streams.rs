//! Stdio streams over the channel, each held to its credit: the guest may
//! send an output stream no more than the host granted, and the host sends
//! an input stream no more than the guest granted.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hull_proto::{Frame, StreamId, INITIAL_WINDOW, MAX_DATA_CHUNK};
use tokio::sync::{Notify, Semaphore};

use super::{initial_window, AgentClient, AgentError};

/// What the host holds of one output stream.
pub(super) struct Output {
    /// Received, not yet read. Never more than the credit granted, so never
    /// more than [`INITIAL_WINDOW`] (twice that after a reattach).
    buffer: BytesMut,
    /// Bytes the guest may still send.
    window: u64,
    /// Credit granted since the stream was opened, for a reattach's reset.
    granted: u64,
    eof: bool,
    ready: Arc<Notify>,
}

impl Output {
    fn new() -> Self {
        Self {
            buffer: BytesMut::new(),
            window: initial_window(),
            granted: 0,
            eof: false,
            ready: Arc::new(Notify::new()),
        }
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Checks that `len` more bytes fit the guest's credit.
    pub fn admit(&self, stream: StreamId, len: u32) -> Result<(), AgentError> {
        if u64::from(len) > self.window && !self.eof {
            return Err(AgentError::PastCredit {
                stream,
                sent: len,
                window: self.window,
            });
        }
        Ok(())
    }

    /// Takes bytes that [`Output::admit`] let through.
    pub fn push(&mut self, bytes: &[u8]) {
        // Data after the stream's end, or none at all, is nothing to read.
        if self.eof || bytes.is_empty() {
            return;
        }
        self.window -= bytes.len() as u64;
        self.buffer.extend_from_slice(bytes);
        self.ready.notify_one();
    }

    pub fn finish(&mut self) {
        self.eof = true;
        self.ready.notify_one();
    }

    /// The agent answered `Reattach`: it gives every open output stream a
    /// fresh window then, plus whatever credit it still had to receive.
    pub fn reset_window(&mut self) {
        self.window = initial_window() + self.granted;
    }
}

impl AgentClient {
    /// Receives a stream the agent writes (a process's stdout or stderr).
    pub fn open_output(&self, stream: StreamId) -> OutputStream {
        let mut shared = self.lock();
        if shared.closed.is_none() {
            shared.outputs.insert(stream, Output::new());
        }
        OutputStream {
            stream,
            client: self.clone(),
        }
    }

    /// A stream the host writes (a process's stdin).
    pub fn open_input(&self, stream: StreamId) -> InputStream {
        let credit = Arc::new(Semaphore::new(INITIAL_WINDOW as usize));
        let mut shared = self.lock();
        if shared.closed.is_some() {
            credit.close();
        }
        shared.input_credit.insert(stream, credit.clone());
        InputStream {
            stream,
            credit,
            client: self.clone(),
        }
    }
}

/// Output of a guest process. Bytes are credited back to the agent as they are
/// taken, so a slow consumer slows the process instead of filling memory.
pub struct OutputStream {
    stream: StreamId,
    client: AgentClient,
}

impl OutputStream {
    /// The next chunk (at most [`MAX_DATA_CHUNK`] bytes), or `None` once the
    /// agent sent EOF (or the channel died) and every byte was read.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            let ready = {
                let mut shared = self.client.lock();
                let output = shared.outputs.get_mut(&self.stream)?;
                if !output.buffer.is_empty() {
                    let len = output.buffer.len().min(MAX_DATA_CHUNK);
                    let chunk = output.buffer.split_to(len).freeze();
                    output.window += len as u64;
                    output.granted += len as u64;
                    let owed = shared.owed_credit.entry(self.stream).or_default();
                    *owed = owed.saturating_add(len as u32);
                    drop(shared);
                    self.client.inner.wake_writer.notify_one();
                    return Some(chunk);
                }
                if output.eof {
                    shared.outputs.remove(&self.stream);
                    return None;
                }
                output.ready.clone()
            };
            // One reader per stream, and `notify_one` keeps a wake-up that
            // came before this wait: none is lost.
            ready.notified().await;
        }
    }
}

impl Drop for OutputStream {
    /// A stream the agent never opened (its request was refused) gets no
    /// `Eof`: forget it here, so refused copies leave nothing behind.
    fn drop(&mut self) {
        let mut shared = self.client.lock();
        shared.outputs.remove(&self.stream);
    }
}

/// Input to a guest process, sent only as far as the agent granted credit.
pub struct InputStream {
    stream: StreamId,
    credit: Arc<Semaphore>,
    client: AgentClient,
}

impl InputStream {
    pub async fn write(&self, mut bytes: &[u8]) -> Result<(), AgentError> {
        while !bytes.is_empty() {
            let chunk = &bytes[..bytes.len().min(MAX_DATA_CHUNK)];
            let permits = u32::try_from(chunk.len()).expect("chunks are small");
            self.credit
                .acquire_many(permits)
                .await
                .map_err(|_| self.client.lost())?
                .forget();
            self.client.send(Frame::data(self.stream, chunk)).await?;
            bytes = &bytes[chunk.len()..];
        }
        Ok(())
    }

    /// Tells the agent no more input follows.
    pub async fn close(self) -> Result<(), AgentError> {
        self.client.send(Frame::eof(self.stream)).await
    }
}

/// Adds credit the guest granted an input stream, never past a full
/// window: the host never has more than [`INITIAL_WINDOW`] bytes on their
/// way, however much a guest grants.
pub(super) fn grant_input(credit: &Semaphore, granted: u32) {
    let room = (INITIAL_WINDOW as usize).saturating_sub(credit.available_permits());
    credit.add_permits((granted as usize).min(room));
}

impl Drop for InputStream {
    fn drop(&mut self) {
        self.client.lock().input_credit.remove(&self.stream);
    }
}
