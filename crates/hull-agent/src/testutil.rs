//! A fake control channel for unit tests: frames written are kept in
//! memory, and what hosts send is read from a script.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hull_proto::{find_resync, Frame};

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

    /// The frames written to each host: a [`hull_proto::RESYNC`] marker
    /// starts the next one.
    pub fn sessions(&self) -> Vec<Vec<Frame>> {
        let bytes = self.0.lock().unwrap().clone();
        let mut rest = bytes.as_slice();
        let mut sessions = Vec::new();
        loop {
            let end = find_resync(rest);
            let (mut frames, next) = match end {
                Some(end) => (&rest[..end - hull_proto::RESYNC.len()], &rest[end..]),
                None => (rest, &[][..]),
            };
            sessions.push(std::iter::from_fn(|| Frame::read_from(&mut frames).unwrap()).collect());
            if end.is_none() {
                return sessions;
            }
            rest = next;
        }
    }

    /// Waits (briefly) until the frames written to each host satisfy `done`.
    pub fn wait_for_sessions(&self, done: impl Fn(&[Vec<Frame>]) -> bool) -> Vec<Vec<Frame>> {
        let start = Instant::now();
        loop {
            let sessions = self.sessions();
            if done(&sessions) || start.elapsed() > Duration::from_secs(5) {
                return sessions;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// What the port yields to one read.
pub enum Step {
    Bytes(Vec<u8>),
    /// No host is connected: the read returns 0.
    Eof,
}

/// A control port whose reads follow a script, then block for good (the
/// reading thread is left behind when the test ends).
pub struct Script(pub VecDeque<Step>);

impl Script {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self(steps.into_iter().collect())
    }
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.pop_front() {
            Some(Step::Bytes(mut bytes)) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.0.push_front(Step::Bytes(bytes.split_off(n)));
                }
                Ok(n)
            }
            Some(Step::Eof) => Ok(0),
            None => loop {
                std::thread::park();
            },
        }
    }
}
