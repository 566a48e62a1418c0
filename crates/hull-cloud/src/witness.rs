//! The witness of one run: a small process, started beside the run's QEMU,
//! that outlives hulld and records QEMU's exit in the usage database, so
//! that a run that ends while no hulld runs is closed at its real end.
//!
//! It holds a pidfd on QEMU (readable the moment QEMU exits, whoever reaps
//! it, and immune to pid reuse), notes the run alive every [`BEAT`], and at
//! the exit closes the run at that instant (if hulld did not first).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use crate::usage::{now_ms, EndedBy, Usage, UsageError, BEAT};

/// How long the witness keeps trying to record the end (the database may
/// be busy, or its disk briefly full).
const RECORD_TRIES: u32 = 60;

/// Watches the process behind `pidfd` until it exits, then closes the run
/// `run` in the usage database at `db`. Blocks; meant as a process's whole
/// work.
pub fn watch(db: &Path, run: i64, pidfd: &OwnedFd) -> Result<(), UsageError> {
    let usage = Usage::open(db)?;
    loop {
        if exited_within(pidfd, BEAT) {
            break;
        }
        if let Err(err) = usage.beat(Some(run), now_ms()) {
            tracing::warn!(run, error = %err, "cannot note the run alive");
        }
    }
    let end = now_ms();
    let mut tries = 0;
    loop {
        match usage.end(run, end, EndedBy::Witness) {
            Ok(_) => return Ok(()),
            Err(err) if tries + 1 >= RECORD_TRIES => return Err(err),
            Err(_) => {
                tries += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Waits up to `timeout` for the pidfd to turn readable (the process has
/// exited). An error of poll other than an interruption counts as an exit:
/// a witness that cannot watch must not keep a run open forever.
fn exited_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll reads and writes the one pollfd we pass, which lives on
    // this stack frame through the call.
    let ready = unsafe { libc::poll(&mut fd, 1, millis) };
    match ready {
        0 => false,
        n if n > 0 => true,
        _ => std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{NewRun, Owner, RunKind, Size};
    use std::os::fd::{FromRawFd, RawFd};

    fn pidfd_of(pid: u32) -> OwnedFd {
        // SAFETY: pidfd_open takes a pid and flags and returns a descriptor
        // or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: the kernel just returned this descriptor, owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    }

    #[test]
    fn the_witness_closes_the_run_when_the_process_exits() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("usage.db");
        let usage = Usage::open(&db).unwrap();
        let start = now_ms();
        let run = usage
            .start(&NewRun {
                tenant: Some("acme".into()),
                kind: RunKind::Container,
                container_id: "c1".into(),
                container_name: "web".into(),
                size: Size {
                    name: "S1".into(),
                    vcpus: 1,
                    memory_mib: 64,
                },
                start_ms: start,
            })
            .unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pidfd = pidfd_of(child.id());
        watch(&db, run, &pidfd).unwrap();
        let seen_end = now_ms();
        child.wait().unwrap();
        let report = usage.report(Owner::Everyone, 0, now_ms()).unwrap();
        let end = report[0].end.expect("closed");
        assert!(end - start >= 300 && end <= seen_end, "{end} {start}");
        assert_eq!(report[0].ended_by.as_deref(), Some("witness"));
        assert_eq!(report[0].seconds, 10);
    }
}
