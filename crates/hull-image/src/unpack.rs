//! Flattening layers into one directory: tar entries applied in order, OCI
//! whiteouts honoured, and nothing ever written outside the directory.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::hash::RandomState;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::{Entry, EntryType, Header};

use crate::at::{self, At, Dir, Entries, Kind};
use crate::fsutil::{copy, CopyError};
use crate::limits::{Guard, Guarded, GuardedEntries, LimitError, Limits, MAX_DEPTH, MAX_NAME};
use crate::rootpath;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const CAPABILITY_XATTR: &str = "SCHILY.xattr.security.capability";

/// Errors of layer unpacking.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot read the layer's tar stream")]
    Read(#[source] io::Error),
    #[error("the layer is refused")]
    Limit(#[from] LimitError),
    #[error("cannot open the rootfs directory {}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("entry '{entry}' escapes the rootfs")]
    Escape { entry: String },
    #[error("hardlink '{entry}' points to '{target}', outside the rootfs")]
    LinkEscape { entry: String, target: String },
    #[error("hardlink '{entry}' points to '{target}', which does not exist")]
    LinkTarget { entry: String, target: String },
    #[error("whiteout '{entry}' names no valid file")]
    Whiteout { entry: String },
    #[error("cannot create '{}' for entry '{entry}'", .path.display())]
    Write {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the metadata of directory '{}'", .path.display())]
    DirMetadata {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Ownership, mode and mtime of an unpacked file.
#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta {
    fn of(header: &Header) -> Meta {
        Meta {
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mtime: header.mtime().unwrap_or(0) as i64,
        }
    }
}

/// Applies layers, in order, onto a root directory. Every change goes through
/// descriptors opened inside the root without following symlinks (see
/// [`crate::at`]), so no layer reaches a file outside it, whatever it plants.
pub struct Unpacker {
    root: Dir,
    root_path: PathBuf,
    /// Metadata of the directories layers made, by device and inode, applied
    /// once all layers are in so that later writes into them neither fail on
    /// read-only modes nor bump their mtimes. Only directories that exist are
    /// here: a removed one leaves, so a reused inode never inherits it.
    dirs: HashMap<(u64, u64), Meta>,
    /// Whether ownership and device nodes can be set; without privilege they are skipped.
    privileged: bool,
    limits: Limits,
    /// Bytes of files written so far, all layers together.
    written: u64,
    /// The most they may be: the limit, or the free space when that is less.
    budget: u64,
    available: u64,
    hasher: RandomState,
}

impl Unpacker {
    /// An unpacker writing into `root`, an existing empty directory.
    pub fn new(root: &Path, limits: Limits) -> Result<Unpacker, UnpackError> {
        let root_err = |source| UnpackError::Root {
            path: root.to_owned(),
            source,
        };
        let dir = Dir::open(root).map_err(root_err)?;
        let available = dir.available_bytes().map_err(root_err)?;
        let root_id = dir.stat().map_err(root_err)?.id;
        let mut dirs = HashMap::new();
        let root_meta = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        dirs.insert(root_id, root_meta);
        Ok(Unpacker {
            root: dir,
            root_path: root.to_owned(),
            dirs,
            // SAFETY: geteuid has no preconditions and cannot fail.
            privileged: unsafe { libc::geteuid() } == 0,
            budget: limits.max_unpacked_bytes.min(available),
            available,
            limits,
            written: 0,
            hasher: RandomState::new(),
        })
    }

    /// Applies one uncompressed layer tar stream.
    pub fn apply_layer(&mut self, layer: impl Read) -> Result<(), UnpackError> {
        let guard = Guard::new(self.limits);
        let read_err = |e| match guard.tripped() {
            Some(limit) => UnpackError::Limit(limit),
            None => UnpackError::Read(e),
        };
        let mut written = Written::default();
        let mut archive = tar::Archive::new(Guarded::new(layer, guard.clone()));
        let entries = archive.entries().map_err(UnpackError::Read)?;
        let mut entries = GuardedEntries::new(entries, guard.clone(), self.limits.max_entries);
        while let Some(mut entry) = entries.next_entry(read_err)? {
            let raw = entry.path_bytes().into_owned();
            check_name(&raw)?;
            let name = String::from_utf8_lossy(&raw).into_owned();
            let rel = rootpath::clean(Path::new(OsStr::from_bytes(&raw))).ok_or_else(|| {
                UnpackError::Escape {
                    entry: name.clone(),
                }
            })?;
            let base = rel.file_name().map(|b| b.to_string_lossy().into_owned());
            match base.as_deref() {
                Some(WHITEOUT_OPAQUE) => self.opaque(&rel, &name, &written)?,
                Some(b) if b.starts_with(WHITEOUT_META_PREFIX) => {
                    tracing::debug!(entry = %name, "skipping aufs metadata entry");
                }
                Some(b) if b.starts_with(WHITEOUT_PREFIX) => self.whiteout(&rel, &name)?,
                _ => {
                    if let Some(path) = self.apply_entry(&mut entry, &rel, &name)? {
                        written.insert(&self.hasher, &path);
                    }
                }
            }
            // What the entry holds beyond what was used is read here, as data.
            io::copy(&mut entry, &mut io::sink()).map_err(read_err)?;
        }
        Ok(())
    }

    /// Sets the recorded directory metadata on the directories there now,
    /// reached from the root without following any symlink.
    pub fn finish(self) -> Result<(), UnpackError> {
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| UnpackError::DirMetadata { path, source }
        };
        let root_id = self.root.stat().map_err(fail(Path::new("")))?.id;
        let root = self.root.try_clone().map_err(fail(Path::new("")))?;
        let entries = root.entries().map_err(fail(Path::new("")))?;
        self.apply_dirs(entries, root_id, &mut PathBuf::new())
    }

    /// Post-order, so that a directory made unreadable by its mode is left only when done.
    fn apply_dirs(
        &self,
        mut entries: Entries,
        id: (u64, u64),
        path: &mut PathBuf,
    ) -> Result<(), UnpackError> {
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| UnpackError::DirMetadata { path, source }
        };
        while let Some((name, is_dir)) = entries.next_name().map_err(fail(path))? {
            let is_dir = match is_dir {
                Some(is_dir) => is_dir,
                None => entries
                    .stat_child(&name)
                    .map_err(fail(path))?
                    .is_some_and(|s| s.kind == Kind::Dir),
            };
            if is_dir {
                path.push(&name);
                let child = entries.open_dir(&name).map_err(fail(path))?;
                let child_id = child.stat().map_err(fail(path))?.id;
                let child = child.entries().map_err(fail(path))?;
                self.apply_dirs(child, child_id, path)?;
                path.pop();
            }
        }
        if let Some(meta) = self.dirs.get(&id) {
            at::set_meta(entries.fd(), self.owner(meta), meta.mode, meta.mtime)
                .map_err(fail(path))?;
        }
        Ok(())
    }

    fn owner(&self, meta: &Meta) -> Option<(u32, u32)> {
        self.privileged.then_some((meta.uid, meta.gid))
    }

    /// Opens the parent of `rel` inside the root (creating missing
    /// directories); returns it, the entry's own name and its path in the root.
    fn place(&self, rel: &Path, entry: &str) -> Result<(Dir, OsString, PathBuf), UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let (dir, path) = rootpath::resolve_dir(&self.root, parent, true)
            .map_err(|e| self.resolve_err(e, entry, rel))?
            .expect("created when missing");
        let base = rel.file_name().unwrap_or_default().to_owned();
        let full = path.join(&base);
        Ok((dir, base, full))
    }

    fn resolve_err(&self, error: io::Error, entry: &str, rel: &Path) -> UnpackError {
        if error.get_ref().is_some_and(|e| e.is::<rootpath::TooDeep>()) {
            return LimitError::Depth {
                entry: entry.to_owned(),
            }
            .into();
        }
        UnpackError::Write {
            entry: entry.to_owned(),
            path: rel.to_owned(),
            source: error,
        }
    }

    /// Applies one entry; returns the path in the root it took, if any.
    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        rel: &Path,
        name: &str,
    ) -> Result<Option<PathBuf>, UnpackError> {
        let kind = entry.header().entry_type();
        let meta = Meta::of(entry.header());
        if rel.as_os_str().is_empty() {
            if kind == EntryType::Directory {
                let id = self.root.stat().map_err(UnpackError::Read)?.id;
                self.dirs.insert(id, meta);
            }
            return Ok(None);
        }
        let (parent, base, target) = self.place(rel, name)?;
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| UnpackError::Write {
                entry: name.to_owned(),
                path,
                source,
            }
        };
        match kind {
            EntryType::Directory => {
                if target.components().count() > MAX_DEPTH {
                    return Err(LimitError::Depth {
                        entry: name.to_owned(),
                    }
                    .into());
                }
                self.make_dir(&parent, &base, meta)
                    .map_err(write_err(&target))?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.reserve(entry.size())?;
                let capability = capability(entry);
                self.write_file(&parent, &base, entry, &meta, capability.as_deref())
                    .map_err(|e| match e {
                        CopyError::Read(e) => UnpackError::Read(e),
                        CopyError::Write(e) => write_err(&target)(e),
                    })?;
            }
            EntryType::Symlink => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                check_name(&link)?;
                self.make_symlink(&parent, &base, Path::new(OsStr::from_bytes(&link)), &meta)
                    .map_err(write_err(&target))?;
            }
            EntryType::Link => self.make_hardlink(entry, &parent, &base, name)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let device = (
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                self.make_node(&parent, &base, kind, device, &meta)
                    .map_err(write_err(&target))?;
            }
            other => {
                tracing::debug!(entry = %name, kind = ?other, "skipping unsupported tar entry");
                return Ok(None);
            }
        }
        Ok(Some(target))
    }

    /// Counts `size` more bytes of files against the budget.
    fn reserve(&mut self, size: u64) -> Result<(), LimitError> {
        let needed = self.written.saturating_add(size);
        if needed > self.budget {
            if self.budget == self.limits.max_unpacked_bytes {
                return Err(LimitError::Unpacked {
                    limit: self.limits.max_unpacked_bytes,
                });
            }
            return Err(LimitError::Disk {
                needed,
                available: self.available,
                path: self.root_path.clone(),
            });
        }
        self.written = needed;
        Ok(())
    }

    /// Removes what `name` is in `parent`, forgetting the directories removed.
    fn remove_existing(&mut self, parent: &dyn At, name: &OsStr) -> io::Result<()> {
        let dirs = &mut self.dirs;
        at::remove_all(parent, name, &mut |stat| {
            dirs.remove(&stat.id);
        })
    }

    fn make_dir(&mut self, parent: &Dir, name: &OsStr, meta: Meta) -> io::Result<()> {
        match parent.stat_child(name)? {
            Some(stat) if stat.kind == Kind::Dir => {}
            Some(_) => {
                parent.unlink(name, false)?;
                parent.mkdir(name, 0o755)?;
            }
            None => parent.mkdir(name, 0o755)?,
        }
        let id = parent.open_dir(name)?.stat()?.id;
        if self.dirs.len() as u64 >= self.limits.max_entries && !self.dirs.contains_key(&id) {
            return Err(io::Error::other(LimitError::Entries {
                limit: self.limits.max_entries,
            }));
        }
        self.dirs.insert(id, meta);
        Ok(())
    }

    fn write_file(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        content: &mut impl Read,
        meta: &Meta,
        capability: Option<&[u8]>,
    ) -> Result<(), CopyError> {
        self.remove_existing(parent, name)
            .map_err(CopyError::Write)?;
        let mut file = parent.create_file(name).map_err(CopyError::Write)?;
        copy(content, &mut file)?;
        let fd = file.as_raw_fd();
        // The times last: a capability is set on the finished file.
        at::set_meta(fd, self.owner(meta), meta.mode, meta.mtime).map_err(CopyError::Write)?;
        if let Some(value) = capability {
            at::set_xattr(fd, c"security.capability", value).map_err(CopyError::Write)?;
        }
        Ok(())
    }

    fn make_symlink(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        target: &Path,
        meta: &Meta,
    ) -> io::Result<()> {
        self.remove_existing(parent, name)?;
        parent.symlink(name, target)?;
        if let Some((uid, gid)) = self.owner(meta) {
            parent.chown_child(name, uid, gid)?;
        }
        parent.set_times_child(name, meta.mtime)
    }

    fn make_hardlink<R: Read>(
        &mut self,
        entry: &Entry<'_, R>,
        parent: &Dir,
        name: &OsStr,
        entry_name: &str,
    ) -> Result<(), UnpackError> {
        let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
        check_name(&raw)?;
        let target_name = String::from_utf8_lossy(&raw).into_owned();
        let escape = || UnpackError::LinkEscape {
            entry: entry_name.to_owned(),
            target: target_name.clone(),
        };
        let missing = || UnpackError::LinkTarget {
            entry: entry_name.to_owned(),
            target: target_name.clone(),
        };
        let rel = rootpath::clean(Path::new(OsStr::from_bytes(&raw))).ok_or_else(escape)?;
        let Some(source_name) = rel.file_name() else {
            return Err(escape());
        };
        // The link's own last component is not followed: linking to a symlink links the symlink.
        let source_parent = rel.parent().unwrap_or(Path::new(""));
        let source_dir = rootpath::resolve_dir(&self.root, source_parent, false)
            .map_err(|e| self.resolve_err(e, entry_name, &rel))?
            .ok_or_else(missing)?
            .0;
        let write_err = |source| UnpackError::Write {
            entry: entry_name.to_owned(),
            path: rel.clone(),
            source,
        };
        let source = source_dir
            .stat_child(source_name)
            .map_err(write_err)?
            .ok_or_else(missing)?;
        let existing = parent.stat_child(name).map_err(write_err)?;
        if existing.is_some_and(|e| e.id == source.id) {
            return Ok(());
        }
        self.remove_existing(parent, name).map_err(write_err)?;
        parent
            .hard_link(name, &source_dir, source_name)
            .map_err(write_err)
    }

    fn make_node(
        &mut self,
        parent: &Dir,
        name: &OsStr,
        kind: EntryType,
        (major, minor): (u32, u32),
        meta: &Meta,
    ) -> io::Result<()> {
        if !self.privileged && kind != EntryType::Fifo {
            tracing::warn!(entry = ?name, "skipping device node: unpacking without root privilege");
            return Ok(());
        }
        self.remove_existing(parent, name)?;
        let file_type = match kind {
            EntryType::Char => libc::S_IFCHR,
            EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        parent.mknod(name, file_type | meta.mode, libc::makedev(major, minor))?;
        if let Some((uid, gid)) = self.owner(meta) {
            parent.chown_child(name, uid, gid)?;
        }
        parent.chmod_child(name, meta.mode)?;
        parent.set_times_child(name, meta.mtime)
    }
}

fn check_name(name: &[u8]) -> Result<(), LimitError> {
    if name.len() > MAX_NAME {
        return Err(LimitError::Name { len: name.len() });
    }
    Ok(())
}

fn capability<R: Read>(entry: &mut Entry<'_, R>) -> Option<Vec<u8>> {
    let extensions = entry.pax_extensions().ok()??;
    extensions
        .filter_map(Result::ok)
        .find(|e| e.key_bytes() == CAPABILITY_XATTR.as_bytes())
        .map(|e| e.value_bytes().to_vec())
}

mod whiteout;

use whiteout::Written;

#[cfg(test)]
#[path = "unpack_hostile_tests.rs"]
pub(crate) mod hostile_tests;
#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
