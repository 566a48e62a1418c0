//! File system calls relative to directory descriptors, for work inside a
//! container's rootfs that a process in the container can change meanwhile.
//! Paths are resolved by the kernel with `openat2(RESOLVE_IN_ROOT)`, so a
//! symlink, absolute or full of `..`, never leads out of the root; single
//! names are used with `*at` calls that do not follow a final symlink.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::sys;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn name_cstring(name: &Path) -> io::Result<CString> {
    sys::cstring(name.as_os_str().as_bytes())
}

/// Takes ownership of a descriptor a system call returned, or its error.
fn owned(fd: libc::c_long) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as libc::c_int) })
}

/// `struct open_how` of openat2(2), version 0 (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `path` below `root` as if `root` were `/`: absolute symlinks start
/// again at `root`, `..` stops there. `flags` are `open(2)` flags; add
/// `O_NOFOLLOW` to get a final symlink itself (with `O_PATH`).
pub fn open_in_root(root: &File, path: &Path, flags: libc::c_int) -> io::Result<File> {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    let c_path = name_cstring(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        // Magic links (/proc/<pid>/fd/…) inside a container's rootfs could
        // point anywhere in the guest.
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c_path` is NUL-terminated and `how` is a `struct open_how`
    // whose size is passed with it; both outlive the call.
    owned(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })
}

/// Opens the single name `name` in `dir` without following it if it is a
/// symlink (the caller passes `O_NOFOLLOW` or `O_PATH | O_NOFOLLOW`).
pub fn open_at(dir: &File, name: &Path, flags: libc::c_int, mode: u32) -> io::Result<File> {
    let c_name = name_cstring(name)?;
    // SAFETY: `c_name` is NUL-terminated and outlives the call; the mode is
    // passed as the variadic argument open(2) expects.
    owned(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    } as libc::c_long)
}

/// The path under /proc that reopens, lists or changes what `fd` holds
/// itself, whatever its name is now.
pub fn fd_path(fd: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The target of the symlink `link` is an `O_PATH | O_NOFOLLOW` descriptor of.
pub fn read_link(link: &File) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: an empty path with a descriptor reads that symlink; `buf` is
    // writable for its length.
    let len = unsafe {
        libc::readlinkat(
            link.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(PathBuf::from(OsString::from_vec(buf)))
}

pub fn mkdir_at(dir: &File, name: &Path, mode: u32) -> io::Result<()> {
    let c_name = name_cstring(name)?;
    // SAFETY: `c_name` is NUL-terminated and outlives the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), mode) })
}

/// Removes the file, symlink or empty directory `name` in `dir`.
pub fn remove_at(dir: &File, name: &Path, is_dir: bool) -> io::Result<()> {
    let c_name = name_cstring(name)?;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `c_name` is NUL-terminated and outlives the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c_name.as_ptr(), flags) })
}

pub fn symlink_at(target: &Path, dir: &File, name: &Path) -> io::Result<()> {
    let (c_target, c_name) = (name_cstring(target)?, name_cstring(name)?);
    // SAFETY: both strings are NUL-terminated and outlive the call.
    check(unsafe { libc::symlinkat(c_target.as_ptr(), dir.as_raw_fd(), c_name.as_ptr()) })
}

/// Makes `name` in `dir` a hard link to what `existing` (any descriptor,
/// `O_PATH` included) holds.
pub fn link_at(existing: &File, dir: &File, name: &Path) -> io::Result<()> {
    let source = sys::path_cstring(&fd_path(existing))?;
    let c_name = name_cstring(name)?;
    // SAFETY: both strings are NUL-terminated and outlive the call. Following
    // the /proc magic link is how linkat(2) links an open descriptor without
    // CAP_DAC_READ_SEARCH.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            source.as_ptr(),
            dir.as_raw_fd(),
            c_name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
}

/// Creates a device node or FIFO; `mode` holds the type bits.
pub fn mknod_at(dir: &File, name: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c_name = name_cstring(name)?;
    // SAFETY: `c_name` is NUL-terminated and outlives the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c_name.as_ptr(), mode, rdev) })
}

/// Sets the owner of `name` in `dir`, of a symlink itself.
pub fn chown_at(dir: &File, name: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let c_name = name_cstring(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: `c_name` is NUL-terminated and outlives the call.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), c_name.as_ptr(), uid, gid, flags) })
}

/// Sets the access and modification times of `name` in `dir`, of a symlink
/// itself.
pub fn set_mtime_at(dir: &File, name: &Path, unix_seconds: i64) -> io::Result<()> {
    let c_name = name_cstring(name)?;
    let time = libc::timespec {
        tv_sec: unix_seconds as libc::time_t,
        tv_nsec: 0,
    };
    let times = [time, time];
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: `c_name` is NUL-terminated and `times` is an array of two
    // timespecs; both outlive the call.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), c_name.as_ptr(), times.as_ptr(), flags) })
}

/// Sets the permission bits of what `fd` holds, which must not be a symlink
/// (chmod through the /proc link would follow it). Works on `O_PATH` descriptors.
pub fn chmod_fd(fd: &File, mode: u32) -> io::Result<()> {
    let path = sys::path_cstring(&fd_path(fd))?;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    check(unsafe { libc::chmod(path.as_ptr(), mode) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn root() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        (dir, fd)
    }

    #[test]
    fn absolute_and_dotdot_symlinks_stay_inside_the_root() {
        let (dir, root) = root();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), "inside").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", dir.path().join("up")).unwrap();
        for path in ["abs/passwd", "up/passwd", "/../etc/passwd"] {
            let file = open_in_root(&root, Path::new(path), libc::O_RDONLY).unwrap();
            assert_eq!(
                fs::read_to_string(fd_path(&file)).unwrap(),
                "inside",
                "{path}"
            );
        }
    }

    #[test]
    fn a_final_symlink_is_opened_itself_with_nofollow() {
        let (dir, root) = root();
        std::os::unix::fs::symlink("/nowhere", dir.path().join("link")).unwrap();
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        let link = open_in_root(&root, Path::new("/link"), flags).unwrap();
        assert_eq!(read_link(&link).unwrap(), Path::new("/nowhere"));
        let err = open_in_root(&root, Path::new("/link"), libc::O_PATH).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn names_are_created_changed_and_removed_in_a_directory() {
        let (dir, root) = root();
        mkdir_at(&root, Path::new("d"), 0o755).unwrap();
        symlink_at(Path::new("d"), &root, Path::new("l")).unwrap();
        mknod_at(&root, Path::new("p"), libc::S_IFIFO | 0o600, 0).unwrap();
        let fifo = open_at(&root, Path::new("p"), libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
        chmod_fd(&fifo, 0o640).unwrap();
        set_mtime_at(&root, Path::new("l"), 1_000_000).unwrap();
        chown_at(&root, Path::new("l"), 12, 34).unwrap();
        use std::os::unix::fs::MetadataExt;
        let link = fs::symlink_metadata(dir.path().join("l")).unwrap();
        assert_eq!((link.mtime(), link.uid(), link.gid()), (1_000_000, 12, 34));
        let pipe = fs::symlink_metadata(dir.path().join("p")).unwrap();
        assert_eq!(pipe.mode() & 0o7777, 0o640);
        link_at(&fifo, &root, Path::new("p2")).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join("p2")).unwrap().ino(),
            pipe.ino()
        );
        remove_at(&root, Path::new("l"), false).unwrap();
        remove_at(&root, Path::new("d"), true).unwrap();
        assert!(!dir.path().join("d").exists());
    }
}
