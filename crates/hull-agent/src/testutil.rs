//! A fake control channel for unit tests: frames written are kept in memory.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hull_proto::Frame;

#[derive(Clone, Default)]
pub struct Wire(Arc<Mutex<Vec<u8>>>);

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire {
    /// Every frame written so far.
    pub fn frames(&self) -> Vec<Frame> {
        let bytes = self.0.lock().unwrap().clone();
        let mut reader = bytes.as_slice();
        std::iter::from_fn(|| Frame::read_from(&mut reader).unwrap()).collect()
    }

    /// Waits (briefly) until `count` frames were written, for work done on threads.
    pub fn wait_for(&self, count: usize) -> Vec<Frame> {
        let start = Instant::now();
        loop {
            let frames = self.frames();
            if frames.len() >= count || start.elapsed() > Duration::from_secs(5) {
                return frames;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
