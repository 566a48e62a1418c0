//! Pulls of hostile images from the in-process registry: each is refused,
//! naming what passed which limit, and leaves the store as it was.

use std::path::Path;

use super::transfer_tests::{descriptor, pull_from, serve_image, FakeRegistry};
use super::PullError;
use crate::digest::Digest;
use crate::layer::tests::gzip;
use crate::layer::LayerError;
use crate::limits::{LimitError, MAX_MANIFEST};
use crate::spec::{MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST};
use crate::store::{CommitError, StoreError};
use crate::{testutil, ImageStore};

/// Serves `manifest` as `a/b:1.0` and `blobs`.
async fn registry_with(manifest: Vec<u8>, blobs: &[&[u8]]) -> std::sync::Arc<FakeRegistry> {
    let blobs = blobs
        .iter()
        .map(|b| (Digest::of(b).to_string(), b.to_vec()))
        .collect();
    serve_image(manifest, blobs).await
}

fn assert_store_empty(dir: &Path) {
    for sub in ["blobs/sha256", "images", "tmp", "erofs"] {
        let count = std::fs::read_dir(dir.join(sub)).unwrap().count();
        assert_eq!(count, 0, "{sub} is not empty");
    }
}

#[tokio::test]
async fn a_layer_header_bomb_is_refused_and_stores_nothing() {
    let tar = crate::unpack::hostile_tests::long_name_bomb(8 << 20);
    let layer = gzip(&tar);
    let config = testutil::config(std::slice::from_ref(&tar), "sh");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(MEDIA_TYPE_OCI_CONFIG, &config),
        "layers": [descriptor(MEDIA_TYPE_LAYER_GZIP, &layer)],
    }))
    .unwrap();
    let registry = registry_with(manifest, &[&config, &layer]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let mut limits = store.limits();
    limits.max_header_bytes = 1 << 20;
    store.set_limits(limits);

    let err = pull_from(&registry, &store).await.0.unwrap_err();
    let PullError::Store(StoreError::Commit(CommitError::Layer {
        layer: refused,
        source,
    })) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*refused, Digest::of(&layer));
    assert!(
        matches!(source, LayerError::Limit(LimitError::Header { limit }) if *limit == 1 << 20),
        "{source}"
    );
    assert_store_empty(dir.path());
}

#[tokio::test]
async fn manifests_and_configs_past_their_limits_are_refused_unread() {
    let mut huge = b"{\"schemaVersion\":2,\"pad\":\"".to_vec();
    huge.resize(MAX_MANIFEST as usize + 10, b'x');
    huge.extend_from_slice(b"\"}");
    let registry = registry_with(huge, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let err = pull_from(&registry, &store).await.0.unwrap_err();
    assert!(err.to_string().contains("is larger than"), "{err}");

    // A config said to be 1 GiB: refused before a byte of it is fetched.
    let mut config = descriptor(MEDIA_TYPE_OCI_CONFIG, b"{}");
    config["size"] = (1u64 << 30).into();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": config,
        "layers": [],
    }))
    .unwrap();
    let registry = registry_with(manifest, &[]).await;
    let err = pull_from(&registry, &store).await.0.unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Limit {
                source: LimitError::Document { .. },
                ..
            }
        ),
        "{err}"
    );
    let log = registry.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains("/blobs/")), "{log:?}");
    assert_store_empty(dir.path());
}
