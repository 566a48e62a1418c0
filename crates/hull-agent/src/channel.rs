//! The sending half of the control channel, shared by every thread.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use hull_proto::{Frame, FrameError, FrameKind, Response};

/// Sends whole frames; the lock makes frames from several threads never interleave.
#[derive(Clone)]
pub struct Channel {
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl Channel {
    pub fn new(writer: impl Write + Send + 'static) -> Self {
        Self {
            writer: Arc::new(Mutex::new(Box::new(writer))),
        }
    }

    /// Writes the bytes `prepare` returns, calling it with the writer held:
    /// what `prepare` changes (credit taken, a process retired, windows
    /// reset) is then ordered with those bytes against every other frame.
    /// `prepare` may take other locks, but no one may wait for this one
    /// while holding those.
    pub fn write_with(&self, prepare: impl FnOnce() -> Vec<u8>) -> Result<(), FrameError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // One write_all, so a host that reads the port sees whole frames.
        writer.write_all(&prepare())?;
        Ok(())
    }

    /// Sends the frame `prepare` returns, as [`Channel::write_with`] does.
    pub fn try_send_with(&self, prepare: impl FnOnce() -> Frame) -> Result<(), FrameError> {
        self.write_with(|| prepare().encode())
    }

    /// Sends one frame, or says why it could not.
    pub fn send_checked(&self, frame: &Frame) -> Result<(), FrameError> {
        self.write_with(|| frame.encode())
    }

    /// Sends the frame `prepare` returns, logging a failure.
    pub fn send_with(&self, prepare: impl FnOnce() -> Frame) {
        let mut sent = (FrameKind::Data, 0);
        let result = self.try_send_with(|| {
            let frame = prepare();
            sent = (frame.kind, frame.channel);
            frame
        });
        if let Err(e) = result {
            log_failure(sent, &e);
        }
    }

    /// Write errors are logged: a host that went away is noticed by the reader.
    pub fn send(&self, frame: &Frame) {
        if let Err(e) = self.send_checked(frame) {
            log_failure((frame.kind, frame.channel), &e);
        }
    }

    pub fn respond(&self, request: u32, response: &Response) {
        self.send(&Frame::json(FrameKind::Response, request, response));
    }
}

fn log_failure((kind, channel): (FrameKind, u32), error: &FrameError) {
    crate::log!(
        "cannot send a {kind:?} frame on channel {channel}: {}",
        crate::error_chain(error)
    );
}
