//! The host uids that VMs' hypervisor processes run as.
//!
//! Each QEMU runs as a uid of its own from one range, with the same number as
//! its gid, so that one VM's hypervisor can neither signal, trace nor open
//! another's files, and so that firewall rules can name every VM's traffic
//! that leaves from the host's own sockets (`meta skuid`).

use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error("cannot create the directory of VM uid slots {}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot take the VM uid slot {}", .path.display())]
    Slot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("all {count} VM uids from {first} are in use: stop VMs or widen the range")]
    Exhausted { first: u32, count: u32 },
}

/// A range of host uids (and gids of the same numbers) reserved for VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmUids {
    pub first: u32,
    pub count: u32,
}

impl VmUids {
    /// Far above the ranges that distributions hand to users and to
    /// `/etc/subuid`, so that no account or user namespace shares them.
    pub const DEFAULT: VmUids = VmUids {
        first: 1_900_000_000,
        count: 65_536,
    };

    pub fn range(&self) -> RangeInclusive<u32> {
        self.first..=self.first + (self.count - 1)
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.range().contains(&uid)
    }

    /// Takes the first free uid of the range. Slot `n` is the file
    /// `dir/n`, held by an exclusive `flock`: its descriptor goes to the
    /// VM's hypervisor, so the slot is taken exactly as long as that
    /// process lives, across restarts of whoever started it and whatever
    /// way it ends. Every starter of VMs on a host shares one `dir`.
    pub fn allocate(&self, dir: &Path) -> Result<UidSlot, UidError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| UidError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        for index in 0..self.count {
            let path = dir.join(index.to_string());
            // Read-only: the hypervisor shares this open file and must not
            // be able to change the pid the host records in it.
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CREAT)
                .mode(0o600)
                .open(&path)
                .map_err(|source| UidError::Slot {
                    path: path.clone(),
                    source,
                })?;
            // SAFETY: flock on a descriptor we own; the lock lives with its
            // open file description, which the hypervisor will share.
            let locked =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !locked {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(UidError::Slot { path, source: err });
                }
                continue;
            }
            let uid = self.first + index;
            // A hypervisor can drop the lock it inherited (flock LOCK_UN);
            // the pid recorded at its start still names it while it lives.
            if holder_alive(&path, uid) {
                continue;
            }
            return Ok(UidSlot {
                uid,
                lock: file.into(),
                path,
            });
        }
        Err(UidError::Exhausted {
            first: self.first,
            count: self.count,
        })
    }
}

impl Default for VmUids {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A uid taken for one VM, and the locked descriptor that holds it: the
/// VM's hypervisor inherits it (close-on-exec is cleared in the child).
#[derive(Debug)]
pub struct UidSlot {
    pub uid: u32,
    pub lock: OwnedFd,
    path: PathBuf,
}

impl UidSlot {
    /// Records the pid of the process that runs as the uid, so that the
    /// slot stays taken while it lives even if it drops the lock.
    pub fn record(&self, pid: u32) -> Result<(), UidError> {
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .and_then(|mut file| io::Write::write_all(&mut file, format!("{pid}\n").as_bytes()))
            .map_err(|source| UidError::Slot {
                path: self.path.clone(),
                source,
            })
    }
}

/// Whether the pid recorded in the slot file at `path` is a live process
/// running as `uid`.
fn holder_alive(path: &Path, uid: u32) -> bool {
    let Some(pid) = fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().next())
        .is_some_and(|real| real == uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_holds_its_ends_only() {
        let uids = VmUids::DEFAULT;
        assert!(uids.contains(1_900_000_000));
        assert!(uids.contains(1_900_065_535));
        assert!(!uids.contains(1_900_065_536));
        assert!(!uids.contains(1_899_999_999));
    }

    #[test]
    fn a_slot_is_taken_while_its_descriptor_lives() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().join("vm-uids");
        let uids = VmUids {
            first: 5000,
            count: 2,
        };
        let first = uids.allocate(&slots).unwrap();
        let second = uids.allocate(&slots).unwrap();
        assert_eq!((first.uid, second.uid), (5000, 5001));
        assert!(matches!(
            uids.allocate(&slots),
            Err(UidError::Exhausted { count: 2, .. })
        ));
        // A duplicate (as a child inherits it) keeps the lock after the
        // original closes; the last one to close frees the slot.
        let inherited = first.lock.try_clone().unwrap();
        drop(first);
        assert!(uids.allocate(&slots).is_err());
        drop(inherited);
        assert_eq!(uids.allocate(&slots).unwrap().uid, 5000);
    }

    #[test]
    fn a_slot_whose_holder_dropped_its_lock_stays_taken_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().join("vm-uids");
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let uids = VmUids {
            first: me,
            count: 2,
        };
        let first = uids.allocate(&slots).unwrap();
        assert_eq!(first.uid, me);
        // This process runs as the slot's uid, as its hypervisor would.
        first.record(std::process::id()).unwrap();
        // SAFETY: flock on a descriptor we own.
        unsafe { libc::flock(first.lock.as_raw_fd(), libc::LOCK_UN) };
        assert_eq!(uids.allocate(&slots).unwrap().uid, me + 1);
        // A recorded pid that is gone frees the slot.
        first.record(u32::MAX).unwrap();
        let again = uids.allocate(&slots).unwrap();
        assert_eq!(again.uid, me);
    }
}
