//! Linux's mount API (5.12 and later) where Hull needs it: mount
//! attributes set on a whole tree at once, and detached mounts built
//! whole before they are placed or read through.
//!
//! A bind made read-only after it is mounted is read-only only where that
//! was done: the copies that propagation already made into other mount
//! namespaces (QEMU's) stay writable. A detached mount gets its attributes
//! before it is attached anywhere, so every copy carries them; and a file
//! opened through a read-only detached mount can never be opened again for
//! writing, whatever capabilities its holder has (reopening it through
//! `/proc/self/fd` meets the same read-only mount).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Once;

use tracing::warn;

// From <linux/mount.h>; the libc crate has the syscall numbers only.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// What a mount QEMU only reads from gets: no writes, set-uid programs
/// or device nodes through it.
pub const READ_ONLY: u64 = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

/// `struct mount_attr` of mount_setattr(2), version 0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Sets `attrs` and `propagation` (none when 0) on the mount at `path`
/// in `dir` (a descriptor or `AT_FDCWD`; `flags` as mount_setattr(2)
/// takes them: `AT_RECURSIVE` for the submounts too, `AT_EMPTY_PATH` for
/// `dir` itself). Only a system call: safe between fork and exec.
pub fn set_attrs(
    dir: RawFd,
    path: &CStr,
    flags: libc::c_int,
    attrs: u64,
    propagation: u64,
) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (a live, correctly laid out
    // struct of the size passed) and the NUL-terminated path; it neither
    // allocates nor locks in this process.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dir,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// A detached copy of the mount at `path` (and of its submounts when
/// `recursive`) rooted there, made with `attrs` before anything can see
/// it: open_tree(2) with `OPEN_TREE_CLONE`, then mount_setattr(2).
pub fn detached(path: &CStr, recursive: bool, attrs: u64) -> io::Result<OwnedFd> {
    let recursive = if recursive { libc::AT_RECURSIVE } else { 0 };
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | recursive as libc::c_uint;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new
    // descriptor or -1.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    set_attrs(
        tree.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | recursive,
        attrs,
        0,
    )?;
    Ok(tree)
}

/// Attaches the detached mount `tree` on the directory `point` (an
/// `O_PATH` descriptor, so no path is resolved again).
pub fn attach(tree: &OwnedFd, point: &OwnedFd) -> io::Result<()> {
    // SAFETY: move_mount takes two descriptors the caller owns and two
    // empty NUL-terminated paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            point.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Opens `path` for reading through a read-only detached copy of the
/// mount of its directory, so that whoever is handed the descriptor can
/// never reopen it for writing, change its mode or owner (EROFS), even
/// with `CAP_DAC_OVERRIDE` and `CAP_FOWNER`. Where the mount API is not
/// available (no root, an old kernel, a seccomp filter) it says so once
/// and opens the file as it is.
pub fn open_read_only(path: &Path) -> io::Result<OwnedFd> {
    let real = std::fs::canonicalize(path)?;
    let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let c = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (c_dir, c_name) = (c(dir.as_os_str().as_bytes())?, c(name.as_bytes())?);
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    let (base, c_path) = match detached(&c_dir, false, READ_ONLY) {
        Ok(tree) => (Some(tree), c_name),
        Err(err) => {
            static ONCE: Once = Once::new();
            ONCE.call_once(|| {
                warn!(
                    error = %err,
                    path = %path.display(),
                    "cannot open files QEMU only reads through a read-only mount: a QEMU with a host share's capabilities could reopen them for writing"
                );
            });
            (None, c(real.as_os_str().as_bytes())?)
        }
    };
    let base = base.as_ref().map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: the path is NUL-terminated and outlives the call; `base` is
    // AT_FDCWD or a descriptor we own. The name is one component of a
    // canonical path, and a symlink swapped in since is not followed.
    let fd = check(unsafe { libc::openat(base, c_path.as_ptr(), flags) }.into())?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns
    // it. It holds the detached mount alive after the tree's descriptor
    // closes.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Whether the mount `fd`'s file was opened through is read-only.
pub fn on_read_only_mount(fd: &OwnedFd) -> io::Result<bool> {
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: fstatvfs fills the struct it is given on success.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), stat.as_mut_ptr()) }.into())?;
    // SAFETY: fstatvfs succeeded, so the struct is filled.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_flag & libc::ST_RDONLY != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    fn root() -> bool {
        // SAFETY: geteuid(2) cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: the mount API needs root");
        }
        root
    }

    #[test]
    fn a_file_opened_read_only_cannot_be_reopened_for_writing_or_chmodded() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, "kernel").unwrap();
        let fd = open_read_only(&path).unwrap();
        assert!(on_read_only_mount(&fd).unwrap());
        assert_eq!(
            std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap(),
            "kernel"
        );
        // Root, with every capability, is refused by the mount itself.
        let reopened = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap_err();
        assert_eq!(reopened.raw_os_error(), Some(libc::EROFS), "{reopened}");
        let file = std::fs::File::from(fd);
        let chmod = file
            .set_permissions(std::fs::Permissions::from_mode(0o666))
            .unwrap_err();
        assert_eq!(chmod.raw_os_error(), Some(libc::EROFS), "{chmod}");
        // The host's own path stays writable.
        std::fs::write(&path, "changed").unwrap();
    }

    #[test]
    fn a_symlinked_path_is_opened_at_its_target_through_the_read_only_mount() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real");
        std::fs::write(&target, "disk").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let fd = open_read_only(&link).unwrap();
        assert!(on_read_only_mount(&fd).unwrap());
        let missing = open_read_only(&dir.path().join("missing")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_detached_tree_is_attached_with_its_attributes() {
        if !root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (source, point) = (dir.path().join("source"), dir.path().join("point"));
        std::fs::create_dir(&source).unwrap();
        std::fs::create_dir(&point).unwrap();
        let c_source = CString::new(source.as_os_str().as_bytes()).unwrap();
        let tree = detached(&c_source, true, READ_ONLY).unwrap();
        let point_fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&point)
            .map(Into::into)
            .unwrap();
        attach(&tree, &point_fd).unwrap();
        let written = std::fs::write(point.join("new"), "x").unwrap_err();
        let c_point = CString::new(point.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(c_point.as_ptr(), libc::MNT_DETACH) };
        assert_eq!(written.raw_os_error(), Some(libc::EROFS), "{written}");
    }
}
