//! Taking back a detached VM that an earlier process started.

use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use tokio::sync::{watch, Mutex};

use super::{cmdline, connect_when_ready, detached_paths, QemuError, QemuVm, UID_FILE};
use crate::qmp::Qmp;
use crate::VmExit;

/// Takes back the detached VM whose directory is `run_dir`.
pub(super) async fn adopt(id: &str, run_dir: &Path) -> Result<QemuVm, QemuError> {
    let (ctl_path, qmp_path, _) = detached_paths(run_dir);
    let gone = |why: String| QemuError::Gone {
        run_dir: run_dir.to_owned(),
        why,
    };
    let (pid, pidfd) = qemu_of(run_dir).map_err(gone)?;
    let uid = fs::read_to_string(run_dir.join(UID_FILE))
        .ok()
        .and_then(|uid| uid.trim().parse().ok());
    let exit = watch_pidfd(&pidfd).map_err(|e| gone(format!("cannot watch QEMU: {e}")))?;
    let mut vm = QemuVm {
        id: id.to_owned(),
        pid,
        pidfd: Some(pidfd),
        detached: true,
        control: None,
        qmp: None,
        exit,
        run_dir: run_dir.to_owned(),
        uid,
    };
    let mut exit = vm.exit.clone();
    let qmp = connect_when_ready(&qmp_path, "QMP", &mut exit).await?;
    vm.qmp = Some(Mutex::new(Qmp::handshake(qmp, id).await?));
    vm.control = Some(connect_when_ready(&ctl_path, "control channel", &mut exit).await?);
    Ok(vm)
}

/// The pid of the QEMU serving the detached VM in `run_dir`, and a pidfd
/// on it; or why there is none (it is not running).
pub fn qemu_of(run_dir: &Path) -> Result<(u32, OwnedFd), String> {
    let (ctl_path, _, pid_path) = detached_paths(run_dir);
    let pid: u32 = fs::read_to_string(&pid_path)
        .map_err(|e| format!("its pid file is unreadable ({e})"))?
        .trim()
        .parse()
        .map_err(|_| "its pid file is malformed".to_owned())?;
    let pidfd = pidfd_open(pid).map_err(|e| format!("QEMU (pid {pid}) is not running ({e})"))?;
    // The pid may have been reused: it must be the QEMU serving this
    // directory, which its name says (or, from before names, its socket).
    // Checked after the pidfd is open, so the pidfd is that process's.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    let name = format!("guest={}\0", cmdline::vm_name(run_dir).replace(',', ",,"));
    if !cmdline.contains(&name) && !cmdline.contains(&ctl_path.display().to_string()) {
        return Err(format!("pid {pid} is no longer its QEMU"));
    }
    Ok((pid, pidfd))
}

/// A pidfd for `pid`: signals and exit notification without pid reuse races.
pub(super) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reports the exit of a process that is not our child: its pidfd becomes
/// readable. Its exit status cannot be known, so it is reported as -1.
pub(super) fn watch_pidfd(pidfd: &OwnedFd) -> io::Result<watch::Receiver<Option<VmExit>>> {
    let owned = pidfd.try_clone()?;
    // SAFETY: the AsyncFd owns this duplicate descriptor, which stays open
    // and unchanged until the AsyncFd is dropped.
    let watched = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let _ = watched.readable().await;
        let _ = tx.send(Some(VmExit::Exited(-1)));
    });
    Ok(rx)
}
