//! OCI whiteouts: `.wh.<name>` deletes a lower layer's file, `.wh..wh..opq`
//! empties a directory of what lower layers put there. Both reach their
//! directory as every other entry does, through descriptors opened inside
//! the rootfs.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{UnpackError, Unpacker, WHITEOUT_PREFIX};
use crate::at::{At, Entries, Kind};
use crate::rootpath;

impl Unpacker {
    /// `.wh.<name>` deletes `<name>` as lower layers left it.
    pub(super) fn whiteout(&mut self, rel: &Path, entry: &str) -> Result<(), UnpackError> {
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
        let Some((dir, _)) = rootpath::resolve_dir(&self.root, parent, false).map_err(fail)? else {
            return Ok(());
        };
        self.remove_existing(&dir, OsStr::new(hidden)).map_err(fail)
    }

    /// `.wh..wh..opq` empties its directory of what lower layers put there.
    pub(super) fn opaque(
        &mut self,
        rel: &Path,
        entry: &str,
        written: &Written,
    ) -> Result<(), UnpackError> {
        let dir = rel.parent().unwrap_or(Path::new(""));
        let fail = |source| UnpackError::Write {
            entry: entry.to_owned(),
            path: dir.to_owned(),
            source,
        };
        match rootpath::resolve_dir(&self.root, dir, false).map_err(fail)? {
            Some((opened, path)) => {
                let entries = opened.entries().map_err(fail)?;
                self.clear_lower(entries, &path, written).map_err(fail)
            }
            None => Ok(()),
        }
    }

    fn clear_lower(
        &mut self,
        mut entries: Entries,
        dir: &Path,
        written: &Written,
    ) -> io::Result<()> {
        // Removing while reading may skip entries on some filesystems: read
        // again until a pass removes nothing.
        loop {
            let mut removed = false;
            while let Some((name, _)) = entries.next_name()? {
                let rel = dir.join(&name);
                if written.contains(&self.hasher, &rel) {
                    let is_dir = entries
                        .stat_child(&name)?
                        .is_some_and(|s| s.kind == Kind::Dir);
                    if is_dir {
                        let child = entries.open_dir(&name)?.entries()?;
                        self.clear_lower(child, &rel, written)?;
                    }
                } else {
                    self.remove_existing(&entries, &name)?;
                    removed = true;
                }
            }
            if !removed {
                return Ok(());
            }
            entries.rewind();
        }
    }
}

/// Paths a layer has written so far, and their ancestors, kept as keyed
/// hashes (a few bytes each, whatever the names' length): an opaque whiteout
/// hides only what lower layers put in its directory.
#[derive(Default)]
pub(super) struct Written {
    paths: HashSet<u64>,
    ancestors: HashSet<u64>,
}

impl Written {
    pub(super) fn insert(&mut self, hasher: &RandomState, path: &Path) {
        let mut ancestor = path.parent();
        while let Some(a) = ancestor.filter(|a| !a.as_os_str().is_empty()) {
            if !self
                .ancestors
                .insert(hasher.hash_one(a.as_os_str().as_bytes()))
            {
                break;
            }
            ancestor = a.parent();
        }
        self.paths
            .insert(hasher.hash_one(path.as_os_str().as_bytes()));
    }

    fn contains(&self, hasher: &RandomState, path: &Path) -> bool {
        let hash = hasher.hash_one(path.as_os_str().as_bytes());
        self.paths.contains(&hash) || self.ancestors.contains(&hash)
    }
}
