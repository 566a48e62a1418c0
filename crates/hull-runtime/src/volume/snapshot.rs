//! Snapshots of named volumes: copies of a volume's disk that share its
//! blocks where the host's filesystem can (a reflink, `FICLONE`), and
//! otherwise copy only its data, so the copy stays sparse. A snapshot
//! outlives its volume and is restored as a new volume.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{check_name, VolumeError, VolumeRecord, Volumes, DISK_FILE, RECORD_FILE};

/// Inside the volumes' directory: no volume name starts with a dot.
pub(crate) const SNAPSHOTS_DIR: &str = ".snapshots";
pub(crate) const SNAPSHOT_RECORD: &str = "snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("get snapshot {0}: no such snapshot")]
    NotFound(String),
    #[error("snapshot {0} exists already: remove it or pick another name")]
    Exists(String),
    #[error("volume {0} exists already: a volume restored from a snapshot must be new")]
    VolumeExists(String),
    #[error("invalid snapshot name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, two characters at least")]
    InvalidName(String),
    #[error("cannot snapshot volume {volume}: the running container {container} has its disk, and its filesystem could not be frozen for the copy ({message}); stop the container, or try again")]
    Freeze {
        volume: String,
        container: String,
        message: String,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How a disk was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMethod {
    /// The copy shares the original's blocks until either is written.
    Reflink,
    /// The copy holds its own copy of the original's data; holes stay holes.
    Copy,
}

/// A snapshot as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub name: String,
    /// The volume it was taken of.
    pub volume: String,
    pub created: SystemTime,
    /// The disk's size in bytes.
    pub size: u64,
    pub method: CopyMethod,
}

/// A snapshot and where its disk is.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub record: SnapshotRecord,
    pub disk: PathBuf,
    /// Bytes the snapshot's disk takes on the host (blocks shared by a
    /// reflink are counted in full).
    pub used_bytes: u64,
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.to_owned();
    move |source| SnapshotError::Io { what, path, source }
}

impl Volumes {
    fn snapshots_dir(&self) -> PathBuf {
        self.dir.join(SNAPSHOTS_DIR)
    }

    pub fn get_snapshot(&self, name: &str) -> Result<Snapshot, SnapshotError> {
        let missing = || SnapshotError::NotFound(name.to_owned());
        check_name(name).map_err(|_| missing())?;
        let dir = self.snapshots_dir().join(name);
        let bytes = fs::read(dir.join(SNAPSHOT_RECORD)).map_err(|_| missing())?;
        let record: SnapshotRecord = serde_json::from_slice(&bytes).map_err(|_| missing())?;
        let disk = dir.join(DISK_FILE);
        let used_bytes = fs::metadata(&disk).map_or(0, |m| m.blocks() * 512);
        Ok(Snapshot {
            record,
            disk,
            used_bytes,
        })
    }

    /// Every snapshot, by name.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        let mut names: Vec<String> = fs::read_dir(self.snapshots_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
            .iter()
            .filter_map(|n| self.get_snapshot(n).ok())
            .collect()
    }

    /// Copies the volume's disk into the new snapshot `name`. The caller
    /// makes sure no running VM writes to the disk meanwhile.
    pub fn snapshot(&self, volume: &str, name: &str) -> Result<Snapshot, SnapshotError> {
        check_name(name).map_err(|_| SnapshotError::InvalidName(name.to_owned()))?;
        let source = self.get(volume)?;
        if source.kind() != super::VolumeKind::Block {
            return Err(VolumeError::NotBlock(
                volume.to_owned(),
                "snapshots are of block volumes (type=block); copy its files instead",
            )
            .into());
        }
        let _guard = self.guard();
        let dir = self.snapshots_dir().join(name);
        match fs::create_dir_all(self.snapshots_dir()).and_then(|()| fs::create_dir(&dir)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(SnapshotError::Exists(name.to_owned()))
            }
            Err(e) => return Err(io_error("create", &dir)(e)),
        }
        let made = (|| {
            let disk = dir.join(DISK_FILE);
            let method = clone_file(&source.path, &disk).map_err(io_error("copy", &disk))?;
            let record = SnapshotRecord {
                name: name.to_owned(),
                volume: volume.to_owned(),
                created: SystemTime::now(),
                size: source.record.size,
                method,
            };
            let path = dir.join(SNAPSHOT_RECORD);
            crate::records::write_json(&path, &record).map_err(io_error("write", &path))
        })();
        if let Err(err) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        self.get_snapshot(name)
    }

    /// Removes a snapshot; volumes restored from it keep their data.
    pub fn remove_snapshot(&self, name: &str) -> Result<(), SnapshotError> {
        self.get_snapshot(name)?;
        let _guard = self.guard();
        crate::run::remove_dir(&self.snapshots_dir().join(name));
        Ok(())
    }

    /// Creates the volume `name` holding what the snapshot holds.
    pub fn create_from(&self, name: &str, snapshot: &str) -> Result<super::Volume, SnapshotError> {
        check_name(name)?;
        let source = self.get_snapshot(snapshot)?;
        let _guard = self.guard();
        if self.get(name).is_ok() {
            return Err(SnapshotError::VolumeExists(name.to_owned()));
        }
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        let made = (|| {
            let disk = dir.join(DISK_FILE);
            clone_file(&source.disk, &disk).map_err(io_error("copy", &disk))?;
            let record = VolumeRecord {
                name: name.to_owned(),
                created: SystemTime::now(),
                size: source.record.size,
                kind: super::VolumeKind::Block,
                anonymous: false,
            };
            let path = dir.join(RECORD_FILE);
            crate::records::write_json(&path, &record).map_err(io_error("write", &path))
        })();
        if let Err(err) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        Ok(self.get(name)?)
    }
}

/// Copies `source` to the new file `target`: a reflink where the
/// filesystem makes one, else the data ranges alone, so holes stay holes.
/// The copy is on stable storage when this returns.
pub fn clone_file(source: &Path, target: &Path) -> io::Result<CopyMethod> {
    let from = File::open(source)?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are open for the duration of the call.
    let cloned = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    let method = if cloned == 0 {
        CopyMethod::Reflink
    } else {
        let error = io::Error::last_os_error();
        // Filesystems without reflinks (ext4, tmpfs) or two filesystems.
        let unsupported = [
            libc::EOPNOTSUPP,
            libc::EXDEV,
            libc::EINVAL,
            libc::ENOTTY,
            libc::ENOSYS,
        ];
        if !error
            .raw_os_error()
            .is_some_and(|e| unsupported.contains(&e))
        {
            return Err(error);
        }
        copy_data_ranges(&from, &to)?;
        CopyMethod::Copy
    };
    to.sync_all()?;
    Ok(method)
}

/// Copies every data range of `from` (found with `SEEK_DATA`/`SEEK_HOLE`)
/// to the same offset of `to`, which gets `from`'s length.
fn copy_data_ranges(from: &File, to: &File) -> io::Result<()> {
    let length = from.metadata()?.len();
    to.set_len(length)?;
    let mut offset: i64 = 0;
    let end = i64::try_from(length).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    while offset < end {
        // SAFETY: lseek only takes integers.
        let data = unsafe { libc::lseek(from.as_raw_fd(), offset, libc::SEEK_DATA) };
        if data < 0 {
            let error = io::Error::last_os_error();
            // ENXIO: nothing but a hole from `offset` to the end.
            if error.raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return Err(error);
        }
        // SAFETY: lseek only takes integers.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut from_offset, mut to_offset) = (data, data);
        while from_offset < hole {
            let wanted = usize::try_from(hole - from_offset).unwrap_or(usize::MAX);
            // SAFETY: both descriptors are open; the offsets are our own
            // variables, which copy_file_range advances.
            let copied = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut from_offset,
                    to.as_raw_fd(),
                    &mut to_offset,
                    wanted,
                    0,
                )
            };
            if copied < 0 {
                return Err(io::Error::last_os_error());
            }
            if copied == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
        }
        offset = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_copy_keeps_the_data_and_the_holes() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let mut file = File::create(&source).unwrap();
        file.set_len(64 << 20).unwrap();
        file.seek(SeekFrom::Start(1 << 20)).unwrap();
        file.write_all(&[7u8; 8192]).unwrap();
        file.seek(SeekFrom::Start(40 << 20)).unwrap();
        file.write_all(b"end").unwrap();
        drop(file);

        let target = dir.path().join("target");
        clone_file(&source, &target).unwrap();
        assert_eq!(fs::read(&source).unwrap(), fs::read(&target).unwrap());
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(meta.len(), 64 << 20);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "{} bytes",
            meta.blocks() * 512
        );
        // Never over an existing file.
        assert!(clone_file(&source, &target).is_err());
    }

    #[test]
    fn snapshots_are_taken_listed_restored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        let sized = super::super::parse_options([("size", "32m")]).unwrap();
        let volume = volumes.create("data", sized, false).unwrap();
        let shared = volumes.create("shared", Default::default(), false).unwrap();
        assert!(matches!(
            volumes.snapshot(&shared.record.name, "snap0"),
            Err(SnapshotError::Volume(VolumeError::NotBlock(..)))
        ));
        volumes.remove("shared").unwrap();
        let snapshot = volumes.snapshot("data", "snap1").unwrap();
        assert_eq!(snapshot.record.volume, "data");
        assert_eq!(snapshot.record.size, 32 << 20);
        assert!(matches!(
            volumes.snapshot("data", "snap1"),
            Err(SnapshotError::Exists(_))
        ));
        assert!(matches!(
            volumes.snapshot("data", ".x"),
            Err(SnapshotError::InvalidName(_))
        ));
        // Snapshots are not volumes.
        assert_eq!(volumes.list().len(), 1);
        assert_eq!(volumes.snapshots().len(), 1);

        let restored = volumes.create_from("data2", "snap1").unwrap();
        assert_eq!(
            fs::read(&restored.path).unwrap(),
            fs::read(&volume.path).unwrap()
        );
        assert!(matches!(
            volumes.create_from("data", "snap1"),
            Err(SnapshotError::VolumeExists(_))
        ));
        assert!(matches!(
            volumes.create_from("data3", "nosuch"),
            Err(SnapshotError::NotFound(_))
        ));
        volumes.remove_snapshot("snap1").unwrap();
        assert!(volumes.snapshots().is_empty());
        assert!(volumes.get("data2").is_ok());
    }
}
