use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::digest::Digest;
use crate::testutil::{
    self, docker_files, empty_store as store, two_layer_image as image, TestImage,
};

fn load(store: &ImageStore, images: &[TestImage]) {
    let archive = testutil::archive(&docker_files(images, false));
    store.load(&archive[..], &mut |_| {}).unwrap();
}

/// An image with its own layer, created at `created`, carrying `labels`.
fn labelled(name: &'static str, created: &str, labels: serde_json::Value) -> TestImage {
    let layer = testutil::layer(&[("name", name.as_bytes())]);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Cmd": ["sh"], "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
    });
    TestImage {
        config: serde_json::to_vec(&config).unwrap(),
        layers: vec![layer],
        tags: vec![name],
    }
}

fn filters(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn deleted_ids(pruned: &Pruned) -> Vec<String> {
    pruned
        .removals
        .iter()
        .filter_map(|r| match r {
            Removal::Deleted(id) => Some(id.clone()),
            Removal::Untagged(_) => None,
        })
        .collect()
}

#[test]
fn prune_removes_dangling_images_and_with_all_the_unused_ones() {
    let (_dir, store) = store();
    load(&store, &[image("sh", vec!["busybox:latest"])]);
    let newer = image("ls", vec!["busybox:latest"]);
    let newer_id = newer.id().to_string();
    load(&store, &[newer, image("true", vec!["kept:1"])]);
    let stray = store
        .root()
        .join("erofs/0000000000000000000000000000000000000000000000000000000000000000.erofs");
    fs::write(&stray, b"old rootfs").unwrap();

    let old = image("sh", vec![]);
    let pruned = store
        .prune(&PruneFilter::default(), &BTreeSet::new())
        .unwrap();
    assert_eq!(
        pruned.removals,
        vec![
            Removal::Deleted(old.id().to_string()),
            Removal::Deleted(Digest::of(&old.layers[1]).to_string()),
        ]
    );
    assert!(pruned.space_reclaimed > 0);
    assert!(!stray.exists());
    assert_eq!(store.list().unwrap().len(), 2);

    let in_use = BTreeSet::from([newer_id.clone()]);
    let all = PruneFilter {
        all: true,
        ..Default::default()
    };
    let pruned = store.prune(&all, &in_use).unwrap();
    let kept = image("true", vec![]);
    assert_eq!(
        pruned.removals,
        vec![
            Removal::Untagged("kept:1".into()),
            Removal::Deleted(kept.id().to_string()),
            Removal::Deleted(Digest::of(&kept.layers[1]).to_string()),
        ]
    );
    let left = store.list().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, newer_id);
}

#[test]
fn until_prunes_only_images_created_before_it() {
    let (_dir, store) = store();
    let old = labelled("old", "2020-01-01T00:00:00Z", serde_json::json!({}));
    let new = labelled("new", "2024-06-01T00:00:00Z", serde_json::json!({}));
    let old_id = old.id().to_string();
    load(&store, &[old, new]);
    let now = at(1_735_689_600); // 2025-01-01
                                 // 2024-01-01: a year before now
    let filter = PruneFilter::from_docker(
        &filters(&[("dangling", &["false"]), ("until", &["8760h"])]),
        now,
    )
    .unwrap();
    assert_eq!(filter.until, Some(1_704_153_600));
    let pruned = store.prune(&filter, &BTreeSet::new()).unwrap();
    assert_eq!(deleted_ids(&pruned)[0], old_id);
    assert_eq!(deleted_ids(&pruned).len(), 2, "the image and its layer");
    assert!(store.resolve("new").is_ok());
}

#[test]
fn label_filters_choose_and_label_not_filters_keep() {
    let (_dir, store) = store();
    let a = labelled(
        "a",
        "2020-01-01T00:00:00Z",
        serde_json::json!({"tier": "web"}),
    );
    let b = labelled(
        "b",
        "2020-01-01T00:00:00Z",
        serde_json::json!({"tier": "db"}),
    );
    let c = labelled(
        "c",
        "2020-01-01T00:00:00Z",
        serde_json::json!({"keep": "yes"}),
    );
    load(&store, &[a, b, c]);
    let now = SystemTime::now();
    let prune = |pairs: &[(&str, &[&str])]| {
        let mut all = filters(pairs);
        all.insert("dangling".into(), vec!["false".into()]);
        let filter = PruneFilter::from_docker(&all, now).unwrap();
        store.prune(&filter, &BTreeSet::new()).unwrap()
    };
    let pruned = prune(&[("label", &["tier=web"])]);
    assert_eq!(pruned.removals[0], Removal::Untagged("a:latest".into()));
    assert!(store.resolve("b").is_ok() && store.resolve("c").is_ok());

    let pruned = prune(&[("label!", &["keep"])]);
    assert_eq!(pruned.removals[0], Removal::Untagged("b:latest".into()));
    assert!(store.resolve("c").is_ok());
    assert!(prune(&[("label", &["tier"])]).removals.is_empty());
}

#[test]
fn docker_filters_are_read_as_docker_reads_them() {
    let now = at(1_000_000);
    let read = |pairs: &[(&str, &[&str])]| PruneFilter::from_docker(&filters(pairs), now);
    assert_eq!(read(&[]).unwrap(), PruneFilter::default());
    assert!(read(&[("dangling", &["0"])]).unwrap().all);
    assert!(!read(&[("dangling", &["True"])]).unwrap().all);
    assert_eq!(
        read(&[("dangling", &["maybe"])]),
        Err(PruneFilterError::Dangling("maybe".into()))
    );
    assert!(read(&[("dangling", &["true", "false"])]).is_err());
    assert_eq!(
        read(&[("reference", &["x"])]),
        Err(PruneFilterError::UnknownKey("reference".into()))
    );
    assert_eq!(
        read(&[("until", &["1h", "2h"])]),
        Err(PruneFilterError::SeveralUntil)
    );
    let until = |value: &str| read(&[("until", &[value])]).map(|f| f.until.unwrap());
    assert_eq!(until("1h30m").unwrap(), 1_000_000 - 5400);
    assert_eq!(until("500000").unwrap(), 500_000);
    assert_eq!(until("500000.25").unwrap(), 500_000);
    assert_eq!(until("0").unwrap(), 0);
    assert_eq!(until("2024-01-01").unwrap(), 1_704_067_200);
    assert_eq!(until("2024-01-01T01:00:00").unwrap(), 1_704_070_800);
    assert_eq!(until("2024-01-01T01:00:00+01:00").unwrap(), 1_704_067_200);
    assert!(until("yesterday").is_err());
    assert!(until("10x").is_err());
    let labels = read(&[("label", &["a", "b=c"]), ("label!", &["d=e"])]).unwrap();
    assert_eq!(
        labels.labels,
        vec![LabelFilter::parse("a"), LabelFilter::parse("b=c")]
    );
    assert_eq!(labels.without_labels[0].value.as_deref(), Some("e"));
}

#[test]
fn go_durations_read_as_go_reads_them() {
    assert_eq!(go_duration("0"), Some(0));
    assert_eq!(go_duration("300ms"), Some(300_000_000));
    assert_eq!(go_duration("-1.5h"), Some(-5_400_000_000_000));
    assert_eq!(go_duration("2h45m"), Some(9_900_000_000_000));
    assert_eq!(go_duration("1µs1ns"), Some(1001));
    assert_eq!(go_duration(".5s"), Some(500_000_000));
    for bad in ["", "-", "1", "h", "1d", "1..2s", "1h-2m", "s1"] {
        assert_eq!(go_duration(bad), None, "{bad}");
    }
}

proptest! {
    #[test]
    fn go_durations_sum_their_parts(h in 0u32..100_000, m in 0u32..1000, s in 0u32..1000) {
        let text = format!("{h}h{m}m{s}s");
        let want = (i128::from(h) * 3600 + i128::from(m) * 60 + i128::from(s)) * 1_000_000_000;
        prop_assert_eq!(go_duration(&text), Some(want));
    }

    #[test]
    fn go_duration_never_panics(text in "\\PC{0,12}") {
        let _ = go_duration(&text);
    }
}
