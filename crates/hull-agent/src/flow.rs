//! Flow control of stdio streams: the credit a sender holds for an output
//! stream, and the queue of input waiting to be written to a process.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes the host is ready to receive on one output stream.
#[derive(Debug)]
pub struct CreditWindow {
    state: Mutex<WindowState>,
    changed: Condvar,
}

#[derive(Debug)]
struct WindowState {
    available: u64,
    closed: bool,
}

impl CreditWindow {
    pub fn new(initial: u32) -> Self {
        Self {
            state: Mutex::new(WindowState {
                available: u64::from(initial),
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Waits for credit, then returns how much of `max` may be sent now;
    /// `None` once the window is closed. The caller must `consume` what it sends.
    pub fn acquire(&self, max: usize) -> Option<usize> {
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return None;
            }
            if state.available > 0 {
                let n = usize::try_from(state.available).unwrap_or(usize::MAX);
                return Some(n.min(max));
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Accounts for bytes sent.
    pub fn consume(&self, bytes: usize) {
        let mut state = lock(&self.state);
        state.available = state.available.saturating_sub(bytes as u64);
    }

    /// Adds credit granted by the receiver.
    pub fn grant(&self, bytes: u32) {
        let mut state = lock(&self.state);
        state.available = state.available.saturating_add(u64::from(bytes));
        self.changed.notify_all();
    }

    /// Replaces the credit with `credit`: zero holds the sender while no
    /// host listens; a new host grants its window from scratch.
    pub fn reset(&self, credit: u32) {
        lock(&self.state).available = u64::from(credit);
        self.changed.notify_all();
    }

    /// Wakes the sender for good: nothing more will be sent.
    pub fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }

    pub fn available(&self) -> u64 {
        lock(&self.state).available
    }
}

/// Input received from the host for one process, waiting to be written.
#[derive(Debug, Default)]
pub struct InputQueue {
    state: Mutex<InputState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct InputState {
    chunks: VecDeque<Vec<u8>>,
    queued: usize,
    finished: bool,
}

impl InputQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues bytes; returns the total now queued (the host must not exceed
    /// its window, so a larger total is a protocol violation to log).
    pub fn push(&self, bytes: Vec<u8>) -> usize {
        let mut state = lock(&self.state);
        if state.finished || bytes.is_empty() {
            return state.queued;
        }
        state.queued += bytes.len();
        state.chunks.push_back(bytes);
        self.changed.notify_all();
        state.queued
    }

    /// No more input will come: the writer drains the queue, then stops.
    pub fn finish(&self) {
        lock(&self.state).finished = true;
        self.changed.notify_all();
    }

    /// Waits for the next chunk; `None` once finished and drained.
    pub fn pop(&self) -> Option<Vec<u8>> {
        let mut state = lock(&self.state);
        loop {
            if let Some(chunk) = state.chunks.pop_front() {
                state.queued -= chunk.len();
                return Some(chunk);
            }
            if state.finished {
                return None;
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_sender_gets_at_most_its_credit_and_the_chunk_size() {
        let window = CreditWindow::new(100);
        assert_eq!(window.acquire(32), Some(32));
        window.consume(32);
        assert_eq!(window.acquire(1000), Some(68));
        window.consume(68);
        assert_eq!(window.available(), 0);
    }

    #[test]
    fn a_sender_without_credit_waits_for_a_grant() {
        let window = Arc::new(CreditWindow::new(0));
        let waiter = {
            let window = window.clone();
            std::thread::spawn(move || window.acquire(10))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        window.grant(4);
        assert_eq!(waiter.join().unwrap(), Some(4));
    }

    #[test]
    fn closing_a_window_releases_a_waiting_sender() {
        let window = Arc::new(CreditWindow::new(0));
        let waiter = {
            let window = window.clone();
            std::thread::spawn(move || window.acquire(10))
        };
        std::thread::sleep(Duration::from_millis(20));
        window.close();
        assert_eq!(waiter.join().unwrap(), None);
    }

    #[test]
    fn a_reset_window_holds_the_sender_until_it_is_reset_again() {
        let window = Arc::new(CreditWindow::new(100));
        window.reset(0);
        let waiter = {
            let window = window.clone();
            std::thread::spawn(move || window.acquire(10))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        window.reset(7);
        assert_eq!(waiter.join().unwrap(), Some(7));
        window.consume(50);
        assert_eq!(window.available(), 0);
    }

    #[test]
    fn grants_accumulate_without_overflow() {
        let window = CreditWindow::new(u32::MAX);
        window.grant(u32::MAX);
        assert_eq!(window.available(), 2 * u64::from(u32::MAX));
    }

    #[test]
    fn input_is_drained_in_order_before_the_end() {
        let queue = InputQueue::new();
        assert_eq!(queue.push(b"ab".to_vec()), 2);
        assert_eq!(queue.push(b"cde".to_vec()), 5);
        queue.finish();
        assert_eq!(queue.push(b"late".to_vec()), 5);
        assert_eq!(queue.pop().as_deref(), Some(&b"ab"[..]));
        assert_eq!(queue.pop().as_deref(), Some(&b"cde"[..]));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_writer_waits_for_input() {
        let queue = Arc::new(InputQueue::new());
        let writer = {
            let queue = queue.clone();
            std::thread::spawn(move || queue.pop())
        };
        std::thread::sleep(Duration::from_millis(20));
        queue.push(b"x".to_vec());
        assert_eq!(writer.join().unwrap().as_deref(), Some(&b"x"[..]));
    }
}
