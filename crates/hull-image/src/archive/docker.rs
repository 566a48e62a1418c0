//! `docker save` archives: manifest.json lists, per image, its config file,
//! its layer files (`<id>/layer.tar` or `blobs/sha256/<hex>`) and its tags.

use super::{
    check_image_size, check_layer_count, normalize_tags, ArchiveError, ImportedImage, Staged,
};
use crate::spec::{ConfigFile, DockerArchiveEntry, MEDIA_TYPE_DOCKER_CONFIG};

const MANIFEST: &str = "manifest.json";

pub(super) fn images(
    staged: &Staged,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ImportedImage>, ArchiveError> {
    let (entries, _): (Vec<DockerArchiveEntry>, _) =
        staged.json(MANIFEST, "the archive", "docker archive manifest")?;
    entries
        .iter()
        .map(|entry| image(staged, entry, progress))
        .collect()
}

fn image(
    staged: &Staged,
    entry: &DockerArchiveEntry,
    progress: &mut dyn FnMut(&str),
) -> Result<ImportedImage, ArchiveError> {
    let (config_file, config): (ConfigFile, _) =
        staged.json(&entry.config, MANIFEST, "image config")?;
    check_layer_count(config, &config_file, entry.layers.len())?;
    let layers = entry
        .layers
        .iter()
        .zip(&config_file.rootfs.diff_ids)
        .map(|(name, diff_id)| {
            progress(&format!("Loading layer {}", diff_id.short()));
            staged.layer(name, MANIFEST, diff_id)
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_image_size(staged, config, &layers)?;
    Ok(ImportedImage {
        config: config.clone(),
        config_media_type: MEDIA_TYPE_DOCKER_CONFIG.to_owned(),
        layers,
        repo_tags: normalize_tags(&entry.repo_tags, MANIFEST)?,
        manifest: None,
        config_file,
    })
}
