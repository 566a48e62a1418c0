use std::fs;
use std::path::PathBuf;

use super::*;
use crate::testutil::{self, docker_files, empty_store, layer, two_layer_image};

/// Writes `bytes` as a layer file in the store's staging directory.
fn staged(store: &ImageStore, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = store.staging_dir("test-").unwrap();
    let path = dir.path().join("layer.tar");
    fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn new_image(cmd: &str) -> NewImage {
    NewImage {
        config: ImageConfig {
            cmd: Some(vec![cmd.to_owned()]),
            env: vec!["PATH=/bin".into()],
            ..Default::default()
        },
        created: "2025-01-02T03:04:05Z".into(),
        created_by: "sh -c make".into(),
        comment: "made by a test".into(),
        author: "Tester".into(),
        container: None,
    }
}

fn raw_config(store: &ImageStore, id: &Digest) -> Value {
    serde_json::from_slice(&store.read_blob(id).unwrap()).unwrap()
}

#[test]
fn a_commit_stacks_one_layer_on_the_parents_and_applies_it_with_whiteouts() {
    let (_dir, store) = empty_store();
    let archive = testutil::archive(&docker_files(&[two_layer_image("sh", vec!["x:1"])], false));
    store.load(&archive[..], &mut |_| {}).unwrap();
    let parent = store.resolve("x:1").unwrap();
    let changes = layer(&[("etc/", b""), ("etc/.wh.passwd", b""), ("new", b"made")]);
    let (_staging, path) = staged(&store, &changes);
    let mut new = new_image("/new");
    new.container = Some(("c0ffee".into(), serde_json::json!({"Image": "x:1"})));
    let id = store.create_image(Some(&parent), &path, &new).unwrap();

    let image = store.resolve(&id.to_string()).unwrap();
    // Where it came from, as docker's inspect shows a commit.
    assert_eq!(image.record.parent.as_ref(), Some(&parent.record.id));
    assert_eq!(image.container.as_deref(), Some("c0ffee"));
    assert_eq!(image.container_config.as_ref().unwrap()["Image"], "x:1");
    assert_eq!(image.record.layers.len(), 3);
    assert_eq!(image.record.layers[2].diff_id, Digest::of(&changes));
    assert_eq!(image.config.cmd, Some(vec!["/new".to_owned()]));
    assert_eq!(image.author.as_deref(), Some("Tester"));
    assert_eq!(image.comment.as_deref(), Some("made by a test"));
    assert_eq!(image.architecture, parent.architecture);
    let config = raw_config(&store, &id);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);
    let history = store.history(&image).unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].created_by, "sh -c make");
    assert!(history[0].layer && history[0].size == 4);

    let root = tempfile::tempdir().unwrap();
    store.flatten(&image.record, root.path()).unwrap();
    assert_eq!(fs::read_to_string(root.path().join("new")).unwrap(), "made");
    assert!(root.path().join("bin/sh").exists());
    assert!(
        !root.path().join("etc/passwd").exists(),
        "the whiteout applies"
    );
}

#[test]
fn config_keys_hull_does_not_know_stay_and_removed_ones_go() {
    let (_dir, store) = empty_store();
    let base = layer(&[("a", b"a")]);
    let config = serde_json::to_vec(&json!({
        "architecture": "arm64", "os": "linux",
        "config": {"Cmd": ["old"], "Entrypoint": ["/e"], "Healthcheck": {"Test": ["NONE"]}},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&base).to_string()]},
    }))
    .unwrap();
    let image = testutil::TestImage {
        config,
        layers: vec![base],
        tags: vec!["h:1"],
    };
    let archive = testutil::archive(&docker_files(&[image], false));
    store.load(&archive[..], &mut |_| {}).unwrap();
    let parent = store.resolve("h:1").unwrap();
    let (_staging, path) = staged(&store, &layer(&[("b", b"b")]));
    let id = store
        .create_image(Some(&parent), &path, &new_image("/new"))
        .unwrap();
    let config = raw_config(&store, &id);
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["config"]["Healthcheck"]["Test"][0], "NONE");
    assert_eq!(config["config"]["Cmd"][0], "/new");
    assert!(config["config"].get("Entrypoint").is_none());
    // No history in the parent: one step per layer, then the new one.
    assert_eq!(config["history"].as_array().unwrap().len(), 2);
}

#[test]
fn an_import_is_one_layer_of_the_hosts_platform_as_sent() {
    let (_dir, store) = empty_store();
    let tar = layer(&[("bin/", b""), ("bin/tool", b"#!")]);
    let zipped = crate::layer::tests::gzip(&tar);
    let (_staging, path) = staged(&store, &zipped);
    let id = store
        .create_image(None, &path, &new_image("/bin/tool"))
        .unwrap();
    let image = store.resolve(&id.to_string()).unwrap();
    assert_eq!(image.os, "linux");
    assert_eq!(image.architecture, crate::archive::host_architecture());
    let layer = &image.record.layers[0];
    assert_eq!(layer.digest, Digest::of(&zipped));
    assert_eq!(layer.diff_id, Digest::of(&tar));
    assert_eq!(layer.media_type, crate::spec::MEDIA_TYPE_LAYER_GZIP);
    assert_eq!(store.read_blob(&layer.digest).unwrap(), zipped);
}

#[test]
fn a_refused_layer_stores_nothing() {
    let (_dir, store) = empty_store();
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..9].copy_from_slice(b"../escape");
    header.set_size(0);
    header.set_cksum();
    let mut hostile = header.as_bytes().to_vec();
    hostile.resize(2048, 0);
    let (_staging, path) = staged(&store, &hostile);
    let err = store
        .create_image(None, &path, &new_image("x"))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Layer(CheckError::Parent(_))),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    let blobs = fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, 0);
}
