//! The reaper: every child exit, turned into a process's exit status (or,
//! for orphans reparented to PID 1, reaped silently).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{lock, Agent, Stream};
use crate::log;
use crate::process::exit_status;

impl Agent {
    pub(crate) fn on_reaped(&self, pid: i32, raw_status: libc::c_int) {
        let Some(process) = lock(&self.processes).by_pid.remove(&pid) else {
            return; // an orphan reparented to PID 1, or a process whose exec failed
        };
        let status = exit_status(raw_status);
        log!(
            "process {} of container {} (pid {pid}) exited: {status:?}",
            process.id,
            process.container
        );
        // Nobody reads the input any more: let its writer close the pipe.
        for id in process.streams() {
            if let Some(Stream::Input(queue)) = self.stream(id) {
                queue.finish();
            }
        }
        if let Some(status) = process.track(|t| t.exited(status)) {
            self.report_exit(&process, status);
        }
    }

    fn reap_all(&self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a local int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            self.on_reaped(pid, status);
        }
    }
}

/// SIGCHLD is blocked in every thread; a signalfd wakes the reaper instead.
pub fn start(agent: Arc<Agent>) -> io::Result<()> {
    // SAFETY: `set` is initialized by sigemptyset before use; signalfd
    // returns a new descriptor or -1.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::signalfd(-1, &set, libc::SFD_CLOEXEC)
    };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut signals = unsafe { File::from_raw_fd(fd) };
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || {
            let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
            loop {
                agent.reap_all();
                if let Err(e) = signals.read(&mut info) {
                    if e.kind() != io::ErrorKind::Interrupted {
                        log!("cannot read the SIGCHLD signalfd: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(())
}
