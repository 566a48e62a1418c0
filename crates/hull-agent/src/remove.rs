//! RemoveContainer: the container's mounts undone, innermost first, so its
//! disks are unused and the host can unplug them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_proto::{ErrorKind, RequestError, Response};

use crate::agent::{lock, Agent};
use crate::container::Container;
use crate::{error_chain, log, sys};

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("cannot read the VM's mounts")]
    Mountinfo(#[source] io::Error),
    #[error("cannot unmount {}", .target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Agent {
    pub(crate) fn remove_container(&self, id: &str) -> Result<Response, RequestError> {
        let container = self.take_container(id)?;
        match unmount_all(&container.dir) {
            Ok(()) => {
                remove_dirs(&container.dir);
                lock(&self.containers).remove(id);
                log!("removed container {id}");
                Ok(Response::Done)
            }
            Err(e) => {
                // Kept, so the host may ask again: what is unmounted stays so.
                lock(&self.containers).insert(id.to_owned(), Some(container));
                let message = format!("cannot remove container {id}: {}", error_chain(&e));
                Err(RequestError::new(ErrorKind::Internal, message))
            }
        }
    }

    /// Takes the container out of use unless one of its processes still
    /// runs: its entry stays, empty, so that neither a process nor a new
    /// container of that id comes while its mounts go. The process table
    /// is locked first, as `StartProcess` locks it before it checks the
    /// container is still there.
    fn take_container(&self, id: &str) -> Result<Arc<Container>, RequestError> {
        let processes = lock(&self.processes);
        let mut containers = lock(&self.containers);
        let container = match containers.get(id) {
            Some(Some(container)) => container.clone(),
            Some(None) => {
                let message = format!("container {id} is being created or removed");
                return Err(RequestError::new(ErrorKind::InvalidRequest, message));
            }
            None => {
                let message = format!("no such container: {id}");
                return Err(RequestError::new(ErrorKind::NotFound, message));
            }
        };
        let running = processes
            .by_name
            .values()
            .find(|p| p.container == id && !p.track(|t| t.has_exited()));
        if let Some(process) = running {
            let message = format!(
                "container {id} still runs process {} (pid {}): stop it first",
                process.id, process.pid
            );
            return Err(RequestError::new(ErrorKind::InvalidRequest, message));
        }
        containers.insert(id.to_owned(), None);
        Ok(container)
    }
}

/// Unmounts everything mounted under `dir`: the binds and kernel
/// filesystems in the rootfs, the overlay, then its layers. Not lazily:
/// a mount still in use is an error, not a disk that stays busy unseen.
fn unmount_all(dir: &Path) -> Result<(), RemoveError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(RemoveError::Mountinfo)?;
    for target in mounts_under(&mountinfo, dir) {
        sys::umount(&target).map_err(|source| RemoveError::Unmount { target, source })?;
    }
    Ok(())
}

/// The mount points at or below `dir` in `/proc/self/mountinfo`'s text,
/// in the order to unmount them: deepest first, and of one depth the last
/// mounted first (mountinfo lists mounts in the order they were made), so
/// a path mounted twice loses its topmost mount first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.reverse();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    points
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes the container's emptied directories; `remove_dir` refuses a
/// directory that still holds something, so nothing mounted is touched.
fn remove_dirs(dir: &Path) {
    for sub in ["rootfs", "rw", "image"] {
        let _ = fs::remove_dir(dir.join(sub));
    }
    if let Err(e) = fs::remove_dir(dir) {
        log!("cannot remove {}: {e}", dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::process::{ExitTracker, Process};
    use crate::testutil::Wire;
    use hull_proto::ExitStatus;

    /// An agent with container `c` in `dir` and its process `init`.
    fn agent_with_process(dir: &Path) -> (Agent, Arc<Process>) {
        let agent = Agent::new(Channel::new(Wire::default()));
        let container = Container {
            id: "c".into(),
            hostname: "c".into(),
            dir: dir.to_owned(),
        };
        lock(&agent.containers).insert("c".into(), Some(Arc::new(container)));
        let process = Arc::new(Process {
            container: "c".into(),
            id: "init".into(),
            pid: 7,
            pty: None,
            stdin: None,
            stdout: 1,
            stderr: None,
            tracker: std::sync::Mutex::new(ExitTracker::new(1)),
        });
        let key = ("c".to_owned(), "init".to_owned());
        lock(&agent.processes).by_name.insert(key, process.clone());
        (agent, process)
    }

    #[test]
    fn a_container_is_removed_only_once_its_processes_ended() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        for sub in ["rootfs", "rw", "image"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let (agent, process) = agent_with_process(&dir);
        let refused = agent.remove_container("c").unwrap_err();
        assert_eq!(refused.kind, ErrorKind::InvalidRequest);
        assert!(
            refused.message.contains("process init (pid 7)"),
            "{refused}"
        );
        assert!(agent.container("c").is_ok());

        // Reaped, its output still draining: it runs no more.
        process.track(|t| t.exited(ExitStatus::Code(0)));
        assert_eq!(agent.remove_container("c").unwrap(), Response::Done);
        assert!(!dir.exists());
        let gone = agent.remove_container("c").unwrap_err();
        assert_eq!(gone.kind, ErrorKind::NotFound);
    }

    const MOUNTINFO: &str = "\
22 1 0:20 / / rw - rootfs rootfs rw
30 22 8:0 / /run/hull/containers/c1/image ro - erofs /dev/sda ro
31 22 0:30 / /run/hull/containers/c1/rw rw - tmpfs tmpfs rw
32 22 0:31 / /run/hull/containers/c1/rootfs rw - overlay overlay rw
33 32 0:32 / /run/hull/containers/c1/rootfs/sys ro - sysfs sysfs ro
34 32 0:33 / /run/hull/containers/c1/rootfs/dev rw - tmpfs tmpfs rw
35 34 0:34 / /run/hull/containers/c1/rootfs/dev/pts rw - devpts devpts rw
40 22 8:16 / /run/hull/containers/c10/image ro - erofs /dev/sdb ro
41 32 0:40 /c1/0 /run/hull/containers/c1/rootfs/my\\040data rw - 9p hullshim rw
";

    #[test]
    fn a_containers_mounts_come_innermost_first() {
        let dir = Path::new("/run/hull/containers/c1");
        let points = mounts_under(MOUNTINFO, dir);
        let expected = [
            "rootfs/dev/pts",
            "rootfs/my data",
            "rootfs/dev",
            "rootfs/sys",
            "rootfs",
            "rw",
            "image",
        ];
        let expected: Vec<PathBuf> = expected.iter().map(|p| dir.join(p)).collect();
        assert_eq!(points, expected);
    }

    #[test]
    fn escapes_are_undone_and_a_lone_backslash_kept() {
        assert_eq!(unescape(r"a\040b\011c\134d"), "a b\tc\\d");
        assert_eq!(unescape(r"tail\04"), r"tail\04");
        assert_eq!(unescape(r"x\999"), r"x\999");
    }
}
