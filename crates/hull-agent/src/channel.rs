//! The sending half of the control channel, shared by every thread.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use hull_proto::{Event, Frame, FrameKind, Response};

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

    /// Sends one frame, or says why it could not.
    pub fn send_checked(&self, frame: &Frame) -> Result<(), hull_proto::FrameError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        frame.write_to(&mut *writer)
    }

    /// Write errors are logged: a host that went away is noticed by the reader.
    pub fn send(&self, frame: &Frame) {
        if let Err(e) = self.send_checked(frame) {
            crate::log!(
                "cannot send a {:?} frame on channel {}: {}",
                frame.kind,
                frame.channel,
                crate::error_chain(&e)
            );
        }
    }

    pub fn respond(&self, request: u32, response: &Response) {
        self.send(&Frame::json(FrameKind::Response, request, response));
    }

    pub fn event(&self, event: &Event) {
        self.send(&Frame::json(FrameKind::Event, 0, event));
    }
}
