//! Serving the channel: one task reads the guest's frames and hands them
//! to their waiters, one writes the host's.

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use hull_proto::{Event, Frame, FrameKind, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use super::handshake::{read_header, read_payload};
use super::streams::grant_input;
use super::{AgentClient, AgentError, Inner, Shared, OUTGOING_FRAMES};

impl AgentClient {
    pub(super) fn serve_channel<R, W>(vm: &str, mut reader: R, writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (frames, outgoing) = mpsc::channel::<Frame>(OUTGOING_FRAMES);
        let client = Self {
            inner: Arc::new(Inner {
                vm: vm.to_owned(),
                frames,
                wake_writer: Notify::new(),
                shared: Mutex::new(Shared::default()),
                next_id: AtomicU32::new(1),
            }),
        };
        tokio::spawn(client.clone().write_frames(writer, outgoing));
        let dispatcher = client.clone();
        tokio::spawn(async move {
            let reason = match dispatcher.serve(&mut reader).await {
                Ok(()) => String::new(),
                Err(err) => {
                    let reason = crate::error_chain(&err);
                    warn!(vm = %dispatcher.inner.vm, error = %reason, "closing the control channel");
                    reason
                }
            };
            dispatcher.close(reason);
        });
        client
    }

    /// Writes queued frames and owed credit until the channel closes.
    async fn write_frames<W: AsyncWrite + Unpin>(
        self,
        mut writer: W,
        mut outgoing: mpsc::Receiver<Frame>,
    ) {
        loop {
            let frame = tokio::select! {
                biased;
                () = self.inner.wake_writer.notified() => None,
                frame = outgoing.recv() => match frame {
                    Some(frame) => Some(frame),
                    None => return,
                },
            };
            let mut bytes = frame.map(|f| f.encode()).unwrap_or_default();
            {
                let mut shared = self.lock();
                if shared.closed.is_some() {
                    return;
                }
                for (stream, granted) in std::mem::take(&mut shared.owed_credit) {
                    bytes.extend_from_slice(&Frame::credit(stream, granted).encode());
                }
            }
            if !bytes.is_empty() && writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }

    /// Reads frames until the guest ends the channel or breaks the protocol.
    pub(super) async fn serve<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
    ) -> Result<(), AgentError> {
        while let Some((kind, channel, len)) = read_header(reader).await? {
            // Checked before the payload is read: a flood is refused unread.
            if kind == FrameKind::Data {
                let shared = self.lock();
                if let Some(output) = shared.outputs.get(&channel) {
                    output.admit(channel, len)?;
                }
            }
            let payload = read_payload(reader, len).await?;
            self.dispatch(Frame {
                kind,
                channel,
                payload,
            })?;
        }
        Ok(())
    }

    fn dispatch(&self, frame: Frame) -> Result<(), AgentError> {
        let mut shared = self.lock();
        match frame.kind {
            FrameKind::Response => {
                // A late answer (its caller gave up) or one to a request
                // never asked: nothing waits for it.
                let Some(pending) = shared.pending.remove(&frame.channel) else {
                    debug!(vm = %self.inner.vm, id = frame.channel, "dropping an answer no one waits for");
                    return Ok(());
                };
                let response: Response = frame.parse()?;
                if pending.reattach && matches!(response, Response::Reattached(_)) {
                    shared.outputs.values_mut().for_each(|o| o.reset_window());
                }
                let _ = pending.answer.send(response);
            }
            FrameKind::Data => {
                if let Some(output) = shared.outputs.get_mut(&frame.channel) {
                    let len = u32::try_from(frame.payload.len()).expect("payloads are bounded");
                    output.admit(frame.channel, len)?;
                    output.push(&frame.payload);
                }
            }
            FrameKind::Eof => {
                if let Some(output) = shared.outputs.get_mut(&frame.channel) {
                    output.finish();
                }
            }
            FrameKind::Credit => {
                let granted = frame.credit_bytes()?;
                if let Some(credit) = shared.input_credit.get(&frame.channel) {
                    grant_input(credit, granted);
                }
            }
            FrameKind::Event => match frame.parse::<Event>()? {
                Event::ProcessExited {
                    container,
                    process,
                    status,
                } => {
                    if let Some(waiter) = shared.exits.remove(&(container, process)) {
                        let _ = waiter.send(status);
                    }
                }
            },
            FrameKind::Hello | FrameKind::Request => {
                debug!(kind = ?frame.kind, "ignoring an unexpected frame from the agent");
            }
        }
        Ok(())
    }

    /// Fails everything still waiting: the channel is gone, for `reason`
    /// (empty when the guest ended it). Output already received can still
    /// be read.
    fn close(&self, reason: String) {
        let mut shared = self.lock();
        shared.closed = Some(reason);
        shared.pending.clear();
        shared.exits.clear();
        shared.owed_credit.clear();
        shared.outputs.values_mut().for_each(|o| o.finish());
        for credit in shared.input_credit.values() {
            credit.close();
        }
        drop(shared);
        self.inner.wake_writer.notify_one();
    }
}
