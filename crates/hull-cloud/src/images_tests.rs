use super::*;
use std::path::Path;

fn store(dir: &Path) -> Store {
    let store = Store::open(&dir.join("cloud.db"), &dir.join("secrets.key")).unwrap();
    store.create_tenant("acme", Quota::default()).unwrap();
    store.create_tenant("beta", Quota::default()).unwrap();
    store
}

fn id(fill: char) -> String {
    format!("sha256:{}", fill.to_string().repeat(64))
}

fn tag(name: &str) -> (RefKind, String) {
    (RefKind::Tag, name.to_owned())
}

const BUSYBOX: &str = "docker.io/library/busybox:latest";

#[test]
fn another_tenants_image_is_not_found_by_name_id_prefix_or_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let secret = format!("127.0.0.1:5000/private@{}", id('d'));
    store
        .record_tenant_image(
            "acme",
            &id('a'),
            &[tag(BUSYBOX), (RefKind::Digest, secret.clone())],
        )
        .unwrap();

    assert_eq!(
        store.tenant_image_named("acme", BUSYBOX).unwrap(),
        Some(id('a'))
    );
    assert_eq!(store.tenant_image_named("beta", BUSYBOX).unwrap(), None);
    assert_eq!(store.tenant_image_named("beta", &secret).unwrap(), None);
    assert_eq!(store.tenant_image_named("beta", &id('a')).unwrap(), None);
    assert!(!store.tenant_holds_image("beta", &id('a')).unwrap());
    for prefix in ["aaaa", &"a".repeat(64)] {
        assert_eq!(
            store.tenant_image_by_id_prefix("acme", prefix).unwrap(),
            IdMatch::One(id('a'))
        );
        assert_eq!(
            store.tenant_image_by_id_prefix("beta", prefix).unwrap(),
            IdMatch::None
        );
    }
    assert!(store.tenant_images("beta").unwrap().is_empty());
    assert_eq!(store.tenant_image_count("beta").unwrap(), 0);
}

#[test]
fn odd_names_and_prefixes_match_only_their_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store
        .record_tenant_image("acme", &id('a'), &[tag(BUSYBOX)])
        .unwrap();
    // Patterns, SQL and prefixes that are too short or not hex never match.
    for prefix in [
        "%",
        "_",
        "____",
        "a%",
        "aaa",
        "AAAA",
        "' OR 1=1 --",
        "",
        "sha2",
    ] {
        assert_eq!(
            store.tenant_image_by_id_prefix("acme", prefix).unwrap(),
            IdMatch::None,
            "{prefix:?}"
        );
    }
    for name in [
        "%",
        "docker.io/library/busybox:%",
        "docker.io/library/busybox:latest\0",
        "DOCKER.IO/library/busybox:latest",
        "' OR '1'='1",
    ] {
        assert_eq!(
            store.tenant_image_named("acme", name).unwrap(),
            None,
            "{name:?}"
        );
    }
    // A tenant named like a pattern sees nothing of others.
    assert_eq!(store.tenant_image_named("%", BUSYBOX).unwrap(), None);
    // Odd bytes are stored and found as they are.
    let odd = "127.0.0.1:5000/a'b\"c%_:x";
    store
        .record_tenant_image("acme", &id('a'), &[tag(odd)])
        .unwrap();
    assert_eq!(
        store.tenant_image_named("acme", odd).unwrap(),
        Some(id('a'))
    );
    // Only a real image id is recorded.
    for bad in ["sha256:%", "sha256:AAAA", "aaaa", &format!("{}x", id('a'))] {
        assert!(matches!(
            store.record_tenant_image("acme", bad, &[tag("x:1")]),
            Err(ImagesError::BadId(_))
        ));
    }
}

#[test]
fn an_ambiguous_prefix_is_counted_among_the_tenants_own_images_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (one, two) = (
        format!("sha256:abcd{}", "1".repeat(60)),
        format!("sha256:abcd{}", "2".repeat(60)),
    );
    store.record_tenant_image("acme", &one, &[]).unwrap();
    store.record_tenant_image("beta", &two, &[]).unwrap();
    assert_eq!(
        store.tenant_image_by_id_prefix("acme", "abcd").unwrap(),
        IdMatch::One(one.clone())
    );
    store.record_tenant_image("acme", &two, &[]).unwrap();
    assert_eq!(
        store.tenant_image_by_id_prefix("acme", "abcd").unwrap(),
        IdMatch::Many(2)
    );
}

#[test]
fn the_images_quota_refuses_a_new_image_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let quota = Quota::default().with_overrides("images=1").unwrap();
    store.set_quota("acme", quota).unwrap();
    store
        .record_tenant_image("acme", &id('a'), &[tag(BUSYBOX)])
        .unwrap();
    // More names of an image it keeps are no new image.
    store
        .record_tenant_image("acme", &id('a'), &[tag("docker.io/library/mine:1")])
        .unwrap();
    let refused = store
        .record_tenant_image("acme", &id('b'), &[tag("docker.io/library/other:1")])
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ImagesError::Quota {
                used: 1,
                limit: 1,
                ..
            }
        ),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("images in use 1") && message.contains("limit 1"),
        "{message}"
    );
    assert_eq!(
        store
            .tenant_image_named("acme", "docker.io/library/other:1")
            .unwrap(),
        None
    );
    assert!(!store.tenant_holds_image("acme", &id('b')).unwrap());
    // Another tenant's use does not count.
    store.record_tenant_image("beta", &id('b'), &[]).unwrap();
    assert!(matches!(
        store.record_tenant_image("nobody", &id('b'), &[]),
        Err(ImagesError::NoTenant(_))
    ));
}

#[test]
fn a_moved_tag_releases_an_image_left_without_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let digest = format!("docker.io/library/busybox@{}", id('d'));
    store
        .record_tenant_image("acme", &id('a'), &[tag(BUSYBOX), (RefKind::Digest, digest)])
        .unwrap();
    let released = store
        .record_tenant_image("acme", &id('b'), &[tag(BUSYBOX)])
        .unwrap();
    assert_eq!(released, vec![id('a')]);
    assert!(!store.tenant_holds_image("acme", &id('a')).unwrap());
    assert_eq!(store.images_of_tenants().unwrap(), [id('b')].into());
}

#[test]
fn forgetting_the_last_tag_forgets_the_image_and_its_digests() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let digest = format!("docker.io/library/busybox@{}", id('d'));
    let names = [
        tag(BUSYBOX),
        tag("docker.io/library/mine:1"),
        (RefKind::Digest, digest.clone()),
    ];
    store.record_tenant_image("acme", &id('a'), &names).unwrap();
    store
        .record_tenant_image("beta", &id('a'), &[tag(BUSYBOX)])
        .unwrap();

    let removed = store.forget_tenant_name("acme", BUSYBOX).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(store.tenant_holds_image("acme", &id('a')).unwrap());
    let removed = store
        .forget_tenant_name("acme", "docker.io/library/mine:1")
        .unwrap();
    let names: Vec<&str> = removed.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["docker.io/library/mine:1", digest.as_str()]);
    assert!(!store.tenant_holds_image("acme", &id('a')).unwrap());
    // Another tenant's names of the same image are untouched.
    assert_eq!(
        store.tenant_image_named("beta", BUSYBOX).unwrap(),
        Some(id('a'))
    );
    assert_eq!(store.images_of_tenants().unwrap(), [id('a')].into());
    assert!(store
        .forget_tenant_name("acme", BUSYBOX)
        .unwrap()
        .is_empty());
    assert!(store
        .forget_tenant_image("acme", &id('a'))
        .unwrap()
        .is_empty());
    assert_eq!(
        store.forget_tenant_image("beta", &id('a')).unwrap().len(),
        1
    );
    assert!(store.images_of_tenants().unwrap().is_empty());
}

#[test]
fn a_loaded_image_without_a_name_is_held_by_its_id_until_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.record_tenant_image("acme", &id('a'), &[]).unwrap();
    assert_eq!(
        store.tenant_image_named("acme", &id('a')).unwrap(),
        Some(id('a'))
    );
    store
        .record_tenant_image("acme", &id('a'), &[tag(BUSYBOX)])
        .unwrap();
    let refs = store.tenant_images("acme").unwrap();
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0].kind, RefKind::Tag);
}

#[test]
fn a_tenants_images_go_with_it_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store(dir.path());
        store
            .record_tenant_image("acme", &id('a'), &[tag(BUSYBOX)])
            .unwrap();
        store
            .record_tenant_image("beta", &id('b'), &[tag(BUSYBOX)])
            .unwrap();
    }
    let store = Store::open(
        &dir.path().join("cloud.db"),
        &dir.path().join("secrets.key"),
    )
    .unwrap();
    assert_eq!(
        store.tenant_image_named("acme", BUSYBOX).unwrap(),
        Some(id('a'))
    );
    store.remove_tenant("acme").unwrap();
    assert_eq!(store.images_of_tenants().unwrap(), [id('b')].into());
}

#[test]
fn a_tag_that_moves_at_the_limit_frees_the_place_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store
        .set_quota("acme", Quota::default().with_overrides("images=1").unwrap())
        .unwrap();
    store
        .record_tenant_image("acme", &id('a'), &[tag(BUSYBOX)])
        .unwrap();
    let released = store
        .record_tenant_image("acme", &id('b'), &[tag(BUSYBOX)])
        .unwrap();
    assert_eq!(released, vec![id('a')]);
    assert_eq!(store.tenant_image_count("acme").unwrap(), 1);
}
