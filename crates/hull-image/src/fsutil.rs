//! The few filesystem operations the store's guarantees rest on: atomic
//! replacement (write, fsync, rename, fsync the directory) and advisory locks.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// A failed copy: reading the source or writing the destination.
pub(crate) enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `from` into `to`, telling read failures from write failures.
pub(crate) fn copy(from: &mut impl Read, to: &mut impl Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        total += n as u64;
    }
}

/// Starts writing `len` bytes of `file` from `offset` back to disk without
/// waiting for it, so that the fsync which makes the file durable later has
/// little left to wait for. Only a hint: where the filesystem refuses it,
/// that fsync does all the work, as it would have anyway.
pub(crate) fn start_writeback(file: &impl AsRawFd, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is
    // borrowed from a live file for the length of the call.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "early writeback refused");
    }
}

/// Flushes a directory's entries (a rename into it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `contents` so that readers see the old or the new file, never a mix.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Moves a file into place durably: fsync the file, rename, fsync the target directory.
pub(crate) fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    File::open(from)?.sync_all()?;
    fs::rename(from, to)?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// An exclusive `flock` on a lock file, released when dropped.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Waits for the exclusive lock on `path`, creating the file if needed.
    pub(crate) fn exclusive(path: &Path) -> io::Result<Lock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            // SAFETY: the descriptor belongs to `file`, which is open for the whole call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
