use super::*;
use hull_cloud::quota::Quota;

fn id(fill: char) -> String {
    format!("sha256:{}", fill.to_string().repeat(64))
}

/// acme pulled busybox (image `a`) by tag, and a private image (`c`) by
/// digest; beta has nothing.
fn cloud(dir: &std::path::Path) -> CloudStore {
    let cloud = CloudStore::open(&dir.join("cloud.db"), &dir.join("secrets.key")).unwrap();
    cloud.create_tenant("acme", Quota::default()).unwrap();
    cloud.create_tenant("beta", Quota::default()).unwrap();
    let names = [
        (RefKind::Tag, "docker.io/library/busybox:latest".to_owned()),
        (
            RefKind::Digest,
            format!("docker.io/library/busybox@{}", id('d')),
        ),
    ];
    cloud.record_tenant_image("acme", &id('a'), &names).unwrap();
    let private = format!("127.0.0.1:5000/private/app@{}", id('e'));
    cloud
        .record_tenant_image("acme", &id('c'), &[(RefKind::Digest, private)])
        .unwrap();
    cloud
}

fn status(result: Result<String, ApiError>) -> Result<String, (StatusCode, String)> {
    result.map_err(|e| (e.status, e.message))
}

#[test]
fn a_tenant_finds_its_own_images_as_docker_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud(dir.path());
    for name in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        &format!("busybox@{}", id('d')),
        &id('a'),
        "aaaa",
        "sha256:aaaa",
        &format!("busybox@{}", id('a')),
    ] {
        assert_eq!(lookup(&cloud, "acme", name).unwrap(), id('a'), "{name}");
    }
    let private = format!("127.0.0.1:5000/private/app@{}", id('e'));
    assert_eq!(lookup(&cloud, "acme", &private).unwrap(), id('c'));
}

/// `text` with the hex of the test's ids made `f`s: a name nobody holds.
fn refill(text: &str) -> String {
    text.replace("sha256:", "SHA")
        .replace(['a', 'c', 'd', 'e'], "f")
        .replace("SHA", "sha256:")
}

#[test]
fn another_tenants_image_answers_exactly_as_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud(dir.path());
    let private = format!("127.0.0.1:5000/private/app@{}", id('e'));
    let attempts = [
        "busybox".to_owned(),
        id('a'),
        "aaaa".to_owned(),
        "sha256:aaaa".to_owned(),
        "a".repeat(64),
        format!("busybox@{}", id('d')),
        format!("busybox@{}", id('a')),
        private,
        format!("127.0.0.1:5000/private/app@{}", id('c')),
    ];
    for name in &attempts {
        let theirs = status(lookup(&cloud, "beta", name)).unwrap_err();
        // 404, or 400 where the name is no reference (64 hex digits), as
        // for a name nobody holds, in the same words.
        assert!(
            matches!(theirs.0, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
            "{name}: {theirs:?}"
        );
        let missing = refill(name);
        let nobodys = status(lookup(&cloud, "beta", &missing)).unwrap_err();
        assert_eq!(theirs.0, nobodys.0, "{name} vs {missing}");
        assert_eq!(refill(&theirs.1), refill(&nobodys.1), "{name} vs {missing}");
    }
}

#[test]
fn odd_references_are_refused_or_missing_never_someone_elses() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = cloud(dir.path());
    for name in [
        "%",
        "_",
        "aaa",
        "sha256:",
        "sha256:%",
        "Busybox",
        "busybox:%",
        "' OR 1=1 --",
        "../busybox",
        "",
    ] {
        let refused = status(lookup(&cloud, "acme", name)).unwrap_err();
        assert!(
            matches!(refused.0, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST),
            "{name:?}: {refused:?}"
        );
    }
    // An ambiguous prefix counts the tenant's own images only.
    let (one, two) = (
        format!("sha256:abcd{}", "1".repeat(60)),
        format!("sha256:abcd{}", "2".repeat(60)),
    );
    cloud.record_tenant_image("acme", &one, &[]).unwrap();
    cloud.record_tenant_image("beta", &two, &[]).unwrap();
    assert_eq!(lookup(&cloud, "acme", "abcd").unwrap(), one);
    cloud.record_tenant_image("acme", &two, &[]).unwrap();
    let ambiguous = status(lookup(&cloud, "acme", "abcd")).unwrap_err();
    assert_eq!(ambiguous.0, StatusCode::BAD_REQUEST, "{ambiguous:?}");
}
