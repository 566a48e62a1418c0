use super::*;
use crate::testutil::{self, docker_files, oci_files, TestImage};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("images")).unwrap();
    (dir, store)
}

fn load(store: &ImageStore, files: &[(String, Vec<u8>)]) -> Result<Vec<LoadedImage>, StoreError> {
    store.load(&testutil::archive(files)[..], &mut |_| {})
}

fn busybox(cmd: &str) -> TestImage {
    TestImage::new(
        vec![
            testutil::layer(&[("bin/", b""), ("bin/sh", b"#!")]),
            testutil::layer(&[("etc/", b""), ("etc/passwd", b"root:x:0:0")]),
        ],
        cmd,
        vec!["busybox:latest"],
    )
}

/// Every path under the store root with its size, to compare states.
fn tree(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            let name = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.push((name, if meta.is_dir() { 0 } else { meta.len() }));
        }
    }
    out.sort();
    out
}

#[test]
fn loaded_images_resolve_by_every_docker_form() {
    let (_dir, store) = store();
    let image = busybox("sh");
    let id = image.id();
    let loaded = load(&store, &docker_files(&[image], false)).unwrap();
    assert_eq!(
        loaded,
        vec![LoadedImage {
            id: id.to_string(),
            repo_tags: vec!["docker.io/library/busybox:latest".into()]
        }]
    );
    for reference in [
        "busybox".to_owned(),
        "busybox:latest".to_owned(),
        "docker.io/library/busybox:latest".to_owned(),
        id.to_string(),
        id.hex().to_owned(),
        id.hex()[..4].to_owned(),
        format!("sha256:{}", &id.hex()[..12]),
        format!("busybox@{id}"),
    ] {
        let image = store
            .resolve(&reference)
            .unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(image.id, id.to_string());
        assert_eq!(image.config.cmd, Some(vec!["sh".to_owned()]));
        assert_eq!(image.repo_tags, vec!["docker.io/library/busybox:latest"]);
    }
}

#[test]
fn unknown_references_are_not_found() {
    let (_dir, store) = store();
    let err = store.resolve("busybox").unwrap_err();
    assert_eq!(err.to_string(), "no such image: busybox:latest");
    let err = store.resolve("127.0.0.1:5000/x/y:t").unwrap_err();
    assert_eq!(err.to_string(), "no such image: 127.0.0.1:5000/x/y:t");
    assert!(matches!(
        store.resolve("Invalid Name"),
        Err(StoreError::Reference(_))
    ));
}

#[test]
fn a_reloaded_tag_moves_to_the_new_image() {
    let (_dir, store) = store();
    let old = busybox("sh");
    let new = busybox("ls");
    load(&store, &docker_files(&[old], false)).unwrap();
    load(&store, &docker_files(&[new], true)).unwrap();
    let resolved = store.resolve("busybox").unwrap();
    assert_eq!(resolved.id, busybox("ls").id().to_string());
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    let old = list
        .iter()
        .find(|s| s.id == busybox("sh").id().to_string())
        .unwrap();
    assert!(old.repo_tags.is_empty());
    assert_eq!(old.created.as_deref(), Some("2024-01-02T03:04:05Z"));
    assert_eq!(old.created_unix, Some(1_704_164_645));
    assert_eq!(old.size, 2 + 10);
}

#[test]
fn layers_shared_by_images_are_stored_once() {
    let (_dir, store) = store();
    load(&store, &docker_files(&[busybox("sh")], false)).unwrap();
    load(
        &store,
        &oci_files(&[busybox("ls")], spec::MEDIA_TYPE_LAYER_TAR),
    )
    .unwrap();
    let blobs = fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count();
    // two layers, two configs, one OCI manifest
    assert_eq!(blobs, 5);
}

#[test]
fn a_failed_load_leaves_the_store_as_it_was() {
    let (_dir, store) = store();
    load(&store, &docker_files(&[busybox("sh")], false)).unwrap();
    let before = tree(store.root());
    let mut bad = busybox("ls");
    bad.layers[1] = testutil::layer(&[("etc/passwd", b"tampered")]);
    let err = load(&store, &docker_files(&[busybox("true"), bad], false)).unwrap_err();
    assert!(matches!(
        err,
        StoreError::Archive(ArchiveError::DiffIdMismatch { .. })
    ));
    assert_eq!(tree(store.root()), before);
    assert_eq!(
        store.resolve("busybox").unwrap().id,
        busybox("sh").id().to_string()
    );
}

#[test]
fn oci_images_resolve_by_manifest_digest() {
    let (_dir, store) = store();
    load(
        &store,
        &oci_files(&[busybox("sh")], spec::MEDIA_TYPE_LAYER_TAR),
    )
    .unwrap();
    let image = store.resolve("busybox").unwrap();
    let manifest = image.record.manifest.clone().unwrap();
    let by_digest = store
        .resolve(&format!("busybox@{}", manifest.digest))
        .unwrap();
    assert_eq!(by_digest.id, image.id);
}

#[test]
fn records_keep_what_a_later_export_needs() {
    let (_dir, store) = store();
    let image = busybox("sh");
    let diff_ids: Vec<Digest> = image.layers.iter().map(|l| Digest::of(l)).collect();
    load(&store, &docker_files(&[image], false)).unwrap();
    let record = store.resolve("busybox").unwrap().record;
    assert_eq!(record.config.digest, record.id);
    let got: Vec<Digest> = record.layers.iter().map(|l| l.diff_id.clone()).collect();
    assert_eq!(got, diff_ids);
    for layer in &record.layers {
        assert!(store.blob_path(&layer.digest).exists());
    }
}

fn have(tool: &str) -> bool {
    Path::new("/usr/bin").join(tool).exists() || Path::new("/sbin").join(tool).exists()
}

#[test]
fn rootfs_is_built_once_and_shared_by_concurrent_callers() {
    if !have("mkfs.erofs") {
        eprintln!("mkfs.erofs not installed: skipping");
        return;
    }
    let (dir, store) = store();
    let mut image = busybox("sh");
    image.layers.push(testutil::layer(&[
        ("etc/.wh.passwd", b""),
        ("etc/group", b"root:x:0:"),
    ]));
    image.config = testutil::config(&image.layers, "sh");
    load(&store, &docker_files(&[image], false)).unwrap();
    let image = store.resolve("busybox").unwrap();
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| store.rootfs(&image).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(paths.windows(2).all(|w| w[0] == w[1]));
    let path = &paths[0];
    assert!(path.starts_with(store.root().join("erofs")));
    let built = fs::metadata(path).unwrap().modified().unwrap();
    assert_eq!(store.rootfs(&image).unwrap(), *path);
    assert_eq!(fs::metadata(path).unwrap().modified().unwrap(), built);
    assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);

    if have("fsck.erofs") {
        let out = dir.path().join("extract");
        let status = std::process::Command::new("fsck.erofs")
            .arg(format!("--extract={}", out.display()))
            .arg(path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        assert_eq!(fs::read_to_string(out.join("bin/sh")).unwrap(), "#!");
        assert_eq!(
            fs::read_to_string(out.join("etc/group")).unwrap(),
            "root:x:0:"
        );
        assert!(!out.join("etc/passwd").exists());
        assert!(!out.join("etc/.wh.passwd").exists());
    }
}

#[test]
fn a_layer_escaping_the_rootfs_fails_the_build_with_the_layer_named() {
    let (_dir, store) = store();
    let mut evil = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..4].copy_from_slice(b"../x");
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    evil.append(&h, &[][..]).unwrap();
    let evil = evil.into_inner().unwrap();
    let layer_digest = Digest::of(&evil);
    load(
        &store,
        &docker_files(&[TestImage::new(vec![evil], "sh", vec!["evil"])], false),
    )
    .unwrap();
    let image = store.resolve("evil").unwrap();
    let err = store.rootfs(&image).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot unpack layer {layer_digest}")
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, "entry '../x' escapes the rootfs");
    assert_eq!(fs::read_dir(store.root().join("erofs")).unwrap().count(), 0);
}

#[test]
fn import_stores_an_image_but_leaves_the_stores_tags_alone() {
    let (_dir, store) = store();
    let image = busybox("sh");
    let files = docker_files(std::slice::from_ref(&image), false);
    let imported = store
        .import(&testutil::archive(&files)[..], &mut |_| {})
        .unwrap();
    assert_eq!(imported[0].id, image.id().to_string());
    assert_eq!(imported[0].repo_tags, ["docker.io/library/busybox:latest"]);
    assert!(matches!(
        store.resolve("busybox"),
        Err(StoreError::NotFound(_))
    ));
    let found = store.resolve(&image.id().to_string()).unwrap();
    assert!(found.repo_tags.is_empty(), "{:?}", found.repo_tags);
}
