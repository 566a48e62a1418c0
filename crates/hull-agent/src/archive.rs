//! `docker cp` out of a container: what a path is, and a tar of it.
//!
//! The path is resolved inside the container's rootfs (see `fsat`), and the
//! tree under it is walked by descriptors, one name at a time and without
//! following symlinks, so a process in the container that swaps a directory
//! for a symlink meanwhile cannot make the agent read outside it.

use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use hull_proto::{path_mode, PathStat};

use crate::fsat;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot find {path}")]
    Resolve {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot archive {}", .path.display())]
    Pack {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    /// The path does not exist (or a component of it is not a directory).
    pub fn is_not_found(&self) -> bool {
        match self {
            Self::Resolve { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENOTDIR)
            }
            Self::Pack { .. } => false,
        }
    }
}

/// A resolved path of a container: an `O_PATH` descriptor, and the name its
/// archive entries start with.
#[derive(Debug)]
pub struct Target {
    pub fd: File,
    pub name: PathBuf,
}

/// Resolves `path` in the container whose rootfs `root` is open. As docker
/// does, a final symlink is the link itself unless the path ends in `/` or
/// `/.`, and `/.` names a directory's contents rather than the directory.
pub fn resolve(root: &File, path: &str) -> Result<Target, ArchiveError> {
    let follow = path.ends_with('/') || path.ends_with("/.");
    let mut flags = libc::O_PATH;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    let fd = fsat::open_in_root(root, Path::new(path), flags).map_err(|source| {
        ArchiveError::Resolve {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(Target {
        fd,
        name: base_name(path),
    })
}

/// The first name of `path`'s archive entries: its last component, `.` for
/// the root or a path ending in `/.`.
pub fn base_name(path: &str) -> PathBuf {
    if path.ends_with("/.") || path == "." {
        return PathBuf::from(".");
    }
    match Path::new(path).components().next_back() {
        Some(Component::Normal(name)) => PathBuf::from(name),
        _ => PathBuf::from("."),
    }
}

/// Go's `os.FileMode` for `meta`, as docker reports it.
pub fn go_file_mode(meta: &Metadata) -> u32 {
    let kind = meta.file_type();
    let mut mode = meta.mode() & path_mode::PERMISSIONS;
    let type_bits = if kind.is_dir() {
        path_mode::DIR
    } else if kind.is_symlink() {
        path_mode::SYMLINK
    } else if kind.is_char_device() {
        path_mode::DEVICE | path_mode::CHAR_DEVICE
    } else if kind.is_block_device() {
        path_mode::DEVICE
    } else if kind.is_fifo() {
        path_mode::NAMED_PIPE
    } else if kind.is_socket() {
        path_mode::SOCKET
    } else {
        0
    };
    mode |= type_bits;
    for (bit, go_bit) in [
        (libc::S_ISUID, path_mode::SETUID),
        (libc::S_ISGID, path_mode::SETGID),
        (libc::S_ISVTX, path_mode::STICKY),
    ] {
        if meta.mode() & bit != 0 {
            mode |= go_bit;
        }
    }
    mode
}

/// What `path` is, for docker's path-stat header. `rootfs` is where the
/// container's root is in the agent's view, to name a symlink's target as
/// the container sees it.
pub fn stat(root: &File, rootfs: &Path, path: &str) -> Result<PathStat, ArchiveError> {
    let target = resolve(root, path)?;
    let meta = target
        .fd
        .metadata()
        .map_err(|source| ArchiveError::Resolve {
            path: path.to_owned(),
            source,
        })?;
    let link_target = if meta.file_type().is_symlink() {
        link_target(root, rootfs, path, &target.fd)
    } else {
        String::new()
    };
    let name = match target.name.as_os_str().to_str() {
        Some(".") if path.trim_end_matches('/').is_empty() => "/".to_owned(),
        _ => target.name.to_string_lossy().into_owned(),
    };
    Ok(PathStat {
        name,
        size: meta.size() as i64,
        mode: go_file_mode(&meta),
        mtime_unix_nanos: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        link_target,
    })
}

/// Where the symlink at `path` leads, as an absolute path in the container;
/// its raw target when that does not exist.
fn link_target(root: &File, rootfs: &Path, path: &str, link: &File) -> String {
    let resolved = fsat::open_in_root(root, Path::new(path), libc::O_PATH)
        .and_then(|fd| fs::read_link(fsat::fd_path(&fd)));
    if let Ok(resolved) = resolved {
        if let Ok(inside) = resolved.strip_prefix(rootfs) {
            return Path::new("/").join(inside).to_string_lossy().into_owned();
        }
    }
    fsat::read_link(link)
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes a tar of `target` to `out` and finishes it.
pub fn pack(target: &Target, out: impl Write) -> Result<(), ArchiveError> {
    let mut builder = tar::Builder::new(out);
    append(&mut builder, &target.fd, &target.name)?;
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|source| ArchiveError::Pack {
            path: target.name.clone(),
            source,
        })?;
    Ok(())
}

/// Appends what `fd` (`O_PATH`, not following a symlink) holds as `name`,
/// a directory with everything under it. Sockets are left out, as docker
/// leaves them; hard links are archived as separate files.
fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    fd: &File,
    name: &Path,
) -> Result<(), ArchiveError> {
    let failed = |source| ArchiveError::Pack {
        path: name.to_owned(),
        source,
    };
    let meta = fd.metadata().map_err(failed)?;
    let mut header = tar::Header::new_gnu();
    header.set_metadata(&meta);
    // Only permission and set-id bits, as Go's tar (and so docker) writes.
    header.set_mode(meta.mode() & 0o7777);
    let kind = meta.file_type();
    if kind.is_dir() {
        put(builder, &mut header, name, None, io::empty()).map_err(failed)?;
        for child in children(fd).map_err(failed)? {
            let flags = libc::O_PATH | libc::O_NOFOLLOW;
            match fsat::open_at(fd, Path::new(&child), flags, 0) {
                Ok(child_fd) => append(builder, &child_fd, &name.join(&child))?,
                // Removed since the directory was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(e)),
            }
        }
        return Ok(());
    }
    let appended = if kind.is_file() {
        File::open(fsat::fd_path(fd)).and_then(|file| {
            put(
                builder,
                &mut header,
                name,
                None,
                Exactly::new(file, meta.len()),
            )
        })
    } else if kind.is_symlink() {
        fsat::read_link(fd)
            .and_then(|target| put(builder, &mut header, name, Some(&target), io::empty()))
    } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
        let rdev = meta.rdev();
        header
            .set_device_major(libc::major(rdev))
            .and_then(|()| header.set_device_minor(libc::minor(rdev)))
            .and_then(|()| put(builder, &mut header, name, None, io::empty()))
    } else {
        Ok(())
    };
    appended.map_err(failed)
}

/// Appends an entry named `name` byte for byte. The tar crate would drop
/// its `.` components, but docker names the contents of `dir/.` `./…`, and
/// its CLI renames them by replacing that first `.` (`docker cp c:/dir/.
/// new` makes `new/…`): without it, they would land beside `new`.
pub(crate) fn put<W: Write>(
    builder: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &Path,
    link: Option<&Path>,
    data: impl Read,
) -> io::Result<()> {
    if let Some(target) = link {
        let field = &mut header.as_old_mut().linkname;
        set_field(builder, field, target, tar::EntryType::GNULongLink)?;
    }
    let field = &mut header.as_old_mut().name;
    set_field(builder, field, name, tar::EntryType::GNULongName)?;
    header.set_cksum();
    builder.append(header, data)
}

/// Puts `value` in a header's name or link field; a value too long for it
/// goes before, in an entry of its own (GNU's long names, which Go's tar
/// and so docker read), and the field keeps its start.
fn set_field<W: Write>(
    builder: &mut tar::Builder<W>,
    field: &mut [u8; 100],
    value: &Path,
    long: tar::EntryType,
) -> io::Result<()> {
    let value = value.as_os_str().as_bytes();
    if value.len() > field.len() {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        // With its terminating NUL, as GNU tar writes it.
        header.set_size(value.len() as u64 + 1);
        header.set_entry_type(long);
        header.set_cksum();
        builder.append(&header, value.chain(&[0u8][..]))?;
    }
    let kept = &value[..value.len().min(field.len())];
    field.fill(0);
    field[..kept.len()].copy_from_slice(kept);
    Ok(())
}

/// The names in the directory `fd`, sorted so archives are reproducible.
pub(crate) fn children(fd: &File) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(fsat::fd_path(fd))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// Exactly `len` bytes of a file whose size was put in a tar header: cut
/// if it grew since, padded with zeros if it shrank, so the archive stays
/// well-formed.
pub(crate) struct Exactly<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Exactly<R> {
    pub(crate) fn new(inner: R, len: u64) -> Self {
        Self {
            inner,
            remaining: len,
        }
    }
}

impl<R: Read> Read for Exactly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            buf[..want].fill(0);
            n = want;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A container root with /etc/hostname, /etc/sub/deep, /etc/link -> hostname,
    /// and /abs -> /etc.
    fn rootfs() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        fs::create_dir_all(etc.join("sub")).unwrap();
        fs::write(etc.join("hostname"), "box\n").unwrap();
        fs::write(etc.join("sub/deep"), "deep").unwrap();
        fs::set_permissions(etc.join("sub/deep"), fs::Permissions::from_mode(0o4755)).unwrap();
        symlink("hostname", etc.join("link")).unwrap();
        symlink("/etc", dir.path().join("abs")).unwrap();
        let root = File::open(dir.path()).unwrap();
        (dir, root)
    }

    /// (name, type, contents or link target) of every entry.
    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let kind = entry.header().entry_type();
                let mut body = String::new();
                if let Some(link) = entry.link_name().unwrap() {
                    body = link.to_string_lossy().into_owned();
                } else {
                    entry.read_to_string(&mut body).unwrap();
                }
                (name, kind, body)
            })
            .collect()
    }

    fn pack_path(root: &File, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        pack(&resolve(root, path).unwrap(), &mut out).unwrap();
        out
    }

    #[test]
    fn entries_are_named_from_the_base_name_as_docker_names_them() {
        assert_eq!(base_name("/etc/hostname"), Path::new("hostname"));
        assert_eq!(base_name("/etc/"), Path::new("etc"));
        assert_eq!(base_name("/etc/."), Path::new("."));
        assert_eq!(base_name("/"), Path::new("."));
    }

    #[test]
    fn a_file_is_archived_under_its_own_name() {
        let (_dir, root) = rootfs();
        let tar = pack_path(&root, "/etc/hostname");
        let expected = (
            "hostname".to_owned(),
            tar::EntryType::Regular,
            "box\n".to_owned(),
        );
        assert_eq!(entries(&tar), [expected]);
    }

    #[test]
    fn a_directory_is_archived_with_everything_under_it_and_symlinks_kept() {
        let (_dir, root) = rootfs();
        let names: Vec<(String, tar::EntryType, String)> = entries(&pack_path(&root, "/etc"));
        let summary: Vec<(&str, &str)> = names
            .iter()
            .map(|(name, _, body)| (name.as_str(), body.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("etc", ""),
                ("etc/hostname", "box\n"),
                ("etc/link", "hostname"),
                ("etc/sub", ""),
                ("etc/sub/deep", "deep"),
            ]
        );
        assert_eq!(names[2].1, tar::EntryType::Symlink);
        let tar = pack_path(&root, "/etc/sub");
        let mut archive = tar::Archive::new(tar.as_slice());
        let deep = archive.entries().unwrap().nth(1).unwrap().unwrap();
        assert_eq!(deep.header().mode().unwrap(), 0o4755);
    }

    #[test]
    fn a_trailing_dot_archives_a_directorys_contents() {
        let (_dir, root) = rootfs();
        let names: Vec<String> = entries(&pack_path(&root, "/etc/sub/."))
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(names, [".", "./deep"]);
    }

    #[test]
    fn long_names_and_link_targets_survive() {
        let (dir, root) = rootfs();
        let long = "n".repeat(150);
        let deep = dir.path().join("etc/sub").join(&long);
        fs::write(&deep, "far").unwrap();
        symlink(&deep, dir.path().join("etc/sub/far")).unwrap();
        let entries = entries(&pack_path(&root, "/etc/sub"));
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["sub", "sub/deep", "sub/far", &format!("sub/{long}")]
        );
        assert_eq!(entries[2].2, deep.to_string_lossy());
        assert_eq!(entries[3].2, "far");
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_container() {
        let (_dir, root) = rootfs();
        let tar = pack_path(&root, "/abs/hostname");
        assert_eq!(entries(&tar)[0].2, "box\n");
        let link = pack_path(&root, "/abs");
        assert_eq!(entries(&link)[0].2, "/etc");
        assert_eq!(entries(&pack_path(&root, "/abs/")).len(), 5);
    }

    #[test]
    fn stat_describes_files_directories_and_symlinks_in_go_terms() {
        let (dir, root) = rootfs();
        let file = stat(&root, dir.path(), "/etc/hostname").unwrap();
        assert_eq!((file.name.as_str(), file.size), ("hostname", 4));
        assert_eq!(file.mode & !path_mode::PERMISSIONS, 0);
        assert!(file.mtime_unix_nanos > 1_500_000_000_000_000_000);
        let etc = stat(&root, dir.path(), "/etc").unwrap();
        assert_eq!(etc.mode & path_mode::DIR, path_mode::DIR);
        let deep = stat(&root, dir.path(), "/etc/sub/deep").unwrap();
        assert_eq!(deep.mode, path_mode::SETUID | 0o755);
        let link = stat(&root, dir.path(), "/abs").unwrap();
        assert_eq!(link.mode & path_mode::SYMLINK, path_mode::SYMLINK);
        assert_eq!(link.link_target, "/etc");
        let relative = stat(&root, dir.path(), "/etc/link").unwrap();
        assert_eq!(relative.link_target, "/etc/hostname");
        assert_eq!(stat(&root, dir.path(), "/").unwrap().name, "/");
    }

    #[test]
    fn missing_paths_are_not_found() {
        let (dir, root) = rootfs();
        for path in ["/nope", "/etc/hostname/x", "/abs/nope"] {
            let err = stat(&root, dir.path(), path).unwrap_err();
            assert!(err.is_not_found(), "{path}: {err}");
        }
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_padded_to_its_header_size() {
        let mut padded = Vec::new();
        Exactly::new(&b"ab"[..], 4)
            .read_to_end(&mut padded)
            .unwrap();
        assert_eq!(padded, b"ab\0\0");
        let mut cut = Vec::new();
        Exactly::new(&b"abcdef"[..], 3)
            .read_to_end(&mut cut)
            .unwrap();
        assert_eq!(cut, b"abc");
    }
}
