//! `docker save` archives, written as a stream.
//!
//! The archive is what docker 25 writes: a docker-archive (`manifest.json`
//! naming config and layer files) whose files are laid out as an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), so both docker
//! and OCI tools read it. Blobs go out as stored (layers stay compressed if
//! they were), which keeps every digest, and so every image id, unchanged.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Write};

use crate::digest::Digest;
use crate::reference;
use crate::registry::push::manifest_of;
use crate::spec::{
    Descriptor, DockerArchiveEntry, Index, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
    MEDIA_TYPE_OCI_INDEX,
};
use crate::store::{Image, ImageStore, StoreError};

/// Errors of writing an image archive.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read blob {digest} of the store")]
    Blob {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the image archive")]
    Write(#[source] io::Error),
}

/// Which kinds of archive to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A docker-archive that is also an OCI layout, like `docker save`.
    Docker,
    /// An OCI image layout only.
    Oci,
}

/// An image to save and the normalized tags to save it under.
#[derive(Clone, Debug)]
pub struct SaveItem {
    pub image: Image,
    pub tags: Vec<String>,
}

/// Resolves the names of `docker save`: a tag is saved under that tag, an id
/// or digest without tags; an image named twice is saved once.
pub fn resolve(store: &ImageStore, names: &[String]) -> Result<Vec<SaveItem>, StoreError> {
    let mut items: Vec<SaveItem> = Vec::new();
    for name in names {
        let image = store.resolve(name)?;
        let tag = reference::Reference::parse(name)
            .ok()
            .filter(|r| r.digest().is_none())
            .map(|r| r.with_default_tag().to_string())
            .filter(|t| image.repo_tags.contains(t));
        let item = match items.iter_mut().find(|i| i.image.id == image.id) {
            Some(item) => item,
            None => {
                items.push(SaveItem {
                    image,
                    tags: Vec::new(),
                });
                items.last_mut().expect("just pushed")
            }
        };
        if let Some(tag) = tag {
            if !item.tags.contains(&tag) {
                item.tags.push(tag);
            }
        }
    }
    Ok(items)
}

/// Writes `items` to `out` as a tar archive of `format`.
pub fn save(
    store: &ImageStore,
    items: &[SaveItem],
    format: ExportFormat,
    out: impl Write,
) -> Result<(), ExportError> {
    let mut tar = tar::Builder::new(out);
    let mut written = HashSet::new();
    let mut entries = Vec::new();
    let mut index = Vec::new();
    for item in items {
        let record = &item.image.record;
        let (media_type, manifest) = manifest_of(store, &item.image)?;
        let manifest_digest = Digest::of(&manifest);
        if written.insert(manifest_digest.clone()) {
            append(&mut tar, &blob_name(&manifest_digest), &manifest)?;
        }
        for digest in [&record.config.digest]
            .into_iter()
            .chain(record.layers.iter().map(|l| &l.digest))
        {
            if written.insert(digest.clone()) {
                append_blob(&mut tar, store, digest)?;
            }
        }
        let descriptor = |annotations| Descriptor {
            media_type: media_type.clone(),
            digest: manifest_digest.clone(),
            size: manifest.len() as u64,
            annotations,
            platform: None,
        };
        if item.tags.is_empty() {
            index.push(descriptor(None));
        }
        for tag in &item.tags {
            let tag_only = tag.rsplit_once(':').map_or("latest", |(_, t)| t);
            index.push(descriptor(Some(BTreeMap::from([
                (ANNOTATION_CONTAINERD_NAME.to_owned(), tag.clone()),
                (ANNOTATION_REF_NAME.to_owned(), tag_only.to_owned()),
            ]))));
        }
        entries.push(DockerArchiveEntry {
            config: blob_name(&record.config.digest),
            repo_tags: item.tags.iter().map(|t| reference::familiar(t)).collect(),
            layers: record.layers.iter().map(|l| blob_name(&l.digest)).collect(),
        });
    }
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
        manifests: index,
    };
    append(&mut tar, "index.json", &to_json(&index))?;
    append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if format == ExportFormat::Docker {
        append(&mut tar, "manifest.json", &to_json(&entries))?;
    }
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(ExportError::Write)
}

/// The archive's JSON documents, which always serialize.
fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("archive documents serialize")
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

fn header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append(tar: &mut tar::Builder<impl Write>, name: &str, bytes: &[u8]) -> Result<(), ExportError> {
    tar.append_data(&mut header(bytes.len() as u64), name, bytes)
        .map_err(ExportError::Write)
}

fn append_blob(
    tar: &mut tar::Builder<impl Write>,
    store: &ImageStore,
    digest: &Digest,
) -> Result<(), ExportError> {
    let blob_err = |source| ExportError::Blob {
        digest: digest.clone(),
        source,
    };
    let file = File::open(store.blob_file(digest)).map_err(blob_err)?;
    let size = file.metadata().map_err(blob_err)?.len();
    tar.append_data(&mut header(size), blob_name(digest), file)
        .map_err(ExportError::Write)
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
