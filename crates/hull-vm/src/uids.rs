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
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|source| UidError::Slot {
                    path: path.clone(),
                    source,
                })?;
            // SAFETY: flock on a descriptor we own; the lock lives with its
            // open file description, which the hypervisor will share.
            let locked =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if locked {
                return Ok(UidSlot {
                    uid: self.first + index,
                    lock: file.into(),
                });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(UidError::Slot { path, source: err });
            }
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
}
