use std::collections::BTreeSet;
use std::fs;

use super::*;
use crate::store::PruneFilter;
use crate::testutil::{
    self, docker_files, empty_store as store, two_layer_image as image, TestImage,
};

fn load(store: &ImageStore, images: &[TestImage]) {
    let archive = testutil::archive(&docker_files(images, false));
    store.load(&archive[..], &mut |_| {}).unwrap();
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

fn blob_count(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn a_tag_names_the_same_image() {
    let (_dir, store) = store();
    load(&store, &[image("sh", vec!["busybox:latest"])]);
    let tag = store.tag("busybox", "127.0.0.1:5000/me/bb:v1").unwrap();
    assert_eq!(tag, "127.0.0.1:5000/me/bb:v1");
    let tagged = store.resolve("127.0.0.1:5000/me/bb:v1").unwrap();
    assert_eq!(tagged.id, store.resolve("busybox").unwrap().id);
    assert_eq!(
        tagged.repo_tags,
        vec![
            "127.0.0.1:5000/me/bb:v1",
            "docker.io/library/busybox:latest"
        ]
    );
    assert!(matches!(
        store.tag("busybox", &format!("x@{}", tagged.id)),
        Err(StoreError::Tag(TagError::DigestTarget(_)))
    ));
    assert!(matches!(
        store.tag("nothing", "x:1"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn removing_one_of_two_tags_only_untags() {
    let (_dir, store) = store();
    load(&store, &[image("sh", vec!["busybox:latest"])]);
    store.tag("busybox", "other:tag").unwrap();
    let removals = store.remove("other:tag", false, &none()).unwrap();
    assert_eq!(removals, vec![Removal::Untagged("other:tag".into())]);
    assert!(store.resolve("busybox").is_ok());
    assert!(store.resolve("other:tag").is_err());
}

#[test]
fn removing_the_last_tag_deletes_the_image_and_its_blobs() {
    let (_dir, store) = store();
    let busybox = image("sh", vec!["busybox:latest"]);
    let id = busybox.id();
    let layers: Vec<String> = busybox
        .layers
        .iter()
        .map(|l| Digest::of(l).to_string())
        .collect();
    load(&store, &[busybox]);
    let removals = store.remove("busybox", false, &none()).unwrap();
    assert_eq!(
        removals,
        vec![
            Removal::Untagged("busybox:latest".into()),
            Removal::Deleted(id.to_string()),
            Removal::Deleted(layers[1].clone()),
            Removal::Deleted(layers[0].clone()),
        ]
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(blob_count(&store), 0);
}

#[test]
fn an_id_with_several_tags_is_removed_only_when_forced() {
    let (_dir, store) = store();
    let busybox = image("sh", vec!["busybox:latest"]);
    let id = busybox.id();
    load(&store, &[busybox]);
    store.tag("busybox", "other:tag").unwrap();
    let err = store.remove(id.hex(), false, &none()).unwrap_err();
    assert!(err.to_string().contains("must be forced"), "{err}");
    let removals = store.remove(id.hex(), true, &none()).unwrap();
    assert_eq!(removals.len(), 5);
    assert_eq!(removals[2], Removal::Deleted(id.to_string()));
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn removing_an_image_keeps_blobs_another_image_uses() {
    let (_dir, store) = store();
    let a = image("sh", vec!["a:1"]);
    let b = image("ls", vec!["b:1"]);
    load(&store, &[a, b]);
    // one shared layer, a layer and a config each
    assert_eq!(blob_count(&store), 5);
    let removals = store.remove("a:1", false, &none()).unwrap();
    // only the layer a had of its own is reported, as docker reports it
    let only_a = Digest::of(&image("sh", vec![]).layers[1]).to_string();
    assert_eq!(removals[2..], [Removal::Deleted(only_a)]);
    assert_eq!(blob_count(&store), 3);
    let b = store.resolve("b:1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    store.flatten(&b.record, dir.path()).unwrap();
    assert_eq!(fs::read(dir.path().join("etc/passwd")).unwrap(), b"ls");
}

#[test]
fn an_image_in_use_is_only_untagged_and_only_when_forced() {
    let (_dir, store) = store();
    load(&store, &[image("sh", vec!["busybox:latest"])]);
    let image = store.resolve("busybox").unwrap();
    let in_use = BTreeSet::from([image.id.clone()]);
    let rootfs = store
        .root()
        .join(format!("erofs/{}.erofs", image.record.id.hex()));
    assert_eq!(store.rootfs_image(&rootfs), Some(image.id.clone()));

    let err = store.remove("busybox", false, &in_use).unwrap_err();
    assert!(
        err.to_string().contains("used by a running container"),
        "{err}"
    );
    let removals = store.remove("busybox", true, &in_use).unwrap();
    assert_eq!(removals, vec![Removal::Untagged("busybox:latest".into())]);
    assert_eq!(store.resolve(&image.id).unwrap().id, image.id);
    let all = PruneFilter {
        all: true,
        ..Default::default()
    };
    assert!(store.prune(&all, &in_use).unwrap().removals.is_empty());
}
