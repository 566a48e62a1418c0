//! The VM directories a crash left: a start cut short leaves a detached
//! QEMU (which outlives hulld by design) and its directory, for a
//! container that its record says is not running. A starting hulld ends
//! those VMs and removes their directories before it takes back the VMs of
//! the containers that do run.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use hull_vm::Hypervisor;
use tracing::{info, warn};

use super::{Containers, Status, DETACHED_VM_PREFIX};

impl<H: Hypervisor> Containers<H> {
    /// Ends the VMs under `run_root` whose container or pod is not
    /// recorded as running, and removes their directories.
    pub fn sweep_vm_dirs(&self, run_root: &Path) {
        let running: Vec<String> = self
            .list()
            .into_iter()
            .filter(|c| c.state().status == Status::Running)
            .flat_map(|c| match c.config().pod {
                Some(membership) => vec![super::pod::pod_vm_name(&membership.pod)],
                None => vec![super::run::vm_name(&c.id)],
            })
            .collect();
        for entry in std::fs::read_dir(run_root).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(DETACHED_VM_PREFIX) || running.contains(&name) {
                continue;
            }
            let path = entry.path();
            let killed = kill_processes_naming(&path);
            info!(dir = %path.display(), killed, "removing the VM of a start that a crash cut short");
            crate::run::remove_vm_dir(&path);
        }
    }
}

/// SIGKILLs the processes whose command line names a file in `dir` (a
/// QEMU names its sockets and console there); returns how many.
pub(crate) fn kill_processes_naming(dir: &Path) -> usize {
    let needle = format!("{}/", dir.display());
    let names_dir = |pid: i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains(&needle)
    };
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 || !names_dir(pid) {
            continue;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor, which we own from here on.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            continue;
        }
        // SAFETY: `fd` is a descriptor just returned to us and not owned elsewhere.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // Checked again through the pidfd's process: the pid may have been reused.
        if !names_dir(pid) {
            continue;
        }
        // SAFETY: pidfd_send_signal on a descriptor we own, with no siginfo.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent == 0 {
            killed += 1;
        } else {
            warn!(pid, error = %std::io::Error::last_os_error(), "cannot end a VM left by a crash");
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_naming_a_directory_are_killed_and_others_spared() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let spawn = |path: &Path| {
            // `read` is sh's own: no child outlives the kill.
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg("echo ready; read line")
                .arg(path.join("ctl"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // Until sh speaks, the child may not have exec'd yet and its
            // command line is still this test's.
            let mut ready = [0u8; 6];
            std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut ready).unwrap();
            child
        };
        let mut doomed = spawn(dir.path());
        let mut spared = spawn(other.path());
        assert_eq!(kill_processes_naming(dir.path()), 1);
        let status = doomed.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(
            spared.try_wait().unwrap().is_none(),
            "the other process was killed"
        );
        spared.kill().unwrap();
        let _ = spared.wait();
    }
}
