//! A tar that becomes a layer of an image made on this host: one a client
//! sent (`docker import`) or one a guest read out of a container (`docker
//! commit`). Both are strangers' bytes, so before anything is stored the
//! whole stream is read within the store's limits and every entry is held
//! to what an image layer may be: names from the root without `..`, no
//! device nodes, no entry beneath a symlink of the same archive, no
//! relative symlink leading above the root, hard links only to files the
//! archive holds before them.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::{decompress, walk, Compression, LayerError, Visit};
use crate::digest::{Digest, HashingReader};
use crate::limits::{LimitError, Limits, MAX_DEPTH, MAX_NAME};

/// Why a tar cannot become a layer.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the archive is empty: send a tar (plain, gzip or zstd)")]
    Empty,
    #[error("it is truncated or not a tar stream (plain, gzip or zstd)")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("entry '{0}' has no name")]
    NoName(String),
    #[error("entry '{0}' is an absolute path: entries are named from the image's root")]
    Absolute(String),
    #[error("entry '{0}' has '..' in its path, which could lead outside the image")]
    Parent(String),
    #[error("entry '{0}' is a device node, which an image made on this host may not hold")]
    Device(String),
    #[error("entry '{0}' is of a kind an image layer cannot hold ({1})")]
    Kind(String, String),
    #[error("entry '{entry}' lies beneath '{link}', a symlink of the same archive")]
    BeneathLink { entry: String, link: String },
    #[error("symlink '{entry}' points to '{target}', above the image's root")]
    LinkOut { entry: String, target: String },
    #[error("hard link '{entry}' names '{target}', which is no file the archive holds before it")]
    HardLink { entry: String, target: String },
}

/// A tar that passed, as a layer blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedLayer {
    pub compression: Compression,
    /// Digest and length of the blob as it came (compressed or not).
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Sum of the sizes of its files.
    pub unpacked_size: u64,
}

/// Reads the whole `blob` and checks it; memory stays within a few MiB
/// plus a few bytes per symlink and file of the archive (at most
/// `max_entries` of them).
pub fn check(blob: impl Read, limits: &Limits) -> Result<CheckedLayer, CheckError> {
    let mut raw = HashingReader::new(blob);
    let (compression, diff_id, unpacked_size) = {
        let (compression, reader) = decompress(&mut raw).map_err(CheckError::Read)?;
        let mut names = Names::default();
        let (diff_id, unpacked_size) = walk(reader, limits, &mut names)?;
        (compression, diff_id, unpacked_size)
    };
    let (digest, size) = raw.finish().map_err(CheckError::Read)?;
    if size == 0 {
        return Err(CheckError::Empty);
    }
    Ok(CheckedLayer {
        compression,
        digest,
        size,
        diff_id,
        unpacked_size,
    })
}

/// What the entries so far named, by a keyed hash of their path alone, so
/// that no name is held. A collision (one in 2^64 per pair, and no client
/// can aim for one without the key) at worst refuses an innocent entry
/// beneath a symlink, or lets by here a hard link the unpacker refuses.
#[derive(Default)]
struct Names {
    keys: RandomState,
    symlinks: HashSet<u64>,
    files: HashSet<u64>,
}

impl From<LayerError> for CheckError {
    fn from(error: LayerError) -> Self {
        match error {
            LayerError::Read(e) => CheckError::Read(e),
            LayerError::Limit(limit) => CheckError::Limit(limit),
        }
    }
}

impl Visit for Names {
    type Error = CheckError;

    fn entry<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<(), CheckError> {
        let raw = entry.path_bytes();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let link = entry.link_name_bytes();
        let len = raw.len().max(link.as_ref().map_or(0, |l| l.len()));
        if len > MAX_NAME {
            return Err(LimitError::Name { len }.into());
        }
        let path = self.clean(&raw, &shown)?;
        if path.as_os_str().is_empty() {
            return match entry.header().entry_type() {
                // The root itself (`./`), as many tools archive it.
                EntryType::Directory => Ok(()),
                _ => Err(CheckError::NoName(shown)),
            };
        }
        let hashes = self.prefix_hashes(&path);
        for (depth, hash) in hashes[..hashes.len() - 1].iter().enumerate() {
            if self.symlinks.contains(hash) {
                let link: PathBuf = path.components().take(depth + 1).collect();
                return Err(CheckError::BeneathLink {
                    entry: shown,
                    link: link.display().to_string(),
                });
            }
        }
        let own = *hashes.last().expect("a non-empty path has a hash");
        let link = link.map(|l| l.into_owned()).unwrap_or_default();
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                self.files.insert(own);
            }
            EntryType::Directory | EntryType::Fifo | EntryType::XGlobalHeader => {}
            EntryType::Symlink => {
                if climbs_out(&path, &link) {
                    return Err(CheckError::LinkOut {
                        entry: shown,
                        target: String::from_utf8_lossy(&link).into_owned(),
                    });
                }
                self.symlinks.insert(own);
            }
            EntryType::Link => {
                let target = String::from_utf8_lossy(&link).into_owned();
                let refused = || CheckError::HardLink {
                    entry: shown.clone(),
                    target: target.clone(),
                };
                let target_path = self.clean(&link, &target).map_err(|_| refused())?;
                let known = !target_path.as_os_str().is_empty()
                    && self
                        .files
                        .contains(self.prefix_hashes(&target_path).last().expect("non-empty"));
                if !known {
                    return Err(refused());
                }
                self.files.insert(own);
            }
            EntryType::Char | EntryType::Block => return Err(CheckError::Device(shown)),
            other => return Err(CheckError::Kind(shown, format!("{other:?}"))),
        }
        Ok(())
    }
}

impl Names {
    /// The entry's path without `.` parts or a trailing `/`; absolute ones
    /// and any `..` are refused.
    fn clean(&self, raw: &[u8], shown: &str) -> Result<PathBuf, CheckError> {
        if raw.first() == Some(&b'/') {
            return Err(CheckError::Absolute(shown.to_owned()));
        }
        let mut path = PathBuf::new();
        for component in Path::new(OsStr::from_bytes(raw)).components() {
            match component {
                Component::Normal(name) => path.push(name),
                Component::CurDir => {}
                Component::ParentDir => return Err(CheckError::Parent(shown.to_owned())),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(CheckError::Absolute(shown.to_owned()))
                }
            }
        }
        let depth = path.components().count();
        if depth > MAX_DEPTH {
            return Err(LimitError::Depth {
                entry: shown.to_owned(),
            }
            .into());
        }
        Ok(path)
    }

    /// A keyed hash of each prefix of `path`, the shortest first, each
    /// made from the one before and one name: linear in the path's length.
    fn prefix_hashes(&self, path: &Path) -> Vec<u64> {
        let mut hash = 0u64;
        path.components()
            .map(|component| {
                let mut hasher = self.keys.build_hasher();
                hasher.write_u64(hash);
                hasher.write(component.as_os_str().as_bytes());
                hash = hasher.finish();
                hash
            })
            .collect()
    }
}

/// Whether the relative symlink at `path` leads above the root: each `..`
/// of its target climbs one of the directories the link lies in.
fn climbs_out(path: &Path, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        // Resolved from the container's own root, which it cannot leave.
        return false;
    }
    let mut depth = path.components().count() - 1;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
