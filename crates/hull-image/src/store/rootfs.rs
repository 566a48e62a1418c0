//! An image's erofs rootfs: its layers flattened into a directory, on tmpfs
//! when there is room, then packed by `mkfs.erofs`; built once per image.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{scratch, Image, ImageRecord, ImageStore, StoreError};
use crate::at::Dir;
use crate::erofs;
use crate::fsutil::rename_durably;
use crate::layer;
use crate::limits::check_disk;
use crate::readahead::ReadAhead;
use crate::unpack::{UnpackError, Unpacker};

impl ImageStore {
    /// Path of the image's erofs rootfs, built on first use and shared afterwards.
    pub fn rootfs(&self, image: &Image) -> Result<PathBuf, StoreError> {
        let id = &image.record.id;
        let out = self.erofs_path(id);
        if out.exists() {
            return Ok(out);
        }
        let _lock = self.lock(&format!("rootfs-{}", id.hex()))?;
        if out.exists() {
            return Ok(out);
        }
        let tmp = self.root.join("tmp");
        let work = tempfile::Builder::new()
            .prefix("rootfs-")
            .tempdir_in(&tmp)
            .map_err(|source| StoreError::Write { path: tmp, source })?;
        // The erofs image is about as large as the files it packs.
        let available = Dir::open(work.path())
            .and_then(|d| d.available_bytes())
            .map_err(|source| StoreError::Write {
                path: work.path().to_owned(),
                source,
            })?;
        check_disk(image.size, available, work.path().to_owned()).map_err(|source| {
            StoreError::Limit {
                image: id.clone(),
                source,
            }
        })?;
        let scratch = scratch::for_tree(image.size, work.path());
        let tree = tempfile::Builder::new()
            .prefix(&scratch.prefix)
            .tempdir_in(&scratch.dir)
            .map_err(|source| StoreError::Write {
                path: scratch.dir,
                source,
            })?;
        // Not the temporary directory itself: its mode, 0700, would become the
        // rootfs's unless a layer sets one.
        let dir = tree.path().join("rootfs");
        fs::create_dir(&dir).map_err(|source| StoreError::Write {
            path: dir.clone(),
            source,
        })?;
        let started = Instant::now();
        self.flatten(&image.record, &dir)?;
        let flattened = started.elapsed();
        let built = work.path().join("rootfs.erofs");
        erofs::mkfs(&dir, &built).map_err(|source| StoreError::Erofs {
            image: id.clone(),
            source,
        })?;
        let made = started.elapsed() - flattened;
        drop(tree);
        // Under the lock that removals take: an image removed while its
        // rootfs was built must not leave the rootfs behind.
        let _blobs = self.lock("blobs")?;
        if !self.record_path(id).exists() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        rename_durably(&built, &out).map_err(|source| StoreError::Write {
            path: out.clone(),
            source,
        })?;
        // What a build costs, by step: bench-pull.sh reports these.
        tracing::info!(
            image = %id,
            path = %out.display(),
            flatten_ms = flattened.as_millis() as u64,
            mkfs_ms = made.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built erofs rootfs"
        );
        Ok(out)
    }

    /// Applies the image's layers, in order, into the empty directory `dir`.
    pub(crate) fn flatten(&self, record: &ImageRecord, dir: &Path) -> Result<(), StoreError> {
        let mut unpacker =
            Unpacker::new(dir, self.limits()).map_err(|source| StoreError::Flatten {
                image: record.id.clone(),
                source,
            })?;
        for layer in &record.layers {
            let path = self.blob_path(&layer.digest);
            let blob = File::open(&path).map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
            let unpack_err = |source| StoreError::Unpack {
                layer: layer.digest.clone(),
                source,
            };
            // Decompressed on a core of its own while this one writes files.
            let tar = ReadAhead::new(move || layer::decompress(blob).map(|(_, tar)| tar))
                .map_err(|e| unpack_err(UnpackError::Read(e)))?;
            unpacker.apply_layer(tar).map_err(unpack_err)?;
        }
        unpacker.finish().map_err(|source| StoreError::Flatten {
            image: record.id.clone(),
            source,
        })
    }
}
