//! `docker cp` into a container: a tar unpacked into one of its directories.
//!
//! Every entry is placed relative to the destination as if it were `/`
//! (`fsat::open_in_root`): an entry named with `..` is refused, and a symlink
//! met on the way, from the container or from an earlier entry, resolves
//! inside the destination. The entry's own name is then created or replaced
//! with calls that never follow it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::fsat;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the archive")]
    Read(#[source] io::Error),
    #[error("entry {0:?} escapes the destination directory")]
    Escapes(String),
    #[error("entry {entry:?} is a {kind:?}, which cannot be unpacked")]
    Unsupported { entry: String, kind: EntryType },
    #[error("cannot unpack entry {entry:?}")]
    Entry {
        entry: String,
        #[source]
        source: io::Error,
    },
}

/// An entry name made relative and free of `.`; `None` if a `..` in it
/// would climb above the destination, as docker refuses those.
pub fn clean(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Unpacks the tar `archive` into the directory `dest` (any descriptor of
/// it, `O_PATH` will do). Directory times are set last: the entries written
/// into a directory change its modification time.
pub fn unpack(dest: &File, archive: impl Read) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(archive);
    let mut dir_times = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let Some(rel) = clean(&raw) else {
            return Err(UnpackError::Escapes(shown));
        };
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() || kind == EntryType::XGlobalHeader {
            // The destination itself (`.`) keeps its own metadata.
            continue;
        }
        let failed = |source| UnpackError::Entry {
            entry: shown.clone(),
            source,
        };
        let link = match kind {
            EntryType::Symlink | EntryType::Link => {
                let link = entry.link_name().map_err(UnpackError::Read)?;
                Some(
                    link.ok_or_else(|| failed(invalid("a link without a target")))?
                        .into_owned(),
                )
            }
            _ => None,
        };
        if let Some(target) = &link {
            if escapes(&rel, target, kind) {
                let message = format!("its link to {} leads out of it", target.display());
                return Err(failed(invalid(&message)));
            }
        }
        let (parent, name) = parent_and_name(dest, &rel).map_err(failed)?;
        let header = entry.header().clone();
        match kind {
            EntryType::Directory => {
                make_dir(&parent, &name).map_err(failed)?;
                dir_times.push((rel.clone(), header.mtime().unwrap_or(0)));
            }
            EntryType::Regular | EntryType::Continuous => {
                write_file(&parent, &name, &mut entry).map_err(failed)?;
            }
            EntryType::Symlink => {
                let target = link.as_deref().expect("a symlink has a target");
                replace(&parent, &name)
                    .and_then(|()| fsat::symlink_at(target, &parent, &name))
                    .map_err(failed)?;
            }
            EntryType::Link => {
                let target = clean(link.as_deref().expect("a link has a target"))
                    .ok_or_else(|| failed(invalid("its target escapes")))?;
                let flags = libc::O_PATH | libc::O_NOFOLLOW;
                fsat::open_in_root(dest, &target, flags)
                    .and_then(|existing| {
                        replace(&parent, &name)?;
                        fsat::link_at(&existing, &parent, &name)
                    })
                    .map_err(failed)?;
                // A hard link shares its target's metadata, set already.
                continue;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                make_node(&parent, &name, &header).map_err(failed)?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    entry: shown,
                    kind: other,
                })
            }
        }
        set_owner_and_mode(&parent, &name, &header, kind).map_err(failed)?;
        if kind != EntryType::Directory {
            let mtime = header.mtime().unwrap_or(0);
            fsat::set_mtime_at(&parent, &name, mtime as i64).map_err(failed)?;
        }
    }
    for (rel, mtime) in dir_times.iter().rev() {
        let shown = rel.to_string_lossy().into_owned();
        let failed = |source| UnpackError::Entry {
            entry: shown.clone(),
            source,
        };
        let (parent, name) = parent_and_name(dest, rel).map_err(failed)?;
        fsat::set_mtime_at(&parent, &name, *mtime as i64).map_err(failed)?;
    }
    Ok(())
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Whether a link entry at `rel` leads out of the destination, by docker's
/// rule: a symlink's target taken relative to its directory (an absolute
/// one then stays inside), a hard link's relative to the destination.
fn escapes(rel: &Path, target: &Path, kind: EntryType) -> bool {
    let joined = match kind {
        EntryType::Symlink => rel
            .parent()
            .unwrap_or(Path::new(""))
            .join(target.strip_prefix("/").unwrap_or(target)),
        _ => target.to_owned(),
    };
    clean(&joined).is_none()
}

/// The directory that will hold `rel` (created as needed, resolved inside
/// `dest`) and the last name of `rel`.
fn parent_and_name(dest: &File, rel: &Path) -> io::Result<(File, PathBuf)> {
    let name = rel
        .file_name()
        .map(PathBuf::from)
        .ok_or_else(|| invalid("an entry without a name"))?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    Ok((make_dirs(dest, parent)?, name))
}

/// Opens the directory `rel` below `dest`, creating what is missing of it.
fn make_dirs(dest: &File, rel: &Path) -> io::Result<File> {
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    match fsat::open_in_root(dest, rel, flags) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        opened => return opened,
    }
    let mut dir = dest.try_clone()?;
    let mut sofar = PathBuf::new();
    for component in rel.components() {
        sofar.push(component);
        dir = match fsat::open_in_root(dest, &sofar, flags) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match fsat::mkdir_at(&dir, Path::new(&component), 0o755) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => fsat::open_in_root(dest, &sofar, flags)?,
                }
            }
            opened => opened?,
        };
    }
    Ok(dir)
}

/// What is at `name` in `dir` now, without following a symlink.
fn existing(dir: &File, name: &Path) -> io::Result<Option<std::fs::Metadata>> {
    match fsat::open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
        Ok(fd) => fd.metadata().map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Clears `name` for a new entry: a file or symlink is removed, and so is
/// an empty directory; a directory with contents is an error.
fn replace(dir: &File, name: &Path) -> io::Result<()> {
    match existing(dir, name)? {
        Some(meta) => fsat::remove_at(dir, name, meta.is_dir()),
        None => Ok(()),
    }
}

fn make_dir(dir: &File, name: &Path) -> io::Result<()> {
    match existing(dir, name)? {
        Some(meta) if meta.is_dir() => Ok(()),
        Some(_) => {
            fsat::remove_at(dir, name, false)?;
            fsat::mkdir_at(dir, name, 0o700)
        }
        None => fsat::mkdir_at(dir, name, 0o700),
    }
}

fn write_file(dir: &File, name: &Path, data: &mut impl Read) -> io::Result<()> {
    replace(dir, name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let mut file = fsat::open_at(dir, name, flags, 0o600)?;
    io::copy(data, &mut file)?;
    Ok(())
}

fn make_node(dir: &File, name: &Path, header: &tar::Header) -> io::Result<()> {
    let kind = match header.entry_type() {
        EntryType::Char => libc::S_IFCHR,
        EntryType::Block => libc::S_IFBLK,
        _ => libc::S_IFIFO,
    };
    // Some writers leave the fields blank where they mean nothing (FIFOs).
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    replace(dir, name)?;
    fsat::mknod_at(dir, name, kind | 0o600, libc::makedev(major, minor))
}

/// Owner first: changing it clears the set-id bits the mode may carry.
fn set_owner_and_mode(
    dir: &File,
    name: &Path,
    header: &tar::Header,
    kind: EntryType,
) -> io::Result<()> {
    // Some writers leave fields blank; tar reads a blank owner as root.
    let uid =
        u32::try_from(header.uid().unwrap_or(0)).map_err(|_| invalid("a uid out of range"))?;
    let gid =
        u32::try_from(header.gid().unwrap_or(0)).map_err(|_| invalid("a gid out of range"))?;
    fsat::chown_at(dir, name, uid, gid)?;
    if kind == EntryType::Symlink {
        return Ok(());
    }
    let fd = fsat::open_at(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
    // The name may have been swapped for a symlink meanwhile: the inode
    // behind the descriptor is what counts, and its type never changes.
    if fd.metadata()?.file_type().is_symlink() {
        return Err(invalid("it was replaced by a symlink while unpacking"));
    }
    let default = if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    };
    fsat::chmod_fd(&fd, header.mode().unwrap_or(default) & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};

    /// One raw entry; the name is written as is, so `..` gets through.
    fn entry(name: &str, kind: EntryType, body: &[u8], link: &str) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(body.len() as u64);
        header.set_mode(if kind == EntryType::Directory {
            0o750
        } else {
            0o640
        });
        header.set_uid(1234);
        header.set_gid(5678);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(body);
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    fn tar(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = entries.concat();
        out.extend_from_slice(&[0; 1024]);
        out
    }

    fn dest() -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let fd = File::open(dir.path()).unwrap();
        (dir, fd)
    }

    #[test]
    fn entries_keep_their_contents_modes_owners_and_times() {
        let (dir, fd) = dest();
        let archive = tar(&[
            entry("d/", EntryType::Directory, b"", ""),
            entry("d/f", EntryType::Regular, b"hello", ""),
            entry("d/l", EntryType::Symlink, b"", "f"),
            entry("d/h", EntryType::Link, b"", "d/f"),
            entry("d/p", EntryType::Fifo, b"", ""),
            entry("new/deep/file", EntryType::Regular, b"x", ""),
        ]);
        unpack(&fd, archive.as_slice()).unwrap();
        let d = dir.path().join("d");
        assert_eq!(fs::read_to_string(d.join("f")).unwrap(), "hello");
        let f = fs::metadata(d.join("f")).unwrap();
        assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o640, 1234, 5678));
        assert_eq!(f.mtime(), 1_600_000_000);
        let dir_meta = fs::metadata(&d).unwrap();
        assert_eq!(
            (dir_meta.mode() & 0o7777, dir_meta.mtime()),
            (0o750, 1_600_000_000)
        );
        assert_eq!(fs::read_link(d.join("l")).unwrap(), Path::new("f"));
        assert_eq!(fs::symlink_metadata(d.join("l")).unwrap().uid(), 1234);
        assert_eq!(fs::metadata(d.join("h")).unwrap().ino(), f.ino());
        assert!(fs::symlink_metadata(d.join("p"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            fs::read_to_string(dir.path().join("new/deep/file")).unwrap(),
            "x"
        );
    }

    #[test]
    fn entries_climbing_out_with_dotdot_are_refused() {
        let (_dir, fd) = dest();
        for name in ["../evil", "a/../../evil"] {
            let archive = tar(&[entry(name, EntryType::Regular, b"x", "")]);
            let err = unpack(&fd, archive.as_slice()).unwrap_err();
            assert!(matches!(err, UnpackError::Escapes(_)), "{name}: {err}");
        }
        let archive = tar(&[entry("a/./b/../c", EntryType::Regular, b"x", "")]);
        unpack(&fd, archive.as_slice()).unwrap();
    }

    #[test]
    fn links_leading_out_of_the_destination_are_refused() {
        let (_dir, fd) = dest();
        for (kind, target) in [(EntryType::Symlink, "../../etc"), (EntryType::Link, "../x")] {
            let archive = tar(&[entry("l", kind, b"", target)]);
            let err = unpack(&fd, archive.as_slice()).unwrap_err();
            assert!(err.to_string().contains("\"l\""), "{err}");
        }
        // Absolute targets are read inside the container, as docker allows.
        let archive = tar(&[entry("l", EntryType::Symlink, b"", "/etc/passwd")]);
        unpack(&fd, archive.as_slice()).unwrap();
    }

    #[test]
    fn a_symlink_on_the_way_resolves_inside_the_destination() {
        let (dir, fd) = dest();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let archive = tar(&[
            entry("abs", EntryType::Symlink, b"", "/sub"),
            entry("abs/f", EntryType::Regular, b"in", ""),
        ]);
        unpack(&fd, archive.as_slice()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("sub/f")).unwrap(), "in");
        symlink(outside.path(), dir.path().join("out")).unwrap();
        let archive = tar(&[entry("out/f", EntryType::Regular, b"x", "")]);
        assert!(unpack(&fd, archive.as_slice()).is_err());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_existing_symlink_is_replaced_not_followed() {
        let (dir, fd) = dest();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        symlink(&victim, dir.path().join("f")).unwrap();
        let archive = tar(&[entry("f", EntryType::Regular, b"new", "")]);
        unpack(&fd, archive.as_slice()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read_to_string(dir.path().join("f")).unwrap(), "new");
        assert!(!fs::symlink_metadata(dir.path().join("f"))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn files_and_empty_directories_replace_each_other() {
        let (dir, fd) = dest();
        fs::create_dir(dir.path().join("was_dir")).unwrap();
        fs::write(dir.path().join("was_file"), "x").unwrap();
        let archive = tar(&[
            entry("was_dir", EntryType::Regular, b"now a file", ""),
            entry("was_file", EntryType::Directory, b"", ""),
        ]);
        unpack(&fd, archive.as_slice()).unwrap();
        assert!(dir.path().join("was_dir").is_file());
        assert!(dir.path().join("was_file").is_dir());
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let (_dir, fd) = dest();
        let mut archive = entry("f", EntryType::Regular, &[7; 600], "");
        archive.truncate(700);
        assert!(unpack(&fd, archive.as_slice()).is_err());
    }

    #[test]
    fn an_archive_packed_by_the_agent_unpacks_to_the_same_tree() {
        let (src, src_fd) = dest();
        fs::create_dir(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/a"), "a").unwrap();
        symlink("a", src.path().join("etc/b")).unwrap();
        let mut packed = Vec::new();
        let target = crate::archive::resolve(&src_fd, "/etc").unwrap();
        crate::archive::pack(&target, &mut packed).unwrap();
        let (dir, fd) = dest();
        unpack(&fd, packed.as_slice()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("etc/b")).unwrap(), "a");
    }
}
