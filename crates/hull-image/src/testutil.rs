//! Builders of small layers and archives for the crate's unit tests.

use serde_json::json;

use crate::digest::Digest;

/// A tar of regular files (and directories, for names ending in `/`).
pub fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        header.set_size(content.len() as u64);
        header.set_mtime(1_700_000_000);
        builder.append_data(&mut header, name, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

/// An image config whose diff_ids are those of the given uncompressed layers.
pub fn config(layers: &[Vec<u8>], cmd: &str) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": [cmd], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// A tar of (name, content) files in the given order.
pub fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        builder
            .append_data(&mut header, name, &content[..])
            .unwrap();
    }
    builder.into_inner().unwrap()
}

/// One image of a test archive: its config, its layer blobs (as stored: maybe
/// compressed) and its tags.
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub tags: Vec<&'static str>,
}

impl TestImage {
    /// An image of uncompressed `layers` running `cmd`.
    pub fn new(layers: Vec<Vec<u8>>, cmd: &str, tags: Vec<&'static str>) -> TestImage {
        TestImage {
            config: config(&layers, cmd),
            layers,
            tags,
        }
    }

    pub fn id(&self) -> Digest {
        Digest::of(&self.config)
    }
}

/// The files of a `docker save` archive, classic layout (`<id>/layer.tar`,
/// `<hex>.json`) or the newer one (`blobs/sha256/<hex>`).
pub fn docker_files(images: &[TestImage], blobs_layout: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut manifest = Vec::new();
    for image in images {
        let config_name = match blobs_layout {
            true => format!("blobs/sha256/{}", image.id().hex()),
            false => format!("{}.json", image.id().hex()),
        };
        files.push((config_name.clone(), image.config.clone()));
        let mut layer_names = Vec::new();
        for layer in &image.layers {
            let hex = Digest::of(layer).hex().to_owned();
            let name = match blobs_layout {
                true => format!("blobs/sha256/{hex}"),
                false => format!("{hex}/layer.tar"),
            };
            files.push((name.clone(), layer.clone()));
            layer_names.push(name);
        }
        manifest
            .push(json!({"Config": config_name, "RepoTags": image.tags, "Layers": layer_names}));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    files
}

/// The files of an OCI image layout holding `images`, tagged with the containerd annotation.
pub fn oci_files(images: &[TestImage], layer_media_type: &str) -> Vec<(String, Vec<u8>)> {
    let blob = |bytes: &[u8]| {
        (
            format!("blobs/sha256/{}", Digest::of(bytes).hex()),
            bytes.to_vec(),
        )
    };
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len()});
    let mut files = vec![(
        "oci-layout".to_owned(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut index = Vec::new();
    for image in images {
        files.push(blob(&image.config));
        files.extend(image.layers.iter().map(|l| blob(l)));
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": crate::spec::MEDIA_TYPE_OCI_MANIFEST,
            "config": descriptor(crate::spec::MEDIA_TYPE_OCI_CONFIG, &image.config),
            "layers": image.layers.iter().map(|l| descriptor(layer_media_type, l)).collect::<Vec<_>>(),
        }))
        .unwrap();
        files.push(blob(&manifest));
        for tag in &image.tags {
            let mut d = descriptor(crate::spec::MEDIA_TYPE_OCI_MANIFEST, &manifest);
            d["annotations"] = json!({
                crate::spec::ANNOTATION_CONTAINERD_NAME: tag,
                crate::spec::ANNOTATION_REF_NAME: "latest",
            });
            index.push(d);
        }
    }
    let index = json!({"schemaVersion": 2, "manifests": index});
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    files
}

/// A store in a fresh temp dir; keep the dir alive as long as the store.
pub fn empty_store() -> (tempfile::TempDir, crate::ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::ImageStore::open(&dir.path().join("images")).unwrap();
    (dir, store)
}

/// A two-layer image whose second layer differs by `cmd`, so images with
/// different commands share their first layer.
pub fn two_layer_image(cmd: &str, tags: Vec<&'static str>) -> TestImage {
    TestImage::new(
        vec![
            layer(&[("bin/", b""), ("bin/sh", b"#!")]),
            layer(&[("etc/", b""), ("etc/passwd", cmd.as_bytes())]),
        ],
        cmd,
        tags,
    )
}
