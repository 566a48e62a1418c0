//! Image archives: `docker save` tars and OCI image-layout tars.
//!
//! An archive is a stream whose entries may come in any order, so it is first
//! staged: every file is copied to a private directory while its sha256 is
//! computed. Then the JSON documents are read and every blob is checked against
//! the digest it is known by. Nothing reaches the store before all checks pass.

mod docker;
mod oci;
pub(crate) use oci::host_architecture;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::at::Dir;
use crate::digest::{is_sha256_hex, Digest, HashingReader};
use crate::fsutil::{copy, CopyError};
use crate::layer::{self, LayerError, LayerInfo};
use crate::limits::{
    check_disk, Guard, Guarded, GuardedEntries, LimitError, Limits, MAX_CONFIG, MAX_MANIFEST,
};
use crate::reference::{self, ReferenceError};
use crate::rootpath;
use crate::spec::ConfigFile;

/// Symlinks between archive entries followed before giving up.
const MAX_LINK_HOPS: usize = 16;
/// Entries of an archive: a few per image and layer in real ones.
const MAX_ARCHIVE_ENTRIES: u64 = 16_384;
/// Longest entry name or link target of an archive (`blobs/sha256/<hex>` is 78).
const MAX_ARCHIVE_NAME: usize = 512;

/// Errors of archive import.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read the image archive: it is truncated or not a tar stream")]
    Read(#[source] io::Error),
    #[error("cannot stage archive entry '{entry}'")]
    Stage {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("the archive has neither manifest.json (docker save) nor index.json (OCI layout)")]
    UnknownFormat,
    #[error("archive entry '{entry}' points outside the archive")]
    EntryEscape { entry: String },
    #[error("{file} is not a valid {what}")]
    Json {
        file: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{referrer} refers to '{file}', which is not in the archive")]
    Missing { file: String, referrer: String },
    #[error("blob '{file}' does not match its digest: expected {expected}, content is {actual}")]
    DigestMismatch {
        file: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("blob {digest} is {actual} bytes long, its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("layer {digest} ('{file}') is refused")]
    Layer {
        file: String,
        digest: Digest,
        #[source]
        source: LayerError,
    },
    #[error("the image archive is refused")]
    Limit(#[from] LimitError),
    #[error("image {image} is refused")]
    ImageLimit {
        image: Digest,
        #[source]
        source: LimitError,
    },
    #[error("layer '{file}' has uncompressed digest {actual}, but the image config's diff_id is {expected}")]
    DiffIdMismatch {
        file: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("image config {config} lists {diff_ids} diff_ids for {layers} layers")]
    LayerCount {
        config: Digest,
        diff_ids: usize,
        layers: usize,
    },
    #[error("unsupported media type '{media_type}' for {digest}")]
    MediaType { media_type: String, digest: Digest },
    #[error("index {index} has no manifest for {platform}")]
    NoPlatform { index: String, platform: String },
    #[error("invalid image name '{name}' in {file}")]
    Tag {
        name: String,
        file: String,
        #[source]
        source: ReferenceError,
    },
}

/// A file of the archive, copied to the staging directory.
#[derive(Clone, Debug)]
pub struct StagedFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// The files of an archive, by their cleaned names inside it.
pub struct Staged {
    files: HashMap<String, StagedFile>,
    links: HashMap<String, String>,
    limits: Limits,
    /// Free bytes where the archive was staged, once it was.
    available: u64,
}

/// A layer of an imported image, checked against the config's diff_id.
#[derive(Clone, Debug)]
pub struct ImportedLayer {
    pub file: StagedFile,
    pub media_type: String,
    pub diff_id: Digest,
    pub unpacked_size: u64,
}

/// An image found in an archive, every blob of it verified.
#[derive(Clone, Debug)]
pub struct ImportedImage {
    pub config: StagedFile,
    pub config_media_type: String,
    pub config_file: ConfigFile,
    pub layers: Vec<ImportedLayer>,
    /// Normalized tags, e.g. `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// Digest of the OCI manifest the image came with, if any.
    pub manifest: Option<StagedFile>,
}

/// Stages `archive` (optionally gzip or zstd compressed) into `dir` and reads the images in it.
pub fn import(
    archive: impl Read,
    dir: &Path,
    limits: &Limits,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ImportedImage>, ArchiveError> {
    let staged = Staged::read(archive, dir, limits)?;
    let images = if staged.get("manifest.json").is_some() {
        docker::images(&staged, progress)?
    } else if staged.get("index.json").is_some() {
        oci::images(&staged, progress)?
    } else {
        return Err(ArchiveError::UnknownFormat);
    };
    Ok(merge_duplicates(images))
}

/// One archive may list an image once per tag; keep it once with all its tags.
fn merge_duplicates(images: Vec<ImportedImage>) -> Vec<ImportedImage> {
    let mut merged: Vec<ImportedImage> = Vec::new();
    for image in images {
        match merged
            .iter_mut()
            .find(|m| m.config.digest == image.config.digest)
        {
            Some(m) => {
                for tag in image.repo_tags {
                    if !m.repo_tags.contains(&tag) {
                        m.repo_tags.push(tag);
                    }
                }
            }
            None => merged.push(image),
        }
    }
    merged
}

impl Staged {
    fn read(archive: impl Read, dir: &Path, limits: &Limits) -> Result<Staged, ArchiveError> {
        let stage_err = |entry: &str| {
            let entry = entry.to_owned();
            move |source| ArchiveError::Stage { entry, source }
        };
        let available = Dir::open(dir)
            .and_then(|d| d.available_bytes())
            .map_err(stage_err("."))?;
        // An archive holds compressed layers and a few documents: within the
        // unpacked limit, and within the disk it is staged on.
        let budget = limits.max_unpacked_bytes.min(available);
        let (_, archive) = layer::decompress(archive).map_err(ArchiveError::Read)?;
        let guard = Guard::new(*limits);
        let read_err = |e| match guard.tripped() {
            Some(limit) => ArchiveError::Limit(limit),
            None => ArchiveError::Read(e),
        };
        let mut tar = tar::Archive::new(Guarded::new(archive, guard.clone()));
        let mut staged = Staged {
            files: HashMap::new(),
            links: HashMap::new(),
            limits: *limits,
            available,
        };
        let entries = tar.entries().map_err(ArchiveError::Read)?;
        let mut entries = GuardedEntries::new(entries, guard.clone(), MAX_ARCHIVE_ENTRIES);
        let mut total = 0u64;
        for n in 0u64.. {
            let Some(mut entry) = entries.next_entry(read_err)? else {
                break;
            };
            let link_len = entry.link_name_bytes().map_or(0, |l| l.len());
            let len = entry.path_bytes().len().max(link_len);
            if len > MAX_ARCHIVE_NAME {
                return Err(ArchiveError::Limit(LimitError::Name { len }));
            }
            let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let name = clean_name(&raw_name, "").ok_or_else(|| ArchiveError::EntryEscape {
                entry: raw_name.clone(),
            })?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    total = total.saturating_add(entry.size());
                    if total > budget {
                        let limit = match budget == limits.max_unpacked_bytes {
                            true => LimitError::Unpacked { limit: budget },
                            false => LimitError::Disk {
                                needed: total,
                                available,
                                path: dir.to_owned(),
                            },
                        };
                        return Err(ArchiveError::Limit(limit));
                    }
                    let path = dir.join(n.to_string());
                    let file = stage_file(&mut entry, &path).map_err(|e| match e {
                        CopyError::Read(e) => read_err(e),
                        CopyError::Write(source) => stage_err(&raw_name)(source),
                    })?;
                    staged.files.insert(name, file);
                }
                kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    // Symlink targets are relative to the link's directory, hardlink targets to the archive.
                    let base = match kind {
                        tar::EntryType::Symlink => parent_of(&name),
                        _ => "",
                    };
                    let target =
                        clean_name(&target, base).ok_or_else(|| ArchiveError::EntryEscape {
                            entry: raw_name.clone(),
                        })?;
                    staged.links.insert(name, target);
                }
                _ => {}
            }
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(read_err)?;
        }
        Ok(staged)
    }

    /// The staged file named `name`, following links between entries.
    pub fn get(&self, name: &str) -> Option<&StagedFile> {
        let mut name = clean_name(name, "")?;
        for _ in 0..MAX_LINK_HOPS {
            if let Some(file) = self.files.get(&name) {
                return Some(file);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    /// The staged file `name`, which `referrer` needs; if the name says which
    /// digest the content has (`blobs/sha256/<hex>`, `<hex>.json`), it is checked.
    fn blob(&self, name: &str, referrer: &str) -> Result<&StagedFile, ArchiveError> {
        let file = self.get(name).ok_or_else(|| ArchiveError::Missing {
            file: name.to_owned(),
            referrer: referrer.to_owned(),
        })?;
        if let Some(expected) = digest_in_name(name) {
            if expected != file.digest {
                return Err(ArchiveError::DigestMismatch {
                    file: name.to_owned(),
                    expected,
                    actual: file.digest.clone(),
                });
            }
        }
        Ok(file)
    }

    /// Parses the staged JSON document `name`.
    fn json<T: DeserializeOwned>(
        &self,
        name: &str,
        referrer: &str,
        what: &'static str,
    ) -> Result<(T, &StagedFile), ArchiveError> {
        let file = self.blob(name, referrer)?;
        let limit = match what {
            "image config" => MAX_CONFIG,
            _ => MAX_MANIFEST,
        };
        if file.size > limit {
            return Err(ArchiveError::Limit(LimitError::Document { what, limit }));
        }
        let bytes = fs::read(&file.path).map_err(|source| ArchiveError::Stage {
            entry: name.to_owned(),
            source,
        })?;
        let value = serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Json {
            file: name.to_owned(),
            what,
            source,
        })?;
        Ok((value, file))
    }

    /// Reads a layer through, checking it is a valid tar stream with the expected diff_id.
    fn layer(
        &self,
        name: &str,
        referrer: &str,
        diff_id: &Digest,
    ) -> Result<ImportedLayer, ArchiveError> {
        let file = self.blob(name, referrer)?;
        let refused = |source| ArchiveError::Layer {
            file: name.to_owned(),
            digest: file.digest.clone(),
            source,
        };
        let blob = File::open(&file.path).map_err(|e| refused(LayerError::Read(e)))?;
        let info: LayerInfo = layer::inspect(blob, &self.limits).map_err(refused)?;
        if &info.diff_id != diff_id {
            return Err(ArchiveError::DiffIdMismatch {
                file: name.to_owned(),
                expected: diff_id.clone(),
                actual: info.diff_id,
            });
        }
        Ok(ImportedLayer {
            file: file.clone(),
            media_type: info.compression.media_type().to_owned(),
            diff_id: info.diff_id,
            unpacked_size: info.unpacked_size,
        })
    }
}

/// Checks that an image's layers together fit the limit and the disk.
fn check_image_size(
    staged: &Staged,
    config: &StagedFile,
    layers: &[ImportedLayer],
) -> Result<(), ArchiveError> {
    let size = layers
        .iter()
        .fold(0u64, |sum, l| sum.saturating_add(l.unpacked_size));
    let refused = |source| ArchiveError::ImageLimit {
        image: config.digest.clone(),
        source,
    };
    if size > staged.limits.max_unpacked_bytes {
        return Err(refused(LimitError::Unpacked {
            limit: staged.limits.max_unpacked_bytes,
        }));
    }
    let dir = config.path.parent().unwrap_or(Path::new(".")).to_owned();
    check_disk(size, staged.available, dir).map_err(refused)
}

/// Normalizes a list of image names found in `file`.
fn normalize_tags<'a>(
    names: impl IntoIterator<Item = &'a String>,
    file: &str,
) -> Result<Vec<String>, ArchiveError> {
    names
        .into_iter()
        .map(|name| {
            reference::normalize_tag(name).map_err(|source| ArchiveError::Tag {
                name: name.clone(),
                file: file.to_owned(),
                source,
            })
        })
        .collect()
}

/// A layer count that matches the config's diff_ids, or the error saying it does not.
fn check_layer_count(
    config: &StagedFile,
    file: &ConfigFile,
    layers: usize,
) -> Result<(), ArchiveError> {
    let diff_ids = file.rootfs.diff_ids.len();
    if diff_ids == layers {
        Ok(())
    } else {
        Err(ArchiveError::LayerCount {
            config: config.digest.clone(),
            diff_ids,
            layers,
        })
    }
}

/// The digest an archive file name promises: `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_name(name: &str) -> Option<Digest> {
    let name = clean_name(name, "")?;
    let hex = name
        .strip_prefix("blobs/sha256/")
        .or_else(|| name.strip_suffix(".json"))?;
    is_sha256_hex(hex)
        .then(|| Digest::from_hex(hex).ok())
        .flatten()
}

fn parent_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// Cleans an archive path relative to `base`; `None` if it climbs out of the archive.
fn clean_name(name: &str, base: &str) -> Option<String> {
    let joined = if name.starts_with('/') || base.is_empty() {
        PathBuf::from(name)
    } else {
        Path::new(base).join(name)
    };
    let clean = rootpath::clean(&joined)?;
    Some(clean.to_string_lossy().into_owned())
}

fn stage_file(content: &mut impl Read, path: &Path) -> Result<StagedFile, CopyError> {
    let mut out = File::create(path).map_err(CopyError::Write)?;
    let mut hashing = HashingReader::new(content);
    copy(&mut hashing, &mut out)?;
    let (digest, size) = hashing.finish().map_err(CopyError::Read)?;
    Ok(StagedFile {
        path: path.to_owned(),
        digest,
        size,
    })
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
