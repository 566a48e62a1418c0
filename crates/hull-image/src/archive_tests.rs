use super::*;
use crate::layer::tests::gzip;
use crate::testutil::{self, docker_files, oci_files, TestImage};

fn import_files(files: &[(String, Vec<u8>)]) -> Result<Vec<ImportedImage>, ArchiveError> {
    let dir = tempfile::tempdir().unwrap();
    import(
        &testutil::archive(files)[..],
        dir.path(),
        &Limits::default(),
        &mut |_| {},
    )
}

fn busybox() -> TestImage {
    TestImage::new(
        vec![
            testutil::layer(&[("bin/", b""), ("bin/sh", b"#!")]),
            testutil::layer(&[("etc/passwd", b"root")]),
        ],
        "sh",
        vec!["busybox:latest"],
    )
}

#[test]
fn docker_archives_in_the_classic_layout_are_imported() {
    let image = busybox();
    let images = import_files(&docker_files(&[image], false)).unwrap();
    assert_eq!(images.len(), 1);
    let i = &images[0];
    assert_eq!(i.config.digest, busybox().id());
    assert_eq!(i.repo_tags, vec!["docker.io/library/busybox:latest"]);
    assert_eq!(i.config_file.config.cmd, Some(vec!["sh".to_owned()]));
    assert_eq!(i.layers.len(), 2);
    assert_eq!(i.layers[0].diff_id, i.config_file.rootfs.diff_ids[0]);
    assert_eq!(i.layers[0].media_type, crate::spec::MEDIA_TYPE_LAYER_TAR);
    assert_eq!(i.layers[0].unpacked_size, 2);
    assert!(i.manifest.is_none());
}

#[test]
fn docker_archives_with_blobs_are_imported() {
    let images = import_files(&docker_files(&[busybox()], true)).unwrap();
    assert_eq!(images[0].config.digest, busybox().id());
}

#[test]
fn compressed_layers_are_checked_against_uncompressed_diff_ids() {
    let tar = testutil::layer(&[("a", b"1")]);
    let mut image = TestImage::new(vec![tar.clone(), tar.clone()], "sh", vec!["x"]);
    image.layers = vec![gzip(&tar), zstd::encode_all(&tar[..], 3).unwrap()];
    let images = import_files(&docker_files(&[image], false)).unwrap();
    let layers = &images[0].layers;
    assert_eq!(layers[0].media_type, crate::spec::MEDIA_TYPE_LAYER_GZIP);
    assert_eq!(layers[1].media_type, crate::spec::MEDIA_TYPE_LAYER_ZSTD);
    assert_eq!(layers[0].diff_id, Digest::of(&tar));
    assert_ne!(layers[0].file.digest, layers[0].diff_id);
}

#[test]
fn a_layer_that_does_not_match_its_diff_id_is_rejected() {
    let mut image = busybox();
    image.layers[1] = testutil::layer(&[("etc/passwd", b"evil")]);
    let err = import_files(&docker_files(&[image], false)).unwrap_err();
    assert!(matches!(err, ArchiveError::DiffIdMismatch { .. }), "{err}");
    assert!(err.to_string().contains("/layer.tar"), "{err}");
}

#[test]
fn oci_layouts_are_imported_with_tags_from_annotations() {
    let images = import_files(&oci_files(&[busybox()], crate::spec::MEDIA_TYPE_LAYER_TAR)).unwrap();
    assert_eq!(
        images[0].repo_tags,
        vec!["docker.io/library/busybox:latest"]
    );
    assert_eq!(images[0].config.digest, busybox().id());
    assert!(images[0].manifest.is_some());
}

#[test]
fn an_image_listed_under_two_tags_is_imported_once() {
    let mut image = busybox();
    image.tags = vec!["a:1", "b:2"];
    let images = import_files(&oci_files(&[image], crate::spec::MEDIA_TYPE_LAYER_TAR)).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].repo_tags.len(), 2);
}

#[test]
fn an_oci_blob_whose_content_does_not_match_its_name_is_rejected() {
    let mut files = oci_files(&[busybox()], crate::spec::MEDIA_TYPE_LAYER_TAR);
    let layer_name = format!("blobs/sha256/{}", Digest::of(&busybox().layers[0]).hex());
    files
        .iter_mut()
        .find(|(n, _)| *n == layer_name)
        .unwrap()
        .1
        .push(0);
    let err = import_files(&files).unwrap_err();
    assert!(matches!(err, ArchiveError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer_name), "{err}");
}

#[test]
fn unsupported_layer_media_types_are_rejected() {
    let files = oci_files(
        &[busybox()],
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    );
    let err = import_files(&files).unwrap_err();
    assert!(matches!(err, ArchiveError::MediaType { .. }), "{err}");
}

#[test]
fn archives_without_a_manifest_or_index_are_rejected() {
    let err = import_files(&[("x".into(), b"y".to_vec())]).unwrap_err();
    assert!(matches!(err, ArchiveError::UnknownFormat), "{err}");
}

#[test]
fn a_manifest_naming_a_missing_file_is_rejected() {
    let mut files = docker_files(&[busybox()], false);
    files.retain(|(n, _)| !n.ends_with("layer.tar"));
    let err = import_files(&files).unwrap_err();
    assert!(matches!(err, ArchiveError::Missing { .. }), "{err}");
    assert!(
        err.to_string().starts_with("manifest.json refers to"),
        "{err}"
    );
}

#[test]
fn bad_json_names_the_file() {
    let files = vec![("manifest.json".to_owned(), b"[{".to_vec())];
    let err = import_files(&files).unwrap_err();
    assert_eq!(
        err.to_string(),
        "manifest.json is not a valid docker archive manifest"
    );
}

#[test]
fn truncated_archives_are_rejected() {
    let tar = testutil::archive(&docker_files(&[busybox()], false));
    let dir = tempfile::tempdir().unwrap();
    let err = import(
        &tar[..tar.len() / 2 + 100],
        dir.path(),
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, ArchiveError::Read(_) | ArchiveError::UnknownFormat),
        "{err}"
    );
}

#[test]
fn corrupt_layers_are_rejected() {
    let mut image = busybox();
    image.layers[0] = gzip(b"definitely not a tar stream, but long enough to be read as one");
    let err = import_files(&docker_files(&[image], false)).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::Layer { .. } | ArchiveError::DiffIdMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn gzip_compressed_archives_are_accepted() {
    let tar = testutil::archive(&docker_files(&[busybox()], false));
    let dir = tempfile::tempdir().unwrap();
    let images = import(&gzip(&tar)[..], dir.path(), &Limits::default(), &mut |_| {}).unwrap();
    assert_eq!(images.len(), 1);
}

#[test]
fn symlinked_layers_of_docker_archives_are_followed() {
    let image = busybox();
    let mut files = docker_files(&[image], false);
    let (name, _) = files
        .iter()
        .find(|(n, _)| n.ends_with("layer.tar"))
        .unwrap()
        .clone();
    let mut manifest: serde_json::Value = serde_json::from_slice(&files.last().unwrap().1).unwrap();
    manifest[0]["Layers"][0] = "dup/layer.tar".into();
    files.last_mut().unwrap().1 = serde_json::to_vec(&manifest).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    for (n, content) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, n, &content[..]).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(&mut h, "dup/layer.tar", format!("../{name}"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let images = import(
        &tar.into_inner().unwrap()[..],
        dir.path(),
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(images[0].layers.len(), 2);
}

#[test]
fn archive_symlinks_cannot_point_outside_the_archive() {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(&mut h, "manifest.json", "../../etc/passwd")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = import(
        &tar.into_inner().unwrap()[..],
        dir.path(),
        &Limits::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::EntryEscape { .. }), "{err}");
}

#[test]
fn nested_indexes_resolve_to_this_platforms_manifest() {
    let mut files = oci_files(&[busybox()], crate::spec::MEDIA_TYPE_LAYER_TAR);
    let (_, index) = files.pop().unwrap();
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let mut manifest = index["manifests"][0].clone();
    let annotations = manifest
        .as_object_mut()
        .unwrap()
        .remove("annotations")
        .unwrap();
    manifest["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    let mut other = manifest.clone();
    other["platform"] = serde_json::json!({"os": "linux", "architecture": "s390x"});
    other["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::spec::MEDIA_TYPE_OCI_INDEX,
        "manifests": [other, manifest],
    }))
    .unwrap();
    files.push((
        format!("blobs/sha256/{}", Digest::of(&nested).hex()),
        nested.clone(),
    ));
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": crate::spec::MEDIA_TYPE_OCI_INDEX,
        "digest": Digest::of(&nested).to_string(),
        "size": nested.len(),
        "annotations": annotations,
    }]});
    files.push(("index.json".into(), serde_json::to_vec(&top).unwrap()));
    if std::env::consts::ARCH == "x86_64" {
        let images = import_files(&files).unwrap();
        assert_eq!(images[0].config.digest, busybox().id());
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes_never_panic_the_importer(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let _ = import(&bytes[..], dir.path(), &Limits::default(), &mut |_| {});
    }

    #[test]
    fn damaging_any_byte_of_an_archive_is_caught_or_harmless(at in 0usize..100_000, value: u8) {
        let tar = testutil::archive(&docker_files(&[busybox()], false));
        let mut damaged = tar.clone();
        let at = at % damaged.len();
        damaged[at] = value;
        let dir = tempfile::tempdir().unwrap();
        if let Ok(images) = import(&damaged[..], dir.path(), &Limits::default(), &mut |_| {}) {
            // Damage in padding or unused header fields may pass; a layer never
            // passes with content other than its diff_id says.
            for image in images {
                for layer in &image.layers {
                    proptest::prop_assert_eq!(&layer.file.digest, &layer.diff_id);
                }
            }
        }
    }
}

#[test]
fn documents_past_their_limits_are_refused_unread() {
    let mut manifest = b"[".to_vec();
    manifest.resize(crate::limits::MAX_MANIFEST as usize + 1, b' ');
    manifest.push(b']');
    let err = import_files(&[("manifest.json".to_owned(), manifest)]).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit(LimitError::Document { .. })),
        "{err}"
    );
}

#[test]
fn archives_with_header_bombs_or_too_many_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = crate::unpack::hostile_tests::long_name_bomb(4 << 20);
    let err = import(&bomb[..], dir.path(), &Limits::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit(LimitError::Header { .. })),
        "{err}"
    );
    let long = crate::unpack::hostile_tests::long_name_bomb(1000);
    let err = import(&long[..], dir.path(), &Limits::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit(LimitError::Name { .. })),
        "{err}"
    );

    let files: Vec<(String, Vec<u8>)> = (0..=MAX_ARCHIVE_ENTRIES)
        .map(|i| (format!("f{i}"), Vec::new()))
        .collect();
    let err = import_files(&files).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Limit(LimitError::Entries { .. })),
        "{err}"
    );
}

#[test]
fn a_layer_bomb_in_an_archive_names_the_layer_and_leaves_the_store_unchanged() {
    let (dir, store) = testutil::empty_store();
    let listing = || {
        let mut names: Vec<_> = walk(&dir.path().join("images"));
        names.retain(|n| !n.contains("/locks/"));
        names.sort();
        names
    };
    let before = listing();
    let bomb = crate::unpack::hostile_tests::long_name_bomb(4 << 20);
    let mut limits = store.limits();
    limits.max_header_bytes = 64 << 10;
    store.set_limits(limits);
    let image = TestImage::new(vec![bomb.clone()], "sh", vec!["bomb:1"]);
    let archive = testutil::archive(&docker_files(&[image], true));
    let err = store.load(&archive[..], &mut |_| {}).unwrap_err();
    let message = hull_error_chain(&err);
    assert!(
        message.contains(&format!("layer {} ", Digest::of(&bomb))),
        "{message}"
    );
    assert!(message.contains("pass 65536 bytes"), "{message}");
    assert_eq!(listing(), before);
}

fn hull_error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}
