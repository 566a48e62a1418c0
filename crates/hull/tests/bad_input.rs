//! Bad input ends in one clear message, and loses nothing.

mod common;

use common::{daemon, stdout_of, text, Daemon};

fn image_ids(daemon: &Daemon) -> String {
    stdout_of(&daemon.hull(&["images", "-q", "--no-trunc"]))
}

#[test]
fn a_truncated_archive_is_refused_and_the_store_is_unchanged() {
    // A daemon of its own: other tests load images into the shared one.
    let daemon = &common::loaded_daemon(&[]);
    let before = image_ids(daemon);
    let whole = std::fs::read(common::busybox_archive()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let output = daemon.hull(&["load", "-i", truncated.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("hull: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert_eq!(image_ids(daemon), before);
}

#[test]
fn an_archive_that_is_not_an_image_is_refused() {
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("not-an-image.tar");
    common::write_tar(&archive, [("hello.txt", &b"hi"[..])].into_iter());
    let output = daemon.hull(&["load", "-i", archive.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("manifest.json") || stderr.contains("index.json"),
        "{stderr}"
    );
}

#[test]
fn a_layer_escaping_the_rootfs_writes_nothing_outside() {
    use sha2::{Digest, Sha256};
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let layer_path = dir.path().join("layer.tar");
    common::write_tar(
        &layer_path,
        [("../../../../../../tmp/hull-escape-proof", &b"x"[..])].into_iter(),
    );
    let layer = std::fs::read(&layer_path).unwrap();
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))
    .unwrap();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": ["escape:latest"], "Layers": ["layer/layer.tar"]}
    ]))
    .unwrap();
    let archive = dir.path().join("escape.tar");
    common::write_tar(
        &archive,
        [
            ("manifest.json", manifest.as_slice()),
            (config_name.as_str(), config.as_slice()),
            ("layer/layer.tar", layer.as_slice()),
        ]
        .into_iter(),
    );
    let _ = std::fs::remove_file("/tmp/hull-escape-proof");
    let loaded = daemon.hull(&["load", "-i", archive.to_str().unwrap()]);
    let ran = loaded
        .status
        .success()
        .then(|| daemon.hull(&["run", "--rm", "escape", "true"]));
    let failure = ran.as_ref().unwrap_or(&loaded);
    assert!(!failure.status.success(), "the escaping layer was accepted");
    let stderr = text(&failure.stderr);
    assert!(stderr.contains("escapes the rootfs"), "{stderr}");
    assert!(!std::path::Path::new("/tmp/hull-escape-proof").exists());
}

#[test]
fn a_missing_qemu_is_named_with_what_to_install() {
    let daemon = common::loaded_daemon(&[("HULL_QEMU", "/nonexistent/qemu-system-x86_64")]);
    let output = daemon.hull(&["run", "--rm", "busybox", "true"]);
    common::assert_fails(&output, 125, &["apt-get install qemu-system-x86"]);
    let leftovers = std::fs::read_dir(daemon.root.join("vms")).unwrap().count();
    assert_eq!(leftovers, 0, "a failed start left a VM directory behind");
}
