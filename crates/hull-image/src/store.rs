//! The image store on disk.
//!
//! ```text
//! <root>/blobs/sha256/<hex>   configs, manifests and layers, by digest, each stored once
//! <root>/images/<hex>.json    one record per image (ImageRecord), named by its id
//! <root>/tags.json            normalized tag -> image id
//! <root>/erofs/<hex>.erofs    flattened read-only rootfs per image id
//! <root>/tmp/                 staging and unpacking (same filesystem, so renames are atomic)
//! <root>/locks/               flock files: the tag index, one per rootfs build
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::archive::{self, ArchiveError, ImportedImage, StagedFile};
use crate::digest::{Digest, DigestError};
use crate::erofs::ErofsError;
use crate::fsutil::{rename_durably, sync_dir, write_atomic, Lock};
use crate::limits::{LimitError, Limits};
use crate::reference::{self, Reference, ReferenceError};
use crate::spec::{self, ConfigFile, Descriptor, ImageConfig};
use crate::unpack::UnpackError;

mod compose;
mod history;
mod prune;
mod pulled;
mod rootfs;
mod scratch;
mod tags;

pub use compose::NewImage;
pub use history::HistoryEntry;
pub use prune::{LabelFilter, PruneFilter, PruneFilterError, Pruned};
pub use pulled::{CommitError, Committed, PulledImage, PulledLayer};
pub use tags::{Removal, TagError};

const TAGS: &str = "tags.json";
/// Leftovers of interrupted loads and builds older than this are removed on open.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);
/// Shortest id prefix accepted as a reference, like docker's short ids.
const MIN_ID_PREFIX: usize = 4;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the image store at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error("image reference '{reference}' is ambiguous: it matches {count} images")]
    Ambiguous { reference: String, count: usize },
    #[error(transparent)]
    Tag(#[from] TagError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the image's layer is refused")]
    Layer(#[source] crate::layer::check::CheckError),
    #[error("cannot unpack layer {layer}")]
    Unpack {
        layer: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("cannot finish the flattened rootfs of image {image}")]
    Flatten {
        image: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("image {image} is refused")]
    Limit {
        image: Digest,
        #[source]
        source: LimitError,
    },
    #[error("cannot build the rootfs of image {image}")]
    Erofs {
        image: Digest,
        #[source]
        source: ErofsError,
    },
}

/// What the store keeps per image: enough to rebuild its manifest for a push or a save.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The config's digest, which is the image id.
    pub id: Digest,
    pub config: Descriptor,
    pub layers: Vec<LayerRecord>,
    /// The manifest the image came with (OCI layouts), stored as a blob too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Descriptor>,
    /// The index the manifest was chosen from, for images pulled through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Descriptor>,
    /// `repository@digest` of every registry the image was pulled from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
    /// The image a commit or import was made on, as docker keeps it: on
    /// this host only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
}

/// One layer of an image.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRecord {
    pub media_type: String,
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Sum of the sizes of the files in the layer.
    pub unpacked_size: u64,
}

/// An image of the store.
#[derive(Clone, Debug)]
pub struct Image {
    /// `sha256:<hex>` of the config.
    pub id: String,
    /// Normalized tags, e.g. `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// Normalized `repository@digest` names it was pulled by.
    pub repo_digests: Vec<String>,
    pub config: ImageConfig,
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    pub author: Option<String>,
    pub comment: Option<String>,
    /// The container a commit was made from, and its config.
    pub container: Option<String>,
    pub container_config: Option<serde_json::Value>,
    /// Bytes of the unpacked layers.
    pub size: u64,
    pub record: ImageRecord,
}

/// A line of `images`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    pub id: String,
    pub repo_tags: Vec<String>,
    /// Normalized `repository@digest` names it was pulled by.
    pub repo_digests: Vec<String>,
    /// As the config says, RFC 3339.
    pub created: Option<String>,
    /// The same, in seconds since the epoch.
    pub created_unix: Option<i64>,
    pub size: u64,
    /// Whether its erofs rootfs is built, so a run need not wait for it.
    pub rootfs_ready: bool,
}

/// An image `load` brought in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: String,
    pub repo_tags: Vec<String>,
}

/// A content-addressed image store in one directory.
#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// Layers pulls are downloading now, shared by concurrent pulls.
    pub(crate) downloads: std::sync::Arc<crate::registry::inflight::InFlight>,
    /// Shared by every clone, and changeable once the store is open.
    limits: std::sync::Arc<std::sync::RwLock<Limits>>,
}

impl ImageStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        let store = ImageStore {
            root: root.to_owned(),
            downloads: Default::default(),
            limits: Default::default(),
        };
        let open_err = |source| StoreError::Open {
            path: root.to_owned(),
            source,
        };
        for dir in ["blobs/sha256", "images", "erofs", "tmp", "locks"] {
            fs::create_dir_all(root.join(dir)).map_err(open_err)?;
        }
        store.remove_stale_tmp();
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// What an image may make the host hold, checked on every load, pull and unpack.
    pub fn limits(&self) -> Limits {
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The most bytes an upload spooled in `dir` may take: an archive is
    /// at most the image it holds, and never more than the disk has free.
    pub fn upload_budget(&self, dir: &Path) -> u64 {
        let free = scratch::available_bytes(dir).unwrap_or(u64::MAX);
        self.limits().max_unpacked_bytes.min(free)
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// Loads a docker-archive or OCI-layout tar. Every blob is verified before
    /// anything is stored; tags move to the loaded images, as with `docker load`.
    pub fn load(
        &self,
        archive: impl Read,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<LoadedImage>, StoreError> {
        let loaded = self.import(archive, progress)?;
        let _lock = self.lock("tags")?;
        let mut tags = self.tags()?;
        for image in &loaded {
            let id: Digest = image.id.parse()?;
            for tag in &image.repo_tags {
                if let Some(old) = tags.insert(tag.clone(), id.clone()) {
                    if old != id {
                        tracing::info!(%tag, from = %old, to = %id, "tag moved");
                    }
                }
            }
        }
        self.write_json(&self.root.join(TAGS), &tags)?;
        Ok(loaded)
    }

    /// Loads an archive as [`load`](Self::load) does but leaves the store's
    /// tags alone: the names the archive gives come back for the caller to
    /// keep elsewhere (a tenant's own table).
    pub fn import(
        &self,
        archive: impl Read,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Vec<LoadedImage>, StoreError> {
        let tmp = self.root.join("tmp");
        let staging = tempfile::Builder::new()
            .prefix("load-")
            .tempdir_in(&tmp)
            .map_err(|source| StoreError::Write { path: tmp, source })?;
        let images = archive::import(archive, staging.path(), &self.limits(), progress)?;
        for image in &images {
            self.commit(image)?;
        }
        let mut loaded = Vec::new();
        for image in &images {
            let id = image.config.digest.to_string();
            for tag in &image.repo_tags {
                progress(&format!("Loaded image: {}", reference::familiar(tag)));
            }
            if image.repo_tags.is_empty() {
                progress(&format!("Loaded image ID: {id}"));
            }
            loaded.push(LoadedImage {
                id,
                repo_tags: image.repo_tags.clone(),
            });
        }
        Ok(loaded)
    }

    /// Every image, tagged or not.
    pub fn list(&self) -> Result<Vec<ImageSummary>, StoreError> {
        let tags = self.tags()?;
        let mut summaries = Vec::new();
        for record in self.records()? {
            let record_id = record.id.clone();
            let image = self.image(record, &tags)?;
            summaries.push(ImageSummary {
                created_unix: image.created.as_deref().and_then(spec::parse_rfc3339),
                id: image.id,
                repo_tags: image.repo_tags,
                repo_digests: image.repo_digests,
                created: image.created,
                size: image.size,
                rootfs_ready: self.erofs_path(&record_id).exists(),
            });
        }
        summaries.sort_by(|a, b| b.created_unix.cmp(&a.created_unix).then(a.id.cmp(&b.id)));
        Ok(summaries)
    }

    /// Resolves a reference as docker does: a tag (`busybox` = `busybox:latest` =
    /// `docker.io/library/busybox:latest`), `name@sha256:…`, a full id, or a unique id prefix.
    pub fn resolve(&self, reference: &str) -> Result<Image, StoreError> {
        let tags = self.tags()?;
        let not_found = || {
            let shown = Reference::parse(reference).map_or_else(
                |_| reference.to_owned(),
                |r| r.with_default_tag().familiar(),
            );
            StoreError::NotFound(shown)
        };
        if let Some(prefix) = reference.strip_prefix("sha256:") {
            return self
                .by_id_prefix(prefix, reference, &tags)?
                .ok_or_else(not_found);
        }
        let parsed = Reference::parse(reference);
        if let Ok(r) = &parsed {
            let r = r.clone().with_default_tag();
            let found = match r.digest() {
                Some(digest) => self.by_digest(digest)?,
                None => tags.get(&r.to_string()).cloned(),
            };
            if let Some(id) = found {
                return self.image(self.record(&id)?, &tags);
            }
        }
        if reference.len() >= MIN_ID_PREFIX
            && reference
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            if let Some(image) = self.by_id_prefix(reference, reference, &tags)? {
                return Ok(image);
            }
        }
        parsed?;
        Err(not_found())
    }

    /// Moves an imported image's blobs into the store and writes its record.
    fn commit(&self, image: &ImportedImage) -> Result<(), StoreError> {
        let _blobs = self.lock("blobs")?;
        let blobs = image
            .layers
            .iter()
            .map(|l| &l.file)
            .chain([&image.config])
            .chain(image.manifest.as_ref());
        for file in blobs {
            self.put_blob(file)?;
        }
        let descriptor = |media_type: &str, file: &StagedFile| Descriptor {
            media_type: media_type.to_owned(),
            digest: file.digest.clone(),
            size: file.size,
            annotations: None,
            platform: None,
        };
        let mut record = ImageRecord {
            id: image.config.digest.clone(),
            config: descriptor(&image.config_media_type, &image.config),
            layers: image
                .layers
                .iter()
                .map(|l| LayerRecord {
                    media_type: l.media_type.clone(),
                    digest: l.file.digest.clone(),
                    size: l.file.size,
                    diff_id: l.diff_id.clone(),
                    unpacked_size: l.unpacked_size,
                })
                .collect(),
            manifest: image
                .manifest
                .as_ref()
                .map(|m| descriptor(spec::MEDIA_TYPE_OCI_MANIFEST, m)),
            index: None,
            repo_digests: Vec::new(),
            parent: None,
        };
        let path = self.record_path(&record.id);
        if let Ok(old) = self.read_json::<ImageRecord>(&path) {
            record.repo_digests = old.repo_digests;
            record.parent = old.parent;
        }
        self.write_json(&path, &record)
    }

    fn put_blob(&self, file: &StagedFile) -> Result<(), StoreError> {
        let dest = self.blob_path(&file.digest);
        if dest.exists() {
            return Ok(());
        }
        rename_durably(&file.path, &dest).map_err(|source| StoreError::Write { path: dest, source })
    }

    fn image(
        &self,
        record: ImageRecord,
        tags: &BTreeMap<String, Digest>,
    ) -> Result<Image, StoreError> {
        let config: ConfigFile = self.read_json(&self.blob_path(&record.id))?;
        let mut repo_tags: Vec<String> = tags
            .iter()
            .filter(|(_, id)| **id == record.id)
            .map(|(tag, _)| tag.clone())
            .collect();
        repo_tags.sort();
        Ok(Image {
            id: record.id.to_string(),
            repo_tags,
            repo_digests: record.repo_digests.clone(),
            config: config.config,
            created: config.created,
            architecture: config.architecture,
            os: config.os,
            author: config.author,
            comment: config.comment,
            container: config.container,
            container_config: config.container_config,
            size: record.layers.iter().map(|l| l.unpacked_size).sum(),
            record,
        })
    }

    fn by_id_prefix(
        &self,
        prefix: &str,
        reference: &str,
        tags: &BTreeMap<String, Digest>,
    ) -> Result<Option<Image>, StoreError> {
        if prefix.len() < MIN_ID_PREFIX {
            return Ok(None);
        }
        let mut matches: Vec<ImageRecord> = self
            .records()?
            .into_iter()
            .filter(|r| r.id.hex().starts_with(prefix))
            .collect();
        match matches.len() {
            0 => Ok(None),
            1 => Ok(Some(self.image(matches.remove(0), tags)?)),
            count => Err(StoreError::Ambiguous {
                reference: reference.to_owned(),
                count,
            }),
        }
    }

    /// The image whose manifest or config has `digest`.
    fn by_digest(&self, digest: &Digest) -> Result<Option<Digest>, StoreError> {
        Ok(self
            .records()?
            .into_iter()
            .find(|r| {
                let is = |d: &Option<Descriptor>| d.as_ref().is_some_and(|d| &d.digest == digest);
                &r.id == digest || is(&r.manifest) || is(&r.index)
            })
            .map(|r| r.id))
    }

    fn record(&self, id: &Digest) -> Result<ImageRecord, StoreError> {
        self.read_json(&self.record_path(id))
    }

    fn records(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let read_err = |source| StoreError::Read {
            path: dir.clone(),
            source,
        };
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                records.push(self.read_json(&path)?);
            }
        }
        Ok(records)
    }

    fn tags(&self) -> Result<BTreeMap<String, Digest>, StoreError> {
        let path = self.root.join(TAGS);
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        self.read_json(&path)
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, path: &Path) -> Result<T, StoreError> {
        let bytes = fs::read(path).map_err(|source| StoreError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        })
    }

    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
        write_atomic(path, &bytes).map_err(|source| StoreError::Write {
            path: path.to_owned(),
            source,
        })
    }

    fn lock(&self, name: &str) -> Result<Lock, StoreError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        Lock::exclusive(&path).map_err(|source| StoreError::Write { path, source })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn erofs_path(&self, id: &Digest) -> PathBuf {
        self.root.join("erofs").join(format!("{}.erofs", id.hex()))
    }

    fn record_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    /// Removes what interrupted loads and builds left: in tmp/ if it is old
    /// enough not to belong to one still running, on tmpfs if its process died.
    fn remove_stale_tmp(&self) {
        scratch::remove_orphans();
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TMP);
            if old {
                let path = entry.path();
                let removed = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
                if let Err(error) = removed {
                    tracing::warn!(path = %path.display(), %error, "cannot remove stale temporary file");
                }
            }
        }
        let _ = sync_dir(&self.root.join("tmp"));
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
