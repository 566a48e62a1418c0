//! OCI image-layout archives: index.json points at manifests (or nested
//! indexes), every blob lives under `blobs/sha256/<hex>`, tags come from annotations.

use serde::de::DeserializeOwned;

use super::{
    check_image_size, check_layer_count, normalize_tags, ArchiveError, ImportedImage, Staged,
    StagedFile,
};
use crate::spec::{
    ConfigFile, Descriptor, Index, Manifest, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME,
    LAYER_MEDIA_TYPES, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LIST,
    MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
};

const INDEX: &str = "index.json";
/// Nested indexes followed before giving up.
const MAX_DEPTH: usize = 4;

pub(super) fn images(
    staged: &Staged,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ImportedImage>, ArchiveError> {
    let (index, _): (Index, _) = staged.json(INDEX, "the archive", "OCI image index")?;
    index
        .manifests
        .iter()
        .map(|descriptor| {
            let tags = normalize_tags(&tags_of(descriptor), INDEX)?;
            let manifest = pick_manifest(staged, descriptor, INDEX, 0)?;
            image(staged, &manifest, tags, progress)
        })
        .collect()
}

/// The names an index entry gives its image: containerd's full name, else
/// the OCI ref name when it is a full reference rather than a bare tag.
fn tags_of(descriptor: &Descriptor) -> Vec<String> {
    let Some(annotations) = &descriptor.annotations else {
        return Vec::new();
    };
    if let Some(name) = annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return vec![name.clone()];
    }
    match annotations.get(ANNOTATION_REF_NAME) {
        Some(name) if name.contains([':', '/', '@']) => vec![name.clone()],
        Some(name) => {
            tracing::warn!(%name, "ignoring OCI ref name that names no repository");
            Vec::new()
        }
        None => Vec::new(),
    }
}

/// The staged blob a descriptor names, checked against its digest and size, parsed as JSON.
fn described<T: DeserializeOwned>(
    staged: &Staged,
    descriptor: &Descriptor,
    referrer: &str,
    what: &'static str,
) -> Result<(T, StagedFile), ArchiveError> {
    let name = blob_name(descriptor);
    let (value, file) = staged.json(&name, referrer, what)?;
    check_size(descriptor, file)?;
    Ok((value, file.clone()))
}

fn blob_name(descriptor: &Descriptor) -> String {
    format!("blobs/sha256/{}", descriptor.digest.hex())
}

fn check_size(descriptor: &Descriptor, file: &StagedFile) -> Result<(), ArchiveError> {
    if descriptor.size == file.size {
        Ok(())
    } else {
        Err(ArchiveError::SizeMismatch {
            digest: descriptor.digest.clone(),
            expected: descriptor.size,
            actual: file.size,
        })
    }
}

/// Follows nested indexes down to the image manifest for this host's platform.
fn pick_manifest(
    staged: &Staged,
    descriptor: &Descriptor,
    referrer: &str,
    depth: usize,
) -> Result<Descriptor, ArchiveError> {
    let media_type = descriptor.media_type.as_str();
    if media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST {
        return Ok(descriptor.clone());
    }
    if !(media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST)
        || depth >= MAX_DEPTH
    {
        return Err(ArchiveError::MediaType {
            media_type: media_type.to_owned(),
            digest: descriptor.digest.clone(),
        });
    }
    let (index, _): (Index, _) = described(staged, descriptor, referrer, "image index")?;
    let name = blob_name(descriptor);
    let arch = host_architecture();
    let chosen = index
        .manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or(match index.manifests.as_slice() {
            [only] => Some(only),
            _ => None,
        })
        .ok_or_else(|| ArchiveError::NoPlatform {
            index: name.clone(),
            platform: format!("linux/{arch}"),
        })?;
    pick_manifest(staged, chosen, &name, depth + 1)
}

pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn image(
    staged: &Staged,
    descriptor: &Descriptor,
    repo_tags: Vec<String>,
    progress: &mut dyn FnMut(&str),
) -> Result<ImportedImage, ArchiveError> {
    let (manifest, manifest_file): (Manifest, _) =
        described(staged, descriptor, INDEX, "image manifest")?;
    let manifest_name = blob_name(descriptor);
    let config_type = manifest.config.media_type.as_str();
    if config_type != MEDIA_TYPE_OCI_CONFIG && config_type != MEDIA_TYPE_DOCKER_CONFIG {
        return Err(ArchiveError::MediaType {
            media_type: config_type.to_owned(),
            digest: manifest.config.digest.clone(),
        });
    }
    let (config_file, config): (ConfigFile, _) =
        described(staged, &manifest.config, &manifest_name, "image config")?;
    check_layer_count(&config, &config_file, manifest.layers.len())?;
    let layers = manifest
        .layers
        .iter()
        .zip(&config_file.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
                return Err(ArchiveError::MediaType {
                    media_type: layer.media_type.clone(),
                    digest: layer.digest.clone(),
                });
            }
            progress(&format!("Loading layer {}", diff_id.short()));
            let mut imported = staged.layer(&blob_name(layer), &manifest_name, diff_id)?;
            check_size(layer, &imported.file)?;
            imported.media_type = layer.media_type.clone();
            Ok(imported)
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_image_size(staged, &config, &layers)?;
    Ok(ImportedImage {
        config,
        config_media_type: config_type.to_owned(),
        config_file,
        layers,
        repo_tags,
        manifest: Some(manifest_file),
    })
}
