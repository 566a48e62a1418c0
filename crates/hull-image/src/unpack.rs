//! Flattening layers into one directory: tar entries applied in order, OCI
//! whiteouts honoured, and nothing ever written outside the directory.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use tar::{Entry, EntryType, Header};

use crate::fsutil::{copy, CopyError};
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
    #[error("entry '{entry}' escapes the rootfs")]
    Escape { entry: String },
    #[error("hardlink '{entry}' points to '{target}', outside the rootfs")]
    LinkEscape { entry: String, target: String },
    #[error("hardlink '{entry}' points to '{target}', which does not exist")]
    LinkTarget { entry: String, target: String },
    #[error("whiteout '{entry}' names no valid file")]
    Whiteout { entry: String },
    #[error("cannot create '{path}' for entry '{entry}'")]
    Write {
        entry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the metadata of directory '{path}'")]
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
    uid: u64,
    gid: u64,
    mtime: i64,
}

impl Meta {
    fn of(header: &Header) -> Meta {
        Meta {
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            mtime: header.mtime().unwrap_or(0) as i64,
        }
    }
}

/// Applies layers, in order, onto a root directory.
pub struct Unpacker {
    root: PathBuf,
    /// Directories' metadata, applied once all layers are in so that later
    /// writes into them neither fail on read-only modes nor bump their mtimes.
    dirs: BTreeMap<PathBuf, Meta>,
    /// Whether ownership and device nodes can be set; without privilege they are skipped.
    privileged: bool,
}

impl Unpacker {
    /// An unpacker writing into `root`, an existing empty directory.
    pub fn new(root: &Path) -> Unpacker {
        let mut dirs = BTreeMap::new();
        let root_meta = Meta {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        dirs.insert(PathBuf::new(), root_meta);
        Unpacker {
            root: root.to_owned(),
            dirs,
            // SAFETY: geteuid has no preconditions and cannot fail.
            privileged: unsafe { libc::geteuid() } == 0,
        }
    }

    /// Applies one uncompressed layer tar stream.
    pub fn apply_layer(&mut self, layer: impl Read) -> Result<(), UnpackError> {
        let mut written = Written::default();
        let mut archive = tar::Archive::new(layer);
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            let raw = entry.path_bytes().into_owned();
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
                        written.insert(path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sets the recorded directory metadata, deepest directories first.
    pub fn finish(self) -> Result<(), UnpackError> {
        for (rel, meta) in self.dirs.iter().rev() {
            let path = self.root.join(rel);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                // Removed or replaced by a later layer.
                _ => continue,
            }
            let fail = |source| UnpackError::DirMetadata {
                path: rel.clone(),
                source,
            };
            self.set_owner(&path, meta).map_err(fail)?;
            fs::set_permissions(&path, Permissions::from_mode(meta.mode)).map_err(fail)?;
            set_mtime(&path, meta).map_err(fail)?;
        }
        Ok(())
    }

    /// Resolves the parent of `rel` inside the root (creating missing
    /// directories) and returns the relative path the entry itself is to take.
    fn place(&self, rel: &Path) -> io::Result<PathBuf> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent = rootpath::resolve(&self.root, parent, true)?;
        fs::create_dir_all(self.root.join(&parent))?;
        Ok(parent.join(rel.file_name().unwrap_or_default()))
    }

    /// Applies one entry; returns the relative path it took, if any.
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
                self.dirs.insert(PathBuf::new(), meta);
            }
            return Ok(None);
        }
        let write_err = |path: &Path| {
            let path = path.to_owned();
            move |source| UnpackError::Write {
                entry: name.to_owned(),
                path,
                source,
            }
        };
        let target = self.place(rel).map_err(write_err(rel))?;
        let path = self.root.join(&target);
        match kind {
            EntryType::Directory => {
                self.make_dir(&path, &meta).map_err(write_err(&target))?;
                self.dirs.insert(target.clone(), meta);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let capability = capability(entry);
                self.write_file(&path, entry, &meta, capability.as_deref())
                    .map_err(|e| match e {
                        CopyError::Read(e) => UnpackError::Read(e),
                        CopyError::Write(e) => write_err(&target)(e),
                    })?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(UnpackError::Read)?
                    .unwrap_or_default()
                    .into_owned();
                self.make_symlink(&path, &link, &meta)
                    .map_err(write_err(&target))?;
            }
            EntryType::Link => self.make_hardlink(entry, &path, name)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let device = (
                    entry.header().device_major().ok().flatten().unwrap_or(0),
                    entry.header().device_minor().ok().flatten().unwrap_or(0),
                );
                self.make_node(&path, kind, device, &meta)
                    .map_err(write_err(&target))?;
            }
            other => {
                tracing::debug!(entry = %name, kind = ?other, "skipping unsupported tar entry");
                return Ok(None);
            }
        }
        Ok(Some(target))
    }

    fn make_dir(&self, path: &Path, meta: &Meta) -> io::Result<()> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(path)?;
                fs::create_dir(path)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(path)?,
            Err(e) => return Err(e),
        }
        self.set_owner(path, meta)
    }

    fn write_file(
        &self,
        path: &Path,
        content: &mut impl Read,
        meta: &Meta,
        capability: Option<&[u8]>,
    ) -> Result<(), CopyError> {
        remove_existing(path).map_err(CopyError::Write)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(CopyError::Write)?;
        copy(content, &mut file)?;
        drop(file);
        self.finish_file(path, meta, capability)
            .map_err(CopyError::Write)
    }

    fn finish_file(&self, path: &Path, meta: &Meta, capability: Option<&[u8]>) -> io::Result<()> {
        // chown clears set-id bits and capabilities: mode and xattr come after it.
        self.set_owner(path, meta)?;
        fs::set_permissions(path, Permissions::from_mode(meta.mode))?;
        if let Some(value) = capability {
            set_capability(path, value)?;
        }
        set_mtime(path, meta)
    }

    fn make_symlink(&self, path: &Path, target: &Path, meta: &Meta) -> io::Result<()> {
        remove_existing(path)?;
        symlink(target, path)?;
        self.set_owner(path, meta)?;
        set_mtime(path, meta)
    }

    fn make_hardlink<R: Read>(
        &self,
        entry: &Entry<'_, R>,
        path: &Path,
        name: &str,
    ) -> Result<(), UnpackError> {
        let raw = entry.link_name_bytes().unwrap_or_default().into_owned();
        let target_name = String::from_utf8_lossy(&raw).into_owned();
        let escape = || UnpackError::LinkEscape {
            entry: name.to_owned(),
            target: target_name.clone(),
        };
        let rel = rootpath::clean(Path::new(OsStr::from_bytes(&raw))).ok_or_else(escape)?;
        if rel.as_os_str().is_empty() {
            return Err(escape());
        }
        let write_err = |source| UnpackError::Write {
            entry: name.to_owned(),
            path: rel.clone(),
            source,
        };
        // The link's own last component is not followed: linking to a symlink links the symlink.
        let resolved = rootpath::resolve(&self.root, &rel, false).map_err(write_err)?;
        let source = self.root.join(&resolved);
        if fs::symlink_metadata(&source).is_err() {
            return Err(UnpackError::LinkTarget {
                entry: name.to_owned(),
                target: target_name,
            });
        }
        if source == path {
            return Ok(());
        }
        remove_existing(path).map_err(write_err)?;
        fs::hard_link(&source, path).map_err(write_err)
    }

    fn make_node(
        &self,
        path: &Path,
        kind: EntryType,
        (major, minor): (u32, u32),
        meta: &Meta,
    ) -> io::Result<()> {
        if !self.privileged && kind != EntryType::Fifo {
            tracing::warn!(path = %path.display(), "skipping device node: unpacking without root privilege");
            return Ok(());
        }
        remove_existing(path)?;
        let file_type = match kind {
            EntryType::Char => libc::S_IFCHR,
            EntryType::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        let c_path = CString::new(path.as_os_str().as_bytes())?;
        let dev = libc::makedev(major, minor);
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call;
        // mknod does not keep the pointer.
        let rc = unsafe { libc::mknod(c_path.as_ptr(), file_type | meta.mode, dev) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        self.set_owner(path, meta)?;
        fs::set_permissions(path, Permissions::from_mode(meta.mode))?;
        set_mtime(path, meta)
    }

    /// `.wh.<name>` deletes `<name>` as lower layers left it.
    fn whiteout(&self, rel: &Path, entry: &str) -> Result<(), UnpackError> {
        let base = rel.file_name().unwrap_or_default().to_string_lossy();
        let hidden = &base[WHITEOUT_PREFIX.len()..];
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(UnpackError::Whiteout {
                entry: entry.to_owned(),
            });
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        let fail = |source| UnpackError::Write {
            entry: entry.to_owned(),
            path: parent.join(hidden),
            source,
        };
        let parent = rootpath::resolve(&self.root, parent, true).map_err(fail)?;
        remove_existing(&self.root.join(parent).join(hidden)).map_err(fail)
    }

    /// `.wh..wh..opq` empties its directory of what lower layers put there.
    fn opaque(&self, rel: &Path, entry: &str, written: &Written) -> Result<(), UnpackError> {
        let dir = rel.parent().unwrap_or(Path::new(""));
        let fail = |source| UnpackError::Write {
            entry: entry.to_owned(),
            path: dir.to_owned(),
            source,
        };
        let dir = rootpath::resolve(&self.root, dir, true).map_err(fail)?;
        match fs::symlink_metadata(self.root.join(&dir)) {
            Ok(m) if m.is_dir() => self.clear_lower(&dir, written).map_err(fail),
            _ => Ok(()),
        }
    }

    fn clear_lower(&self, dir: &Path, written: &Written) -> io::Result<()> {
        for child in fs::read_dir(self.root.join(dir))? {
            let child = child?;
            let rel = dir.join(child.file_name());
            if written.paths.contains(&rel) || written.ancestors.contains(&rel) {
                if child.file_type()?.is_dir() {
                    self.clear_lower(&rel, written)?;
                }
            } else {
                remove_existing(&child.path())?;
            }
        }
        Ok(())
    }

    fn set_owner(&self, path: &Path, meta: &Meta) -> io::Result<()> {
        match lchown(path, Some(meta.uid as u32), Some(meta.gid as u32)) {
            Err(e) if !self.privileged && e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
            other => other,
        }
    }
}

/// Paths a layer has written so far, and their ancestors: an opaque whiteout
/// hides only what lower layers put in its directory.
#[derive(Default)]
struct Written {
    paths: HashSet<PathBuf>,
    ancestors: HashSet<PathBuf>,
}

impl Written {
    fn insert(&mut self, path: PathBuf) {
        let mut ancestor = path.parent();
        while let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty()) {
            if !self.ancestors.insert(a.to_owned()) {
                break;
            }
            ancestor = a.parent();
        }
        self.paths.insert(path);
    }
}

fn remove_existing(path: &Path) -> io::Result<()> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn set_mtime(path: &Path, meta: &Meta) -> io::Result<()> {
    let mtime = FileTime::from_unix_time(meta.mtime, 0);
    filetime::set_symlink_file_times(path, mtime, mtime)
}

fn capability<R: Read>(entry: &mut Entry<'_, R>) -> Option<Vec<u8>> {
    let extensions = entry.pax_extensions().ok()??;
    extensions
        .filter_map(Result::ok)
        .find(|e| e.key_bytes() == CAPABILITY_XATTR.as_bytes())
        .map(|e| e.value_bytes().to_vec())
}

fn set_capability(path: &Path, value: &[u8]) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: both strings are NUL-terminated and outlive the call; value's
    // pointer and length describe a live slice; nothing is retained.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
