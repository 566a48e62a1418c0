//! Filesystem operations relative to directory file descriptors. None of them
//! follows a symlink in its last component, and a directory is only ever
//! entered through a descriptor opened with `O_NOFOLLOW`: whatever a layer
//! plants, a change meant for a file of the rootfs lands on that file.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The kind of a directory entry, from `fstatat` without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    Symlink,
    Other,
}

/// What `fstatat` tells of an entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stat {
    pub kind: Kind,
    /// Device and inode: who the entry is, whatever its name.
    pub id: (u64, u64),
}

impl Stat {
    fn of(st: &libc::stat) -> Stat {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        Stat {
            kind,
            id: (st.st_dev, st.st_ino),
        }
    }
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn c_name(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The `*at` operations on the entries of a directory, given its descriptor.
pub(crate) trait At {
    fn fd(&self) -> RawFd;

    /// The entry `name`, `None` if there is none.
    fn stat_child(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        let c = c_name(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: c is NUL-terminated and st points to writable memory of the
        // right size; both outlive the call.
        let rc = unsafe {
            libc::fstatat(
                self.fd(),
                c.as_ptr(),
                st.as_mut_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(rc) {
            // SAFETY: fstatat returned 0, so it filled st.
            Ok(_) => Ok(Some(Stat::of(unsafe { &st.assume_init() }))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the directory `name`; a symlink there is an error (`ELOOP`), not followed.
    fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        let c = c_name(name)?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: c is NUL-terminated and outlives the call.
        let fd = cvt(unsafe { libc::openat(self.fd(), c.as_ptr(), flags) })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Creates the regular file `name`, which must not exist yet, for writing.
    fn create_file(&self, name: &OsStr) -> io::Result<File> {
        let c = c_name(name)?;
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: c is NUL-terminated and outlives the call.
        let fd = cvt(unsafe { libc::openat(self.fd(), c.as_ptr(), flags, 0o600 as libc::c_uint) })?;
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: c is NUL-terminated and outlives the call.
        cvt(unsafe { libc::mkdirat(self.fd(), c.as_ptr(), mode) }).map(drop)
    }

    fn symlink(&self, name: &OsStr, target: &Path) -> io::Result<()> {
        let (c, t) = (c_name(name)?, c_name(target.as_os_str())?);
        // SAFETY: both strings are NUL-terminated and outlive the call.
        cvt(unsafe { libc::symlinkat(t.as_ptr(), self.fd(), c.as_ptr()) }).map(drop)
    }

    /// Links `name` to `from`'s entry `from_name` itself, a symlink included.
    fn hard_link(&self, name: &OsStr, from: &dyn At, from_name: &OsStr) -> io::Result<()> {
        let (c, f) = (c_name(name)?, c_name(from_name)?);
        // SAFETY: both strings are NUL-terminated and outlive the call; flags
        // 0 makes linkat link a symlink rather than what it points to.
        cvt(unsafe { libc::linkat(from.fd(), f.as_ptr(), self.fd(), c.as_ptr(), 0) }).map(drop)
    }

    fn mknod(&self, name: &OsStr, mode: u32, dev: libc::dev_t) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: c is NUL-terminated and outlives the call.
        cvt(unsafe { libc::mknodat(self.fd(), c.as_ptr(), mode, dev) }).map(drop)
    }

    fn unlink(&self, name: &OsStr, dir: bool) -> io::Result<()> {
        let c = c_name(name)?;
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: c is NUL-terminated and outlives the call.
        cvt(unsafe { libc::unlinkat(self.fd(), c.as_ptr(), flags) }).map(drop)
    }

    fn read_link(&self, name: &OsStr) -> io::Result<PathBuf> {
        let c = c_name(name)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: c is NUL-terminated; buf is writable for its whole length.
        let n =
            unsafe { libc::readlinkat(self.fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }

    /// Owner of the entry `name` itself, a symlink included.
    fn chown_child(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: c is NUL-terminated and outlives the call.
        cvt(unsafe { libc::fchownat(self.fd(), c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
            .map(drop)
    }

    /// Mode of the entry `name`, which must not be a symlink (`EOPNOTSUPP` then).
    fn chmod_child(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: c is NUL-terminated and outlives the call.
        cvt(unsafe { libc::fchmodat(self.fd(), c.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) })
            .map(drop)
    }

    /// Access and modification times of the entry `name` itself.
    fn set_times_child(&self, name: &OsStr, mtime: i64) -> io::Result<()> {
        let c = c_name(name)?;
        let times = timespecs(mtime);
        // SAFETY: c is NUL-terminated and times holds two timespecs; both outlive the call.
        cvt(unsafe {
            libc::utimensat(
                self.fd(),
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(drop)
    }
}

fn timespecs(mtime: i64) -> [libc::timespec; 2] {
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [t, t]
}

/// Sets owner, mode and times of an open file or directory.
pub(crate) fn set_meta(
    fd: RawFd,
    owner: Option<(u32, u32)>,
    mode: u32,
    mtime: i64,
) -> io::Result<()> {
    // chown clears set-id bits: the mode comes after it.
    if let Some((uid, gid)) = owner {
        // SAFETY: fchown only reads its integer arguments.
        cvt(unsafe { libc::fchown(fd, uid, gid) })?;
    }
    // SAFETY: fchmod only reads its integer arguments.
    cvt(unsafe { libc::fchmod(fd, mode) })?;
    set_times(fd, mtime)
}

pub(crate) fn set_times(fd: RawFd, mtime: i64) -> io::Result<()> {
    let times = timespecs(mtime);
    // SAFETY: times holds two timespecs and outlives the call.
    cvt(unsafe { libc::futimens(fd, times.as_ptr()) }).map(drop)
}

pub(crate) fn set_xattr(fd: RawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: name is NUL-terminated; value's pointer and length describe a
    // live slice; nothing is retained.
    cvt(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// An open directory.
#[derive(Debug)]
pub(crate) struct Dir(OwnedFd);

impl At for Dir {
    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Dir {
    /// Opens the directory `path` itself, which must not be a symlink.
    pub(crate) fn open(path: &Path) -> io::Result<Dir> {
        let c = c_name(path.as_os_str())?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: c is NUL-terminated and outlives the call.
        let fd = cvt(unsafe { libc::open(c.as_ptr(), flags) })?;
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir(self.0.try_clone()?))
    }

    pub(crate) fn stat(&self) -> io::Result<Stat> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: st points to writable memory of the right size.
        cvt(unsafe { libc::fstat(self.fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstat returned 0, so it filled st.
        Ok(Stat::of(unsafe { &st.assume_init() }))
    }

    /// Free bytes an unprivileged user may still write to this directory's filesystem.
    pub(crate) fn available_bytes(&self) -> io::Result<u64> {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: st points to writable memory of the right size.
        cvt(unsafe { libc::fstatvfs(self.fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstatvfs returned 0, so it filled st.
        let st = unsafe { st.assume_init() };
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// Streams the directory's entry names; the stream owns the descriptor.
    pub(crate) fn entries(self) -> io::Result<Entries> {
        let fd = self.0.as_raw_fd();
        // SAFETY: fd is open; on success the DIR takes it over, so it is no
        // longer closed by the OwnedFd.
        let dir = unsafe { libc::fdopendir(fd) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(self.0);
        Ok(Entries { dir })
    }
}

/// A directory being read, which is also a directory to operate in.
pub(crate) struct Entries {
    dir: *mut libc::DIR,
}

impl At for Entries {
    fn fd(&self) -> RawFd {
        // SAFETY: dir is a valid DIR until drop.
        unsafe { libc::dirfd(self.dir) }
    }
}

impl Entries {
    /// The next name other than `.` and `..`, with whether readdir says it is a directory
    /// (`None`: it does not say).
    pub(crate) fn next_name(&mut self) -> io::Result<Option<(OsString, Option<bool>)>> {
        loop {
            // readdir reports errors through errno only.
            // SAFETY: __errno_location returns this thread's errno.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: dir is a valid DIR until drop.
            let entry = unsafe { libc::readdir64(self.dir) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => Ok(None),
                    Some(_) => Err(err),
                };
            }
            // SAFETY: readdir returned a valid entry, alive until the next call.
            let (name, kind) = unsafe {
                let e = &*entry;
                (
                    CStr::from_ptr(e.d_name.as_ptr()).to_bytes().to_vec(),
                    e.d_type,
                )
            };
            if name == b"." || name == b".." {
                continue;
            }
            let is_dir = match kind {
                libc::DT_UNKNOWN => None,
                libc::DT_DIR => Some(true),
                _ => Some(false),
            };
            return Ok(Some((OsString::from_vec(name), is_dir)));
        }
    }

    /// Starts reading from the first entry again.
    pub(crate) fn rewind(&mut self) {
        // SAFETY: dir is a valid DIR until drop.
        unsafe { libc::rewinddir(self.dir) }
    }
}

impl Drop for Entries {
    fn drop(&mut self) {
        // SAFETY: dir is valid and closed only here.
        unsafe { libc::closedir(self.dir) };
    }
}

/// Removes the entry `name` of `parent`, a directory with all it holds;
/// `forget` sees each directory removed. Nothing is followed: a symlink is
/// removed, never what it points to.
pub(crate) fn remove_all(
    parent: &dyn At,
    name: &OsStr,
    forget: &mut dyn FnMut(Stat),
) -> io::Result<()> {
    let Some(stat) = parent.stat_child(name)? else {
        return Ok(());
    };
    if stat.kind != Kind::Dir {
        return parent.unlink(name, false);
    }
    let mut entries = parent.open_dir(name)?.entries()?;
    // Removing while reading may skip entries on some filesystems: read again until empty.
    loop {
        let mut removed = false;
        while let Some((child, _)) = entries.next_name()? {
            remove_all(&entries, &child, forget)?;
            removed = true;
        }
        if !removed {
            break;
        }
        entries.rewind();
    }
    drop(entries);
    forget(stat);
    match parent.unlink(name, true) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
