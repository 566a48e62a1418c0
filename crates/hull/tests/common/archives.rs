//! Image archives the tests build: the busybox one changed, or layered
//! from files of their own.

use std::path::{Path, PathBuf};

use super::busybox_archive;

/// A docker-archive made from the busybox one: the same layers, its config
/// changed by `edit`, tagged `tag`.
pub fn derived_archive(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    layered_archive(tag, None, edit)
}

/// [`derived_archive`] with one more layer on top: the tar `layer`.
pub fn layered_archive(
    tag: &str,
    layer: Option<Vec<u8>>,
    edit: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    use sha2::{Digest, Sha256};
    let source = busybox_archive();
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&source).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            files.insert(path, data);
        }
    }
    let mut manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&files[&config_name]).unwrap();
    edit(&mut config["config"]);
    if let Some(layer) = layer {
        let diff_id = hex::encode(Sha256::digest(&layer));
        let name = format!("{diff_id}/layer.tar");
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .unwrap()
            .push(format!("sha256:{diff_id}").into());
        manifest[0]["Layers"]
            .as_array_mut()
            .unwrap()
            .push(name.clone().into());
        files.insert(name, layer);
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let new_config_name = format!("{}.json", hex::encode(Sha256::digest(&config_bytes)));
    files.remove(&config_name);
    files.insert(new_config_name.clone(), config_bytes);
    manifest[0]["Config"] = new_config_name.into();
    manifest[0]["RepoTags"] = serde_json::json!([tag]);
    files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );

    let out = source.with_file_name(format!("{}.tar", tag.replace([':', '/'], "_")));
    write_tar(
        &out,
        files
            .iter()
            .map(|(name, data)| (name.as_str(), data.as_slice())),
    );
    out
}

/// Writes a tar of regular files, names taken as they are (even `../x`).
pub fn write_tar<'a>(out: &Path, files: impl Iterator<Item = (&'a str, &'a [u8])>) {
    let mut builder = tar::Builder::new(std::fs::File::create(out).unwrap());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_gnu_mut().unwrap().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.finish().unwrap();
}
