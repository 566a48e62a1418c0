//! A started process and the rule for when its exit may be reported.

use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};

use hull_proto::{ExitStatus, ProcessState, StreamId};

/// The exit event goes out only after the `Started` answer, after the
/// process was reaped, and after every output stream reached `Eof`, so the
/// host has printed all output before it learns the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitTracker {
    open_outputs: usize,
    announced: bool,
    status: Option<ExitStatus>,
    reported: bool,
}

impl ExitTracker {
    pub fn new(outputs: usize) -> Self {
        Self {
            open_outputs: outputs,
            announced: false,
            status: None,
            reported: false,
        }
    }

    /// The `Started` answer was sent.
    pub fn announced(&mut self) -> Option<ExitStatus> {
        self.announced = true;
        self.ready()
    }

    /// The process was reaped with `status`.
    pub fn exited(&mut self, status: ExitStatus) -> Option<ExitStatus> {
        self.status = Some(status);
        self.ready()
    }

    /// One output stream sent its `Eof`.
    pub fn output_closed(&mut self) -> Option<ExitStatus> {
        self.open_outputs = self.open_outputs.saturating_sub(1);
        self.ready()
    }

    pub fn has_exited(&self) -> bool {
        self.status.is_some()
    }

    /// The status to report, exactly once, when every condition holds.
    fn ready(&mut self) -> Option<ExitStatus> {
        if self.reported || !self.announced || self.open_outputs > 0 {
            return None;
        }
        let status = self.status?;
        self.reported = true;
        Some(status)
    }
}

/// Decodes a `waitpid` status.
pub fn exit_status(raw: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(raw) {
        ExitStatus::Signal(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(raw))
    }
}

/// A process the agent started.
#[derive(Debug)]
pub struct Process {
    pub container: String,
    pub id: String,
    pub pid: i32,
    /// The pty master, for resizing; `None` without a terminal.
    pub pty: Option<Arc<File>>,
    /// Its stdio streams as its `StartProcess` named them; unregistered
    /// when it ends.
    pub stdin: Option<StreamId>,
    pub stdout: StreamId,
    pub stderr: Option<StreamId>,
    pub tracker: Mutex<ExitTracker>,
}

impl Process {
    pub fn track<R>(&self, f: impl FnOnce(&mut ExitTracker) -> R) -> R {
        f(&mut self.tracker.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn streams(&self) -> Vec<StreamId> {
        let mut ids = vec![self.stdout];
        ids.extend(self.stderr);
        ids.extend(self.stdin);
        ids
    }

    /// How a `Reattached` listing names it.
    pub fn state(&self, exited: Option<ExitStatus>) -> ProcessState {
        ProcessState {
            container: self.container.clone(),
            process: self.id.clone(),
            pid: self.pid,
            terminal: self.pty.is_some(),
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
            exited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_waits_for_every_output_stream() {
        let mut t = ExitTracker::new(2);
        assert_eq!(t.announced(), None);
        assert_eq!(t.exited(ExitStatus::Code(7)), None);
        assert_eq!(t.output_closed(), None);
        assert_eq!(t.output_closed(), Some(ExitStatus::Code(7)));
    }

    #[test]
    fn exit_waits_for_the_reap_after_output_ends() {
        let mut t = ExitTracker::new(1);
        t.announced();
        assert_eq!(t.output_closed(), None);
        assert_eq!(t.exited(ExitStatus::Signal(9)), Some(ExitStatus::Signal(9)));
    }

    #[test]
    fn exit_never_precedes_the_started_answer() {
        let mut t = ExitTracker::new(1);
        assert_eq!(t.exited(ExitStatus::Code(0)), None);
        assert_eq!(t.output_closed(), None);
        assert_eq!(t.announced(), Some(ExitStatus::Code(0)));
    }

    #[test]
    fn exit_is_reported_once() {
        let mut t = ExitTracker::new(0);
        t.announced();
        assert!(t.exited(ExitStatus::Code(1)).is_some());
        assert_eq!(t.output_closed(), None);
        assert_eq!(t.announced(), None);
    }

    #[test]
    fn wait_statuses_decode_to_codes_and_signals() {
        assert_eq!(exit_status(7 << 8), ExitStatus::Code(7));
        assert_eq!(exit_status(9), ExitStatus::Signal(9));
        assert_eq!(exit_status(0), ExitStatus::Code(0));
    }
}
