//! Tagging and removing images, and the blobs a removed image leaves behind.
//!
//! Removal deletes an image's record first, then its erofs rootfs, then the
//! blobs no remaining record refers to. A VM that has the erofs file open keeps
//! reading it: on Linux an open file outlives its unlinking. Blob removal holds
//! the `blobs` lock, which commits take too, so a load or pull that reuses a
//! blob never sees it vanish between its check and its record.

use std::collections::BTreeSet;
use std::fs;

use super::{ImageRecord, ImageStore, Pruned, StoreError, TAGS};
use crate::digest::Digest;
use crate::fsutil::sync_dir;
use crate::reference::{self, Reference};

/// Errors of tagging and removing images.
#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("refusing to create a tag with a digest reference: {0}")]
    DigestTarget(String),
    #[error("conflict: unable to delete {image} (must be forced) - image is referenced in multiple repositories")]
    MultipleTags { image: String },
    #[error("conflict: unable to delete {image} (must be forced) - image is being used by a running container")]
    InUse { image: String },
}

/// One line of what a removal did, as docker reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// A tag or a `repository@digest` name (familiar form) was removed.
    Untagged(String),
    /// An image (its id) or one of its layers (the blob's digest) was deleted.
    Deleted(String),
}

impl ImageStore {
    /// Points the tag `target` at the image `source` names (`docker tag`).
    pub fn tag(&self, source: &str, target: &str) -> Result<String, StoreError> {
        let reference = Reference::parse(target)?;
        if reference.digest().is_some() {
            return Err(TagError::DigestTarget(target.to_owned()).into());
        }
        let tag = reference.with_default_tag().to_string();
        let _lock = self.lock("tags")?;
        let image = self.resolve(source)?;
        let mut tags = self.tags()?;
        tags.insert(tag.clone(), image.record.id.clone());
        self.write_json(&self.root.join(TAGS), &tags)?;
        tracing::info!(%tag, image = %image.id, "tagged");
        Ok(tag)
    }

    /// Removes a tag, or an image with all its tags (`docker rmi`). An image
    /// loses its last tag only with itself; an image named by id that has
    /// several tags is removed only when `force`. An image whose id is in
    /// `in_use` is not deleted: without `force` that is an error, with it
    /// the image only loses its tags, as docker does for running containers.
    ///
    /// As docker reports it: the tags untagged, then, if the image goes, the
    /// `repository@digest` names it was pulled by, its id, and each layer
    /// whose blob no other image shared, topmost first.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: &BTreeSet<String>,
    ) -> Result<Vec<Removal>, StoreError> {
        let _blobs = self.lock("blobs")?;
        let _tags = self.lock("tags")?;
        let image = self.resolve(name)?;
        let id = image.record.id.clone();
        let mut tags = self.tags()?;
        let by_tag = Reference::parse(name)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| r.with_default_tag().to_string())
            .filter(|t| tags.get(t) == Some(&id));
        let untag: Vec<String> = match by_tag {
            Some(tag) => vec![tag],
            None if image.repo_tags.len() > 1 && !force => {
                return Err(TagError::MultipleTags {
                    image: id.hex()[..12].to_owned(),
                }
                .into())
            }
            None => image.repo_tags.clone(),
        };
        let deleting = image.repo_tags.iter().all(|t| untag.contains(t));
        let in_use = in_use.contains(&image.id);
        if deleting && in_use && !force {
            return Err(TagError::InUse {
                image: id.hex()[..12].to_owned(),
            }
            .into());
        }
        let mut removals = Vec::new();
        for tag in &untag {
            tags.remove(tag);
            removals.push(Removal::Untagged(reference::familiar(tag)));
        }
        if !untag.is_empty() {
            self.write_json(&self.root.join(TAGS), &tags)?;
        }
        if deleting && !in_use {
            removals.extend(self.delete_image(&image.record)?.removals);
        }
        Ok(removals)
    }

    /// Deletes a record, its erofs file and the blobs only it used. Reports
    /// the names it was pulled by, its id and the layers removed, as docker's
    /// `rmi` lists them, and the bytes freed.
    pub(super) fn delete_image(&self, record: &ImageRecord) -> Result<Pruned, StoreError> {
        let path = self.record_path(&record.id);
        fs::remove_file(&path).map_err(|source| StoreError::Write {
            path: path.clone(),
            source,
        })?;
        let _ = sync_dir(&self.root.join("images"));
        let mut deleted = Pruned {
            removals: record
                .repo_digests
                .iter()
                .map(|d| Removal::Untagged(reference::familiar(d)))
                .chain([Removal::Deleted(record.id.to_string())])
                .collect(),
            space_reclaimed: self.remove_file(&self.erofs_path(&record.id))?.unwrap_or(0),
        };
        let used = self.used_blobs()?;
        let mut removed = BTreeSet::new();
        for digest in blobs_of(record) {
            if used.contains(digest) {
                continue;
            }
            if let Some(size) = self.remove_file(&self.blob_path(digest))? {
                deleted.space_reclaimed += size;
                removed.insert(digest);
            }
        }
        // Newest layer first, as docker releases a layer chain from its top.
        for layer in record.layers.iter().rev() {
            if removed.remove(&layer.digest) {
                deleted
                    .removals
                    .push(Removal::Deleted(layer.digest.to_string()));
            }
        }
        tracing::info!(image = %record.id, freed = deleted.space_reclaimed, "deleted image");
        Ok(deleted)
    }

    /// Removes blobs and erofs files of images that no longer exist.
    pub(super) fn collect_garbage(&self) -> Result<u64, StoreError> {
        let used = self.used_blobs()?;
        let mut freed = 0;
        for (dir, suffix) in [("blobs/sha256", ""), ("erofs", ".erofs")] {
            let dir = self.root.join(dir);
            let entries = fs::read_dir(&dir).map_err(|source| StoreError::Read {
                path: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(hex) = name.strip_suffix(suffix) else {
                    continue;
                };
                let Ok(digest) = Digest::from_hex(hex) else {
                    continue;
                };
                let keep = match suffix {
                    "" => used.contains(&digest),
                    _ => self.record_path(&digest).exists(),
                };
                if !keep {
                    freed += self.remove_file(&entry.path())?.unwrap_or(0);
                }
            }
        }
        Ok(freed)
    }

    /// The id of the image whose erofs rootfs is `path`, e.g. to mark it in use.
    pub fn rootfs_image(&self, path: &std::path::Path) -> Option<String> {
        let hex = path.file_name()?.to_str()?.strip_suffix(".erofs")?;
        let id = Digest::from_hex(hex).ok()?;
        (path.parent()? == self.root.join("erofs")).then(|| id.to_string())
    }

    /// Bytes the store's blobs and erofs files take.
    pub fn disk_usage(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for dir in ["blobs/sha256", "erofs"] {
            let dir = self.root.join(dir);
            let entries = fs::read_dir(&dir).map_err(|source| StoreError::Read {
                path: dir.clone(),
                source,
            })?;
            total += entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>();
        }
        Ok(total)
    }

    /// Every blob some image's record refers to.
    pub(super) fn used_blobs(&self) -> Result<BTreeSet<Digest>, StoreError> {
        Ok(self
            .records()?
            .iter()
            .flat_map(|r| blobs_of(r).cloned().collect::<Vec<_>>())
            .collect())
    }

    /// Removes a file if it exists; returns its size, or `None` if it was not there.
    fn remove_file(&self, path: &std::path::Path) -> Result<Option<u64>, StoreError> {
        let size = match fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(_) => return Ok(None),
        };
        match fs::remove_file(path) {
            Ok(()) => Ok(Some(size)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Write {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// The blobs a record refers to: config, layers, manifest and index.
fn blobs_of(record: &ImageRecord) -> impl Iterator<Item = &Digest> {
    [&record.config.digest]
        .into_iter()
        .chain(record.layers.iter().map(|l| &l.digest))
        .chain(record.manifest.iter().map(|m| &m.digest))
        .chain(record.index.iter().map(|i| &i.digest))
}

#[cfg(test)]
#[path = "tags_tests.rs"]
mod tests;
