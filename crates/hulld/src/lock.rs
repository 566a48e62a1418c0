//! One hulld per state root: an exclusive `flock` on a file under the root,
//! held for the daemon's life. The kernel drops it when the process dies,
//! however it dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name under the state root; it holds the owner's pid.
pub const LOCK_FILE: &str = "hulld.lock";

/// The held lock; dropping it (or exiting) releases it.
pub struct RootLock {
    _file: File,
    pub path: PathBuf,
}

/// Takes the state root's lock, or fails at once naming the hulld that holds it.
pub fn lock_root(root: &Path) -> Result<RootLock> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; the lock lives as
    // long as the descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another hulld".to_owned(),
            pid => format!("hulld (pid {pid})"),
        };
        bail!(
            "{holder} already runs with the state root {}: stop it, or give this one another --root (the lock is {})",
            root.display(),
            path.display()
        );
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(RootLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_root_names_the_first_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_root(dir.path()).unwrap();
        let written = std::fs::read_to_string(&first.path).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        // flock locks belong to open file descriptions: a second open in
        // this process conflicts as another process's would.
        let err = lock_root(dir.path()).err().expect("the root is locked");
        let message = err.to_string();
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        lock_root(dir.path()).expect("the lock is free once released");
    }
}
