//! Each tenant's own images over one shared store: what one tenant pulled
//! or loaded, another neither sees nor names, and pulls it only with access
//! of its own to the registry, although the blobs are already on the host.

mod common;

/// The tests' registry listens on loopback, which tenants' pulls may reach
/// only as the operator allows.
const LOOPBACK_REGISTRY: &[(&str, &str)] = &[("HULL_TENANT_REGISTRIES", "127.0.0.1")];

use common::cloud::{tiny_archive, Cloud};
use common::registry::Registry;
use common::{stdout_of, text};

/// The tenant listener's answer for a name, id or digest it does not hold.
const MISSING: &[&str] = &["no such image"];

/// Checks that a command failed saying each of `needles` (in any case);
/// returns its stderr.
fn fails_saying(output: &std::process::Output, needles: &[&str]) -> String {
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{}", stdout_of(output));
    for needle in needles {
        assert!(
            stderr.to_lowercase().contains(&needle.to_lowercase()),
            "{needle:?} not in: {stderr}"
        );
    }
    stderr
}

fn image_id(cloud: &Cloud, keys: &(String, String), name: &str) -> String {
    let inspected = cloud.tenant(&keys.0, &keys.1, &["image", "inspect", name]);
    let inspected: serde_json::Value = serde_json::from_str(&stdout_of(&inspected)).unwrap();
    inspected[0]["Id"].as_str().unwrap().to_owned()
}

fn images(cloud: &Cloud, keys: &(String, String)) -> String {
    stdout_of(&cloud.tenant(&keys.0, &keys.1, &["images", "--no-trunc", "--digests"]))
}

#[test]
fn a_tenant_sees_and_names_only_images_it_pulled_with_its_own_credentials() {
    let registry = Registry::with_busybox_behind_basic_auth();
    let name = registry.name("library/busybox:1.36");
    let cloud = Cloud::start(LOOPBACK_REGISTRY);
    let acme = cloud.tenant_with_key("acme");
    let beta = cloud.tenant_with_key("beta");
    let with_auth = [("HULL_REGISTRY_AUTH", "hull:s3cret")];

    let pulled = cloud.tenant_with(&acme.0, &acme.1, &with_auth, &["pull", &name]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let id = image_id(&cloud, &acme, &name);
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
    let listed = images(&cloud, &acme);
    assert!(
        listed.contains("busybox") && listed.contains(&id[7..]),
        "{listed}"
    );
    let digest_name = listed
        .split_whitespace()
        .find(|word| word.starts_with("sha256:") && !id.ends_with(&word[7..]))
        .map(|digest| format!("{}@{digest}", name.rsplit_once(':').unwrap().0))
        .unwrap_or_else(|| panic!("no digest listed: {listed}"));

    // Beta sees nothing of it, and every way of naming it answers as a
    // missing image does.
    assert_eq!(images(&cloud, &beta).lines().count(), 1, "only the header");
    for reference in [name.as_str(), &id, &id[7..19], &id[7..11], &digest_name] {
        let inspected = cloud.tenant(&beta.0, &beta.1, &["image", "inspect", reference]);
        fails_saying(&inspected, MISSING);
        let removed = cloud.tenant(&beta.0, &beta.1, &["rmi", reference]);
        fails_saying(&removed, MISSING);
        let tagged = cloud.tenant(&beta.0, &beta.1, &["tag", reference, "mine:1"]);
        fails_saying(&tagged, MISSING);
    }
    // The operator's own names are its own: the tenant's pull tagged nothing there.
    let operator = cloud.daemon.hull(&["image", "inspect", &name]);
    assert!(!operator.status.success(), "{}", stdout_of(&operator));

    // The blobs are on the host, but without credentials of its own the
    // registry refuses beta the manifest, and beta gets nothing.
    let unauthorized = cloud.tenant(&beta.0, &beta.1, &["pull", &name]);
    fails_saying(&unauthorized, &["denied", "authentication required"]);
    let by_digest = cloud.tenant(&beta.0, &beta.1, &["pull", &digest_name]);
    fails_saying(&by_digest, &["denied"]);
    assert_eq!(images(&cloud, &beta).lines().count(), 1);

    // With access of its own, beta gets the same image, shared below.
    let pulled = cloud.tenant_with(&beta.0, &beta.1, &with_auth, &["pull", &name]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert_eq!(image_id(&cloud, &beta, &name), id);

    // Acme's tag and removal are acme's alone; the shared image stays for beta.
    let tagged = cloud.tenant(&acme.0, &acme.1, &["tag", &name, "acme/tools:1"]);
    assert!(tagged.status.success(), "{}", text(&tagged.stderr));
    let beta_sees = cloud.tenant(&beta.0, &beta.1, &["image", "inspect", "acme/tools:1"]);
    fails_saying(&beta_sees, MISSING);
    for reference in ["acme/tools:1", name.as_str()] {
        let removed = cloud.tenant(&acme.0, &acme.1, &["rmi", reference]);
        assert!(removed.status.success(), "{}", text(&removed.stderr));
    }
    assert_eq!(
        images(&cloud, &acme).lines().count(),
        1,
        "{}",
        images(&cloud, &acme)
    );
    assert_eq!(image_id(&cloud, &beta, &name), id);

    // The last tenant's removal takes the shared image away.
    let removed = cloud.tenant(&beta.0, &beta.1, &["rmi", &name]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let operator = stdout_of(&cloud.daemon.hull(&["images", "-q", "--no-trunc"]));
    assert!(!operator.contains(&id), "{operator}");
}

#[test]
fn the_images_quota_refuses_a_pull_or_load_and_records_nothing() {
    let registry = Registry::with_busybox_behind_basic_auth();
    let name = registry.name("library/busybox:1.36");
    let cloud = Cloud::start(LOOPBACK_REGISTRY);
    stdout_of(
        &cloud
            .daemon
            .hull(&["admin", "tenant", "create", "small", "--quota", "images=1"]),
    );
    let key: serde_json::Value = serde_json::from_str(&stdout_of(
        &cloud
            .daemon
            .hull(&["admin", "key", "create", "small", "--format", "json"]),
    ))
    .unwrap();
    let small = (
        key["AccessKey"].as_str().unwrap().to_owned(),
        key["SecretKey"].as_str().unwrap().to_owned(),
    );
    let other = cloud.tenant_with_key("other");
    let dir = tempfile::tempdir().unwrap();

    // A load lands in the tenant's view only.
    let first = tiny_archive(dir.path(), "small/first:1", "one");
    let loaded = cloud.tenant(&small.0, &small.1, &["load", "-i", first.to_str().unwrap()]);
    assert!(loaded.status.success(), "{}", text(&loaded.stderr));
    assert!(images(&cloud, &small).contains("small/first"));
    assert!(!images(&cloud, &other).contains("small/first"));
    // Another name of an image it keeps is no new image.
    let tagged = cloud.tenant(
        &small.0,
        &small.1,
        &["tag", "small/first:1", "small/again:1"],
    );
    assert!(tagged.status.success(), "{}", text(&tagged.stderr));

    let with_auth = [("HULL_REGISTRY_AUTH", "hull:s3cret")];
    let pulled = cloud.tenant_with(&small.0, &small.1, &with_auth, &["pull", &name]);
    let message = fails_saying(&pulled, &["quota", "images"]);
    assert!(
        message.contains("images in use 1") && message.contains("limit 1"),
        "{message}"
    );
    let second = tiny_archive(dir.path(), "small/second:1", "two");
    let loaded = cloud.tenant(
        &small.0,
        &small.1,
        &["load", "-i", second.to_str().unwrap()],
    );
    fails_saying(&loaded, &["quota", "images"]);
    let listed = images(&cloud, &small);
    assert!(
        !listed.contains("busybox") && !listed.contains("small/second"),
        "{listed}"
    );

    // A tenant removed takes its names along, and the images only it kept.
    let first_id = image_id(&cloud, &small, "small/first:1");
    let held = stdout_of(&cloud.daemon.hull(&["images", "-q", "--no-trunc"]));
    assert!(held.contains(&first_id), "{held}");
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "rm", "small"]));
    let left = stdout_of(&cloud.daemon.hull(&["images", "-q", "--no-trunc"]));
    assert!(!left.contains(&first_id), "{left}");
}

#[test]
fn the_docker_cli_logs_in_and_pulls_a_private_image_as_a_tenant() {
    if !common::has_docker_cli() {
        eprintln!("skipped: no docker CLI");
        return;
    }
    let registry = Registry::with_busybox_behind_basic_auth();
    let name = registry.name("library/busybox:1.36");
    let cloud = Cloud::start(LOOPBACK_REGISTRY);
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "create", "acme"]));
    let docker = |args: &[&str]| cloud.docker_as("acme", args);
    let anonymous = docker(&["pull", &name]);
    assert!(!anonymous.status.success(), "{}", stdout_of(&anonymous));
    let wrong = docker(&["login", "-u", "hull", "-p", "wrong", &registry.addr]);
    assert!(!wrong.status.success(), "{}", stdout_of(&wrong));
    let login = docker(&["login", "-u", "hull", "-p", "s3cret", &registry.addr]);
    assert!(login.status.success(), "{}", text(&login.stderr));
    let pulled = docker(&["pull", &name]);
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    let listed = stdout_of(&docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert_eq!(listed.trim(), name, "{listed}");
    let history = docker(&["history", "-q", &name]);
    assert!(history.status.success(), "{}", text(&history.stderr));
    let removed = docker(&["rmi", &name]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_eq!(stdout_of(&docker(&["images", "-q"])).trim(), "");
}

#[test]
fn a_tenants_pull_reaches_no_private_address_the_operator_did_not_allow() {
    let registry = Registry::with_busybox_behind_basic_auth();
    let cloud = Cloud::start(&[]);
    let acme = cloud.tenant_with_key("acme");
    let with_auth = [("HULL_REGISTRY_AUTH", "hull:s3cret")];
    // The registry by its loopback address, and by a name that resolves to it.
    let by_address = registry.name("library/busybox:1.36");
    let by_name = by_address.replace("127.0.0.1", "localhost");
    for name in [&by_address, &by_name] {
        let pulled = cloud.tenant_with(&acme.0, &acme.1, &with_auth, &["pull", name]);
        fails_saying(&pulled, &["private address"]);
    }
    assert_eq!(
        images(&cloud, &acme).lines().count(),
        1,
        "nothing was pulled"
    );
    let server = by_address.split('/').next().unwrap();
    let login = cloud.tenant(
        &acme.0,
        &acme.1,
        &["login", "-u", "hull", "-p", "s3cret", server],
    );
    fails_saying(&login, &["private address"]);
}
