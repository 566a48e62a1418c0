use std::collections::HashMap;
use std::io::Read;

use super::*;
use crate::testutil::{self, docker_files, empty_store, two_layer_image as image, TestImage};

fn loaded(images: &[TestImage]) -> (tempfile::TempDir, ImageStore) {
    let (dir, store) = empty_store();
    let archive = testutil::archive(&docker_files(images, false));
    store.load(&archive[..], &mut |_| {}).unwrap();
    (dir, store)
}

fn saved(store: &ImageStore, names: &[&str], format: ExportFormat) -> Vec<u8> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let items = resolve(store, &names).unwrap();
    let mut out = Vec::new();
    save(store, &items, format, &mut out).unwrap();
    out
}

fn entries(archive: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut tar = tar::Archive::new(archive);
    tar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (e.path().unwrap().display().to_string(), bytes)
        })
        .collect()
}

#[test]
fn a_saved_archive_loads_back_with_the_same_ids_and_tags() {
    let (_a, store) = loaded(&[
        image("sh", vec!["busybox:latest"]),
        image("ls", vec!["ls:1"]),
    ]);
    let archive = saved(&store, &["busybox", "ls:1"], ExportFormat::Docker);
    let (_b, other) = empty_store();
    let loaded = other.load(&archive[..], &mut |_| {}).unwrap();
    let mut ids: Vec<_> = loaded.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    let mut expected = vec![
        image("sh", vec![]).id().to_string(),
        image("ls", vec![]).id().to_string(),
    ];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        other.resolve("busybox").unwrap().id,
        image("sh", vec![]).id().to_string()
    );
    assert_eq!(
        other.resolve("ls:1").unwrap().id,
        image("ls", vec![]).id().to_string()
    );
}

#[test]
fn a_docker_archive_names_configs_and_layers_and_shares_blobs() {
    let (_a, store) = loaded(&[
        image("sh", vec!["busybox:latest"]),
        image("ls", vec!["ls:1"]),
    ]);
    let files = entries(&saved(&store, &["busybox", "ls:1"], ExportFormat::Docker));
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let first = &manifest[0];
    assert_eq!(first["RepoTags"], serde_json::json!(["busybox:latest"]));
    let config = first["Config"].as_str().unwrap();
    assert_eq!(
        config,
        format!("blobs/sha256/{}", image("sh", vec![]).id().hex())
    );
    assert_eq!(Digest::of(&files[config]), image("sh", vec![]).id());
    for layer in first["Layers"].as_array().unwrap() {
        assert!(files.contains_key(layer.as_str().unwrap()), "{layer}");
    }
    // two configs, three layers (one shared), two manifests
    let blobs = files.keys().filter(|k| k.starts_with("blobs/")).count();
    assert_eq!(blobs, 7);
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"][ANNOTATION_CONTAINERD_NAME],
        "docker.io/library/busybox:latest"
    );
    assert!(files.contains_key("oci-layout"));
}

#[test]
fn an_image_saved_by_id_has_no_tags() {
    let (_a, store) = loaded(&[image("sh", vec!["busybox:latest"])]);
    let id = image("sh", vec![]).id().to_string();
    let files = entries(&saved(&store, &[&id], ExportFormat::Docker));
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!([]));
}

#[test]
fn an_oci_archive_is_a_layout_that_loads_back() {
    let (_a, store) = loaded(&[image("sh", vec!["busybox:latest"])]);
    let archive = saved(&store, &["busybox"], ExportFormat::Oci);
    assert!(!entries(&archive).contains_key("manifest.json"));
    let (_b, other) = empty_store();
    other.load(&archive[..], &mut |_| {}).unwrap();
    assert_eq!(
        other.resolve("busybox").unwrap().id,
        image("sh", vec![]).id().to_string()
    );
}
