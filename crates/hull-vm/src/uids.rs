//! The host uids that VMs' hypervisor processes run as.
//!
//! Each QEMU runs as a uid of its own from one range, with the same number as
//! its gid, so that one VM's hypervisor can neither signal, trace nor open
//! another's files, and so that firewall rules can name every VM's traffic
//! that leaves from the host's own sockets (`meta skuid`).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
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
    #[error("{0:?} is not a range of VM uids FIRST:COUNT, with FIRST ≥ 65536, COUNT ≥ 16 and the range below 4294967295")]
    BadRange(String),
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

    /// `FIRST:COUNT`, as `hulld --vm-uids` takes it. Uids below 65536 belong
    /// to accounts, and the last uid is the kernel's "no uid".
    pub fn parse(text: &str) -> Result<Self, UidError> {
        let bad = || UidError::BadRange(text.chars().take(40).collect());
        let (first, count) = text.split_once(':').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let last = first.checked_add(count.checked_sub(1).ok_or_else(bad)?);
        if first < 65_536 || count < 16 || last.is_none_or(|last| last == u32::MAX) {
            return Err(bad());
        }
        Ok(Self { first, count })
    }

    pub fn range(&self) -> RangeInclusive<u32> {
        self.first..=self.first + (self.count - 1)
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.range().contains(&uid)
    }

    /// Takes the first free uid of the range. Slot `n` is the file
    /// `dir/n`: its starter holds an exclusive `flock` on it from the
    /// claim until it has recorded the pid of the process that runs as the
    /// uid ([`UidSlot::record`]); from then on the slot is taken while that
    /// process lives. The hypervisor gets neither the lock nor the record,
    /// and a uid that any live process runs as is never handed out, so
    /// that no record, forged or stale, can give one uid to two VMs. Every
    /// starter of VMs on a host shares one `dir`.
    pub fn allocate(&self, dir: &Path) -> Result<UidSlot, UidError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| UidError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        // Read once, at the first slot that is neither locked nor recorded:
        // a process that takes a uid later does so under a lock or a record.
        let mut running: Option<HashSet<u32>> = None;
        for index in 0..self.count {
            let uid = self.first + index;
            if running.as_ref().is_some_and(|uids| uids.contains(&uid)) {
                continue;
            }
            let path = dir.join(index.to_string());
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CREAT | libc::O_CLOEXEC)
                .mode(0o600)
                .open(&path)
                .map_err(|source| UidError::Slot {
                    path: path.clone(),
                    source,
                })?;
            // SAFETY: flock on a descriptor we own.
            let locked =
                unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if !locked {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                    return Err(UidError::Slot { path, source: err });
                }
                continue;
            }
            if holder_alive(&path, uid) {
                continue;
            }
            let running = running.get_or_insert_with(|| uids_running(self));
            if running.contains(&uid) {
                continue;
            }
            return Ok(UidSlot {
                uid,
                _lock: file.into(),
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

/// A uid claimed for one VM: its slot stays locked until the handle is
/// dropped, which the starter does once it recorded its process's pid.
#[derive(Debug)]
pub struct UidSlot {
    pub uid: u32,
    /// The slot's flock, let go with the handle.
    _lock: OwnedFd,
    path: PathBuf,
}

impl UidSlot {
    /// Records the pid of the process that runs as the uid, so that the
    /// slot stays taken while it lives once the lock is let go.
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
    fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .and_then(|pid| process_uids(format!("/proc/{pid}/status")))
        .is_some_and(|uids| uids.contains(&uid))
}

/// The uids of `uids`' range that a live process runs as: its real,
/// effective, saved or filesystem uid.
fn uids_running(uids: &VmUids) -> HashSet<u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .filter_map(|entry| process_uids(entry.path().join("status")))
        .flatten()
        .filter(|uid| uids.contains(*uid))
        .collect()
}

/// The four uids of the `Uid:` line of a `/proc/PID/status`.
fn process_uids(status: impl AsRef<Path>) -> Option<Vec<u32>> {
    let status = fs::read_to_string(status).ok()?;
    parse_uids(&status)
}

fn parse_uids(status: &str) -> Option<Vec<u32>> {
    let line = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    line.split_whitespace()
        .map(|uid| uid.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_parse_within_bounds() {
        use super::VmUids;
        assert_eq!(
            VmUids::parse("2000000000:1024").unwrap(),
            VmUids {
                first: 2_000_000_000,
                count: 1024
            }
        );
        for bad in [
            "",
            "5",
            "1000:1024",
            "2000000000:0",
            "2000000000:8",
            "4294967280:16",
            "x:y",
            "4294967290:1000",
        ] {
            assert!(VmUids::parse(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn the_default_range_holds_its_ends_only() {
        let uids = VmUids::DEFAULT;
        assert!(uids.contains(1_900_000_000));
        assert!(uids.contains(1_900_065_535));
        assert!(!uids.contains(1_900_065_536));
        assert!(!uids.contains(1_899_999_999));
    }

    /// A range no account or process of the test host runs as.
    const UNUSED: VmUids = VmUids {
        first: 1_950_000_000,
        count: 2,
    };

    #[test]
    fn a_claimed_slot_is_taken_until_its_handle_goes() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().join("vm-uids");
        let first = UNUSED.allocate(&slots).unwrap();
        let second = UNUSED.allocate(&slots).unwrap();
        assert_eq!((first.uid, second.uid), (1_950_000_000, 1_950_000_001));
        assert!(matches!(
            UNUSED.allocate(&slots),
            Err(UidError::Exhausted { count: 2, .. })
        ));
        // Dropped before its process ran as the uid: free again.
        drop(first);
        assert_eq!(UNUSED.allocate(&slots).unwrap().uid, 1_950_000_000);
    }

    #[test]
    fn a_recorded_slot_stays_taken_while_its_process_lives() {
        let dir = tempfile::tempdir().unwrap();
        let slots = dir.path().join("vm-uids");
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let uids = VmUids {
            first: me,
            count: 1,
        };
        let path = slots.join("0");
        fs::create_dir_all(&slots).unwrap();
        // This process runs as the slot's uid, as its hypervisor would:
        // neither a record of a gone pid nor garbage frees the uid.
        for forged in [format!("{}\n", u32::MAX), "garbage".into(), String::new()] {
            fs::write(&path, forged).unwrap();
            assert!(matches!(
                uids.allocate(&slots),
                Err(UidError::Exhausted { count: 1, .. })
            ));
        }
        // A record of a live process of the uid holds the slot by itself.
        fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert!(holder_alive(&path, me));
        assert!(!holder_alive(&path, me.wrapping_add(1)));
    }

    #[test]
    fn uids_come_from_the_status_uid_line() {
        let status = "Name:\tqemu\nUid:\t10\t11\t12\t13\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_uids(status), Some(vec![10, 11, 12, 13]));
        assert_eq!(parse_uids("Uid:\tx\n"), None);
        assert_eq!(parse_uids("Name:\tqemu\n"), None);
    }
}
