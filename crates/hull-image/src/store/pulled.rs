//! Committing an image downloaded from a registry: its layers arrive as
//! verified files in a staging directory of the store (or are already in it),
//! its manifest and config as bytes. Every layer is checked against the
//! config's diff_ids before anything is moved into place, and the image
//! becomes visible only when its record is written.

use std::fs::{self, File};
use std::io;
use std::path::PathBuf;

use super::{ImageRecord, ImageStore, LayerRecord, StoreError};
use crate::at::Dir;
use crate::digest::Digest;
use crate::fsutil::{rename_durably, write_atomic};
use crate::layer::{self, LayerError};
use crate::limits::{check_disk, LimitError};
use crate::spec::{ConfigFile, Descriptor};

/// Errors of committing a pulled image.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("image config {config} is not valid JSON of its kind")]
    Config {
        config: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("image config {config} lists {diff_ids} diff_ids for the manifest's {layers} layers")]
    LayerCount {
        config: Digest,
        diff_ids: usize,
        layers: usize,
    },
    #[error("layer {layer} is refused")]
    Layer {
        layer: Digest,
        #[source]
        source: LayerError,
    },
    #[error("image {image} is refused")]
    Limit {
        image: Digest,
        #[source]
        source: LimitError,
    },
    #[error("layer {layer} has uncompressed digest {actual}, but the image config's diff_id is {expected}")]
    DiffId {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer} is neither downloaded nor in the store")]
    Missing { layer: Digest },
}

/// A layer of a pulled image: its descriptor, and the downloaded file unless
/// the store already had the blob.
#[derive(Debug)]
pub struct PulledLayer {
    pub descriptor: Descriptor,
    pub staged: Option<PathBuf>,
    /// What checking the staged blob while it downloaded found; the
    /// commit reads the blob itself without it.
    pub checked: Option<crate::layer::LayerInfo>,
}

/// Everything of a downloaded image, verified against its digests.
#[derive(Debug)]
pub struct PulledImage {
    /// The image manifest (the platform's, when pulled through an index).
    pub manifest: Descriptor,
    pub manifest_bytes: Vec<u8>,
    /// The index the manifest was chosen from, if any.
    pub index: Option<(Descriptor, Vec<u8>)>,
    pub config: Descriptor,
    pub config_bytes: Vec<u8>,
    pub layers: Vec<PulledLayer>,
    /// The normalized tag to point at the image (none when pulled by digest).
    pub tag: Option<String>,
    /// The normalized repository it came from, e.g. `127.0.0.1:5000/library/busybox`.
    pub repository: String,
}

/// What committing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub id: Digest,
    /// False when the store already had this image under this name.
    pub changed: bool,
}

impl ImageStore {
    /// Whether the store holds the blob `digest`.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A private directory on the store's filesystem, removed when dropped:
    /// files staged there move into the store with a rename.
    pub fn staging_dir(&self, prefix: &str) -> Result<tempfile::TempDir, StoreError> {
        let tmp = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(|source| StoreError::Write { path: tmp, source })
    }

    /// Checks a pulled image's layers against its config, moves its blobs into
    /// the store, writes its record, then points its tag at it.
    pub fn commit_pulled(&self, image: PulledImage) -> Result<Committed, StoreError> {
        let _blobs = self.lock("blobs")?;
        let config: ConfigFile =
            serde_json::from_slice(&image.config_bytes).map_err(|source| CommitError::Config {
                config: image.config.digest.clone(),
                source,
            })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != image.layers.len() {
            return Err(CommitError::LayerCount {
                config: image.config.digest.clone(),
                diff_ids: diff_ids.len(),
                layers: image.layers.len(),
            }
            .into());
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in image.layers.iter().zip(diff_ids) {
            layers.push(self.check_layer(layer, diff_id)?);
        }
        self.check_image_size(&image.config.digest, &layers)?;
        for layer in &image.layers {
            if let Some(staged) = &layer.staged {
                let dest = self.blob_path(&layer.descriptor.digest);
                if !dest.exists() {
                    rename_durably(staged, &dest)
                        .map_err(|source| StoreError::Write { path: dest, source })?;
                }
            }
        }
        let documents = [
            (&image.config.digest, &image.config_bytes),
            (&image.manifest.digest, &image.manifest_bytes),
        ];
        let index = image.index.as_ref().map(|(d, bytes)| (&d.digest, bytes));
        for (digest, bytes) in documents.into_iter().chain(index) {
            let dest = self.blob_path(digest);
            if !dest.exists() {
                write_atomic(&dest, bytes)
                    .map_err(|source| StoreError::Write { path: dest, source })?;
            }
        }
        let pulled_by = image.index.as_ref().map_or(&image.manifest, |(d, _)| d);
        let repo_digest = format!("{}@{}", image.repository, pulled_by.digest);
        let record_path = self.record_path(&image.config.digest);
        let mut changed = !record_path.exists();
        let mut repo_digests = match self.read_json::<ImageRecord>(&record_path) {
            Ok(old) => old.repo_digests,
            Err(_) => Vec::new(),
        };
        repo_digests.retain(|d| d.split('@').next() != Some(image.repository.as_str()));
        repo_digests.push(repo_digest);
        repo_digests.sort();
        let record = ImageRecord {
            id: image.config.digest.clone(),
            config: image.config.clone(),
            layers,
            manifest: Some(image.manifest.clone()),
            index: image.index.map(|(d, _)| d),
            repo_digests,
            parent: None,
        };
        self.write_json(&record_path, &record)?;
        if let Some(tag) = image.tag {
            let _lock = self.lock("tags")?;
            let mut tags = self.tags()?;
            if tags.insert(tag.clone(), record.id.clone()).as_ref() != Some(&record.id) {
                changed = true;
                tracing::info!(%tag, image = %record.id, "tagged pulled image");
                self.write_json(&self.root.join(super::TAGS), &tags)?;
            }
        }
        Ok(Committed {
            id: record.id,
            changed,
        })
    }

    fn check_layer(
        &self,
        layer: &PulledLayer,
        diff_id: &Digest,
    ) -> Result<LayerRecord, StoreError> {
        let digest = &layer.descriptor.digest;
        let info = match (&layer.checked, &layer.staged) {
            (Some(checked), Some(_)) => checked.clone(),
            _ => self.inspect_blob(layer)?,
        };
        if &info.diff_id != diff_id {
            return Err(CommitError::DiffId {
                layer: digest.clone(),
                expected: diff_id.clone(),
                actual: info.diff_id,
            }
            .into());
        }
        Ok(LayerRecord {
            media_type: layer.descriptor.media_type.clone(),
            digest: digest.clone(),
            size: layer.descriptor.size,
            diff_id: info.diff_id,
            unpacked_size: info.unpacked_size,
        })
    }

    /// Reads a layer's blob, staged or stored, through [`layer::inspect`].
    fn inspect_blob(&self, layer: &PulledLayer) -> Result<layer::LayerInfo, StoreError> {
        let digest = &layer.descriptor.digest;
        let path = match &layer.staged {
            Some(path) => path.clone(),
            None => self.blob_path(digest),
        };
        let blob = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::from(CommitError::Missing {
                layer: digest.clone(),
            }),
            _ => StoreError::Read { path, source: e },
        })?;
        layer::inspect(blob, &self.limits()).map_err(|source| {
            CommitError::Layer {
                layer: digest.clone(),
                source,
            }
            .into()
        })
    }

    /// Checks that an image's layers together fit the limit and the store's disk.
    pub(super) fn check_image_size(
        &self,
        image: &Digest,
        layers: &[LayerRecord],
    ) -> Result<(), StoreError> {
        let size = layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.unpacked_size));
        let limits = self.limits();
        let refused = |source| CommitError::Limit {
            image: image.clone(),
            source,
        };
        if size > limits.max_unpacked_bytes {
            return Err(refused(LimitError::Unpacked {
                limit: limits.max_unpacked_bytes,
            })
            .into());
        }
        let tmp = self.root.join("tmp");
        let available = Dir::open(&tmp)
            .and_then(|d| d.available_bytes())
            .map_err(|source| StoreError::Read {
                path: tmp.clone(),
                source,
            })?;
        check_disk(size, available, tmp).map_err(|e| refused(e).into())
    }

    /// The file of a blob of the store, e.g. a layer to push.
    pub fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.blob_path(digest)
    }

    /// Reads a blob of the store, e.g. a manifest to push.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|source| StoreError::Read { path, source })
    }
}
