//! Mount points in a VM's share reached by descriptor: the guest
//! writes what is mounted in the share, so no path below it is resolved
//! twice or followed through a symlink.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use hull_vm::mount::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// The path through which the kernel reaches exactly `fd`'s file.
fn fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens the directory `path` (in `dir` when given, else from the host's
/// root) as an `O_PATH` descriptor; a symlink as its last name is refused.
pub fn open_dir(dir: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    let c_path = c_string(path.as_os_str().as_bytes())?;
    let base = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `base` is
    // AT_FDCWD or a descriptor the caller owns.
    let fd = unsafe { libc::openat(base, c_path.as_ptr(), flags) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes the directory `name` in `dir` unless it is there, and opens it;
/// a symlink in its place is refused, not followed. `name` is one name.
pub fn make_dir(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let c_name = c_string(name.as_bytes())?;
    // SAFETY: `c_name` is NUL-terminated and outlives the call; `dir` is open.
    let rc = unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), 0o755) };
    if let Err(err) = check(rc) {
        if err.kind() != io::ErrorKind::AlreadyExists {
            return Err(err);
        }
    }
    open_dir(Some(dir), Path::new(name))
}

/// Bind-mounts the host's `source` (recursively) on the directory
/// `point`, `nosuid,nodev`, and read-only when asked. The bind is built
/// detached with its attributes and only then attached, so that the copies
/// propagation makes of it (in QEMU's mount namespace) carry them too.
pub fn bind(source: &CStr, point: &OwnedFd, read_only: bool) -> io::Result<()> {
    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    if read_only {
        attrs |= MOUNT_ATTR_RDONLY;
    }
    let tree = mount::detached(source, true, attrs)?;
    mount::attach(&tree, point)
}

/// Detaches every mount stacked on `name` in `dir`. The path runs through
/// `dir`'s own descriptor, and its last name is not followed, so a symlink
/// planted there cannot point the unmount at a host mount.
pub fn unmount(dir: &OwnedFd, name: &str) {
    let Ok(path) = CString::new(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd())) else {
        return;
    };
    // Bounded: a mount point holds as many mounts as were stacked on it.
    for _ in 0..64 {
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let rc = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        if rc != 0 {
            return;
        }
    }
}

/// Removes `name` in `dir` if it is an empty directory.
pub fn remove_dir(dir: &OwnedFd, name: &str) {
    let Ok(c_name) = c_string(name.as_bytes()) else {
        return;
    };
    // SAFETY: `c_name` is NUL-terminated and outlives the call; `dir` is open.
    unsafe { libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), libc::AT_REMOVEDIR) };
}

/// The names in the directory `dir`.
pub fn names(dir: &OwnedFd) -> Vec<String> {
    let path = Path::new(OsStr::from_bytes(fd_path(dir).as_bytes())).to_owned();
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}
