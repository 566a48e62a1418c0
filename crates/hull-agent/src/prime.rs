//! Image disks mounted and read ahead of their container (`PrimeRootfs`):
//! a pooled VM holds the rootfs of the image that runs next, so the run
//! neither waits for the disk's hot-plug and mount nor for the first reads
//! of its program through the emulated disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use hull_proto::RootfsSpec;

use crate::{disk, fsat, sys};

/// Where primed image disks are mounted, by serial.
pub const PRIMED_DIRS: &str = "/run/hull/primed";
/// The most a host may ask to be read, whatever it asks: the page cache
/// it fills is the guest's memory.
pub const MAX_BUDGET: u64 = 256 << 20;
/// Paths a host may name; a program's candidates along `PATH` are a few.
pub const MAX_PATHS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PrimeError {
    #[error("invalid serial {0:?}: it must be a non-empty file name")]
    InvalidSerial(String),
    #[error("invalid path {0:?} to read: it must be absolute")]
    InvalidPath(String),
    #[error("{count} paths to read are more than the {MAX_PATHS} allowed")]
    TooManyPaths { count: usize },
    #[error("the disk {serial} is already primed")]
    AlreadyPrimed { serial: String },
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount {fs_type} from {} at {}", .device.display(), .target.display())]
    Mount {
        fs_type: String,
        device: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the primed rootfs at {}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot unmount the primed rootfs at {}", .path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One primed disk: its device, and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mounted {
    device: PathBuf,
    dir: PathBuf,
}

/// The disks primed in this VM, by serial.
#[derive(Debug, Default)]
pub struct Primed(Mutex<HashMap<String, Mounted>>);

impl Primed {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Mounted>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mounts the disk `rootfs` under [`PRIMED_DIRS`] and reads `read`
    /// there, `budget` bytes at most; returns the bytes read.
    pub fn prime(
        &self,
        rootfs: &RootfsSpec,
        read: &[String],
        budget: u64,
        wait: Duration,
    ) -> Result<u64, PrimeError> {
        let serial = &rootfs.serial;
        // It names a directory, as a container id does.
        crate::container::validate_id(serial)
            .map_err(|_| PrimeError::InvalidSerial(serial.clone()))?;
        if read.len() > MAX_PATHS {
            return Err(PrimeError::TooManyPaths { count: read.len() });
        }
        if let Some(path) = read.iter().find(|p| !p.starts_with('/')) {
            return Err(PrimeError::InvalidPath(path.clone()));
        }
        if self.map().contains_key(serial) {
            return Err(PrimeError::AlreadyPrimed {
                serial: serial.clone(),
            });
        }
        let device = disk::wait_for_disk(serial, wait)?;
        let dir = Path::new(PRIMED_DIRS).join(serial);
        std::fs::create_dir_all(&dir).map_err(|source| PrimeError::Create {
            path: dir.clone(),
            source,
        })?;
        sys::mount(
            &device.to_string_lossy(),
            &dir,
            Some(&rootfs.fs_type),
            libc::MS_RDONLY | libc::MS_NOATIME,
            None,
        )
        .map_err(|source| PrimeError::Mount {
            fs_type: rootfs.fs_type.clone(),
            device: device.clone(),
            target: dir.clone(),
            source,
        })?;
        let root = File::open(&dir).map_err(|source| PrimeError::Root {
            path: dir.clone(),
            source,
        });
        let root = match root {
            Ok(root) => root,
            Err(e) => {
                let _ = sys::umount_detach(&dir);
                return Err(e);
            }
        };
        self.map().insert(serial.clone(), Mounted { device, dir });
        Ok(read_ahead(&root, read, budget.min(MAX_BUDGET)))
    }

    /// The primed mount of `serial`, if the disk found for a container
    /// under that serial is the primed one.
    pub fn mount_of(&self, serial: &str, device: &Path) -> Option<PathBuf> {
        self.map()
            .get(serial)
            .filter(|m| m.device == device)
            .map(|m| m.dir.clone())
    }

    /// Unmounts the primed disk `serial`; nothing primed there is fine.
    /// A failed unmount keeps it primed, so it can be asked again.
    pub fn release(&self, serial: &str) -> Result<(), PrimeError> {
        let mut map = self.map();
        let Some(mounted) = map.get(serial) else {
            return Ok(());
        };
        sys::umount_detach(&mounted.dir).map_err(|source| PrimeError::Unmount {
            path: mounted.dir.clone(),
            source,
        })?;
        let _ = std::fs::remove_dir(&mounted.dir);
        map.remove(serial);
        Ok(())
    }
}

/// The absolute paths to read for `read`: paths as they are, program
/// names along `path` (as exec looks for them), relative paths not at all;
/// [`MAX_PATHS`] at most.
pub fn files_of(read: &[String], path: &str) -> Vec<String> {
    let env = [format!("PATH={path}")];
    read.iter()
        .flat_map(|name| crate::procenv::exec_candidates(name, &env))
        .filter(|candidate| candidate.starts_with('/'))
        .take(MAX_PATHS)
        .collect()
}

/// Reads the regular files at `paths` below `root` (symlinks resolved
/// inside it) into the page cache, `budget` bytes in all; what cannot be
/// read is skipped. Returns the bytes read.
pub fn read_ahead(root: &File, paths: &[String], budget: u64) -> u64 {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut left = budget;
    for path in paths {
        let relative = Path::new(path.trim_start_matches('/'));
        // Found first without opening it: opening a FIFO blocks, and a
        // device node's open is its driver's.
        let Ok(found) = fsat::open_in_root(root, relative, libc::O_PATH) else {
            continue;
        };
        if !found.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        let flags = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC;
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(fsat::fd_path(&found))
        else {
            continue;
        };
        let mut limited = file.take(left);
        loop {
            match limited.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if left == 0 {
            break;
        }
    }
    budget - left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_inside_the_root_up_to_the_budget() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), vec![1u8; 5000]).unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/prog"), vec![7u8; 3000]).unwrap();
        std::os::unix::fs::symlink("/bin/prog", root.path().join("bin/link")).unwrap();
        // Absolute and `..` links stay inside the root: these name nothing.
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            root.path().join("bin/escape"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../../../../../secret", root.path().join("up")).unwrap();
        // A FIFO nobody writes: opening it to read would block for ever.
        let fifo = std::ffi::CString::new(
            root.path()
                .join("fifo")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let dir = File::open(root.path()).unwrap();

        let all = |paths: &[&str], budget| {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            read_ahead(&dir, &paths, budget)
        };
        assert_eq!(all(&["/bin/prog"], 1 << 20), 3000);
        assert_eq!(
            all(&["/bin/link"], 1 << 20),
            3000,
            "a link inside is followed"
        );
        assert_eq!(all(&["/bin/escape", "/up"], 1 << 20), 0);
        assert_eq!(
            all(&["/missing", "/bin", "/fifo", "/bin/prog"], 1 << 20),
            3000
        );
        assert_eq!(
            all(&["/bin/prog", "/bin/link"], 4000),
            4000,
            "the budget holds"
        );
        assert_eq!(all(&["/bin/prog"], 0), 0);
    }

    #[test]
    fn programs_are_looked_for_along_the_path() {
        let read = ["sh".to_string(), "/etc/passwd".into(), "./run".into()];
        assert_eq!(
            files_of(&read, "/usr/bin::/bin"),
            ["/usr/bin/sh", "/bin/sh", "/etc/passwd"],
            "relative directories and paths are skipped"
        );
        let long = vec!["/a"; 200].join(":");
        assert_eq!(files_of(&["x".into()], &long).len(), MAX_PATHS);
    }

    #[test]
    fn hostile_requests_are_refused_before_anything_is_mounted() {
        let primed = Primed::default();
        let spec = |serial: &str| RootfsSpec {
            serial: serial.into(),
            fs_type: "erofs".into(),
        };
        let wait = Duration::ZERO;
        for serial in ["", ".", "..", "a/b", "../../etc"] {
            assert!(matches!(
                primed.prime(&spec(serial), &[], 0, wait),
                Err(PrimeError::InvalidSerial(_))
            ));
        }
        assert!(matches!(
            primed.prime(&spec("hull-rootfs"), &["bin/sh".into()], 0, wait),
            Err(PrimeError::InvalidPath(_))
        ));
        let many = vec!["/x".to_string(); MAX_PATHS + 1];
        assert!(matches!(
            primed.prime(&spec("hull-rootfs"), &many, 0, wait),
            Err(PrimeError::TooManyPaths { .. })
        ));
        // Nothing primed: nothing to release, and no mount to offer.
        primed.release("hull-rootfs").unwrap();
        assert_eq!(primed.mount_of("hull-rootfs", Path::new("/dev/sda")), None);
    }
}
