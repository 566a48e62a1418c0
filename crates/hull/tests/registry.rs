//! `hull pull` and `hull push` against a real distribution registry on
//! loopback, with skopeo on the other side.

mod common;

use common::registry::Registry;
use common::{busybox_archive, derived_archive, has_docker_cli, stdout_of, text, Daemon};
use std::process::Command;

use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The digest line of `hull pull`'s output.
fn digest_line(output: &str) -> &str {
    output
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in: {output}"))
}

#[test]
fn a_pulled_image_is_listed_and_runs_in_a_vm() {
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let daemon = Daemon::start(&[]);
    let name = registry.name("library/busybox:1.36");

    let pulled = stdout_of(&daemon.hull(&["pull", &name]));
    let manifest = registry.raw_manifest("library/busybox:1.36", &[]);
    assert!(pulled.contains("Pulling from library/busybox"), "{pulled}");
    assert!(pulled.contains("Download complete"), "{pulled}");
    assert_eq!(digest_line(&pulled), sha256(&manifest));
    assert!(
        pulled.contains(&format!("Status: Downloaded newer image for {name}")),
        "{pulled}"
    );
    assert_eq!(pulled.lines().last(), Some(name.as_str()));

    let images = stdout_of(&daemon.hull(&["images"]));
    let repository = registry.name("library/busybox");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(&repository) && l.contains(" 1.36 ")),
        "{images}"
    );
    let output = daemon.hull(&["run", "--rm", &name, "echo", "hi"]);
    assert_eq!(stdout_of(&output), "hi\n");
    // The run needed the rootfs: it is built now.
    let images = stdout_of(&daemon.hull(&["images"]));
    assert!(
        images.lines().next().unwrap().ends_with("ROOTFS"),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(&repository) && l.ends_with(" ready")),
        "{images}"
    );

    let again = stdout_of(&daemon.hull(&["pull", &name]));
    assert!(again.contains("Already exists"), "{again}");
    assert!(!again.contains("Downloading"), "{again}");
    assert!(again.contains("Status: Image is up to date"), "{again}");
}

#[test]
fn an_image_is_pulled_by_digest() {
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let digest = sha256(&registry.raw_manifest("library/busybox:1.36", &[]));
    let daemon = Daemon::start(&[]);
    let name = format!("{}@{digest}", registry.name("library/busybox"));

    let pulled = stdout_of(&daemon.hull(&["pull", &name]));
    assert_eq!(digest_line(&pulled), digest);
    // Pulled by digest, so not tagged; but the digest names it.
    let images = stdout_of(&daemon.hull(&["images"]));
    assert!(images.contains("<none>"), "{images}");
    let inspect_by_digest = daemon.hull(&["run", "--rm", &name, "true"]);
    assert!(
        inspect_by_digest.status.success(),
        "{}",
        text(&inspect_by_digest.stderr)
    );
}

#[test]
fn a_wrong_digest_is_refused() {
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let daemon = Daemon::start(&[]);
    let wrong = format!(
        "{}@sha256:{}",
        registry.name("library/busybox"),
        "0".repeat(64)
    );
    let output = daemon.hull(&["pull", &wrong]);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("not found"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn basic_auth_credentials_come_from_the_environment() {
    let registry = Registry::with_busybox_behind_basic_auth();
    let daemon = Daemon::start(&[]);
    let name = registry.name("library/busybox:1.36");

    let anonymous = daemon.hull(&["pull", &name]);
    assert!(!anonymous.status.success());
    let stderr = text(&anonymous.stderr);
    assert!(stderr.contains("denied"), "{stderr}");
    assert!(stderr.contains(&registry.addr), "{stderr}");

    let wrong = daemon
        .command(&["pull", &name])
        .env("HULL_REGISTRY_AUTH", "hull:wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());

    let output = daemon
        .command(&["pull", &name])
        .env("HULL_REGISTRY_AUTH", "hull:s3cret")
        .output()
        .unwrap();
    let pulled = stdout_of(&output);
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
}

#[test]
fn basic_auth_credentials_come_from_an_auth_file() {
    let registry = Registry::with_busybox_behind_basic_auth();
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("auth.json");
    // base64("hull:s3cret"), docker's config.json format.
    let auths = serde_json::json!({"auths": {registry.addr.clone(): {"auth": "aHVsbDpzM2NyZXQ="}}});
    std::fs::write(&auth_file, auths.to_string()).unwrap();
    let output = daemon
        .command(&["pull", &registry.name("library/busybox:1.36")])
        .env("HULL_AUTH_FILE", &auth_file)
        .output()
        .unwrap();
    stdout_of(&output);
}

#[test]
fn a_corrupt_blob_fails_the_pull_and_leaves_the_store_unchanged() {
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&registry.raw_manifest("library/busybox:1.36", &[])).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let data = registry.blob_data(layer.strip_prefix("sha256:").unwrap());
    let size = std::fs::metadata(&data).unwrap().len() as usize;
    std::fs::write(&data, vec![0x5a; size]).unwrap();

    let daemon = Daemon::start(&[]);
    let before = stdout_of(&daemon.hull(&["images"]));
    let output = daemon.hull(&["pull", &registry.name("library/busybox:1.36")]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("blob {layer} failed verification")),
        "{stderr}"
    );
    assert_eq!(stdout_of(&daemon.hull(&["images"])), before);
    common::store_scratch_empties(&daemon);
}

#[test]
fn linux_amd64_is_picked_from_a_multi_arch_index() {
    let registry = Registry::start();
    let mut entries = Vec::new();
    // arm64 first, so that taking the first entry would be caught.
    for arch in ["arm64", "amd64"] {
        let archive = derived_archive(&format!("multi:{arch}"), |config| {
            config["Env"] = serde_json::json!([format!("ARCH={arch}")]);
        });
        let tag = format!("library/multi:{arch}");
        registry.push_archive(&archive, &tag, &["--format", "oci"]);
        let manifest = registry.raw_manifest(&tag, &[]);
        entries.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        }));
    }
    let media_type = "application/vnd.oci.image.index.v1+json";
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries,
    }))
    .unwrap();
    registry.put_manifest("library/multi", "latest", media_type, &index);

    let daemon = Daemon::start(&[]);
    let name = registry.name("library/multi");
    let pulled = stdout_of(&daemon.hull(&["pull", &name]));
    assert_eq!(digest_line(&pulled), sha256(&index));
    let output = daemon.hull(&["run", "--rm", &name, "sh", "-c", "echo $ARCH"]);
    assert_eq!(stdout_of(&output), "amd64\n");
}

#[test]
fn a_pushed_image_reads_back_with_skopeo_and_pulls_into_another_daemon() {
    let registry = Registry::start();
    let name = registry.name("me/busybox:mine");
    let archive = derived_archive(&name, |config| {
        config["Env"] = serde_json::json!(["PUSHED=yes"]);
    });
    let daemon = Daemon::start(&[]);
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));

    let pushed = stdout_of(&daemon.hull(&["push", &name]));
    assert!(pushed.contains("Pushed"), "{pushed}");
    let digest_line = pushed
        .lines()
        .find(|l| l.starts_with("mine: digest: "))
        .unwrap_or_else(|| panic!("no digest line: {pushed}"));
    let inspect = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    let inspected: serde_json::Value = serde_json::from_str(&stdout_of(&inspect)).unwrap();
    let digest = inspected["Digest"].as_str().unwrap();
    assert!(digest_line.contains(digest), "{digest_line} vs {digest}");
    assert_eq!(inspected["Env"], serde_json::json!(["PUSHED=yes"]));

    let again = stdout_of(&daemon.hull(&["push", &name]));
    assert!(again.contains("Layer already exists"), "{again}");

    let other = Daemon::start(&[]);
    let pulled = stdout_of(&other.hull(&["pull", &name]));
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    let ids = |d: &Daemon| stdout_of(&d.hull(&["images", "-q", "--no-trunc"]));
    assert_eq!(ids(&other), ids(&daemon));
}

#[test]
fn a_push_to_a_registry_with_basic_auth_needs_the_credentials() {
    let registry = Registry::with_basic_auth("hull", "s3cret");
    let name = registry.name("me/busybox:auth");
    let archive = derived_archive(&name, |_| {});
    let daemon = Daemon::start(&[]);
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));

    let anonymous = daemon.hull(&["push", &name]);
    assert!(!anonymous.status.success());
    assert!(
        text(&anonymous.stderr).contains("denied"),
        "{}",
        text(&anonymous.stderr)
    );

    let output = daemon
        .command(&["push", &name])
        .env("HULL_REGISTRY_AUTH", "hull:s3cret")
        .output()
        .unwrap();
    assert!(stdout_of(&output).contains("auth: digest: sha256:"));
}

#[test]
fn the_docker_cli_pulls_and_pushes_through_hulld() {
    if !has_docker_cli() {
        return;
    }
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let daemon = Daemon::start(&[]);
    let docker = |args: &[&str]| daemon.docker(args);
    let name = registry.name("library/busybox:1.36");
    let pulled = stdout_of(&docker(&["pull", &name]));
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    assert!(stdout_of(&daemon.hull(&["images"])).contains(&registry.name("library/busybox")));

    let mine = registry.name("me/busybox:docker");
    let archive = derived_archive(&mine, |_| {});
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    let pushed = stdout_of(&docker(&["push", &mine]));
    assert!(pushed.contains("docker: digest: sha256:"), "{pushed}");
    registry.raw_manifest("me/busybox:docker", &[]);
}

#[test]
fn run_and_create_pull_a_missing_image_first() {
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let daemon = Daemon::start(&[]);
    let name = registry.name("library/busybox:1.36");

    let output = daemon.hull(&["run", "--rm", &name, "echo", "hi"]);
    assert_eq!(
        stdout_of(&output),
        "hi\n",
        "the container's output is its own"
    );
    let said = text(&output.stderr);
    assert!(
        said.contains(&format!("Unable to find image '{name}' locally")),
        "{said}"
    );
    assert!(
        said.contains(&format!("Status: Downloaded newer image for {name}")),
        "{said}"
    );
    // Present now: no second pull.
    let again = daemon.hull(&["run", "--rm", &name, "true"]);
    assert!(
        !text(&again.stderr).contains("Unable to find image"),
        "{}",
        text(&again.stderr)
    );

    let missing = daemon.hull(&["create", &registry.name("library/nothing:1")]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        text(&missing.stderr).contains("Unable to find image"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn an_interrupted_download_resumes_and_a_dead_registry_fails_the_pull_cleanly() {
    use common::registry::{Cut, CuttingProxy};
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let daemon = Daemon::start(&[]);
    let blobs = daemon.root.join("images/blobs/sha256");
    let blob_files = || std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);

    // The registry dies in the middle of the layer: retries fail, nothing is kept.
    let dying = CuttingProxy::new(&registry.addr, 64 * 1024, Cut::AndDie);
    let name = format!("{}/library/busybox:1.36", dying.addr);
    let failed = daemon.hull(&["pull", &name]);
    assert!(!failed.status.success(), "{}", text(&failed.stdout));
    assert!(
        text(&failed.stderr).contains("blob sha256:"),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(dying.cuts(), 1);
    assert_eq!(stdout_of(&daemon.hull(&["images", "-q"])), "");
    assert_eq!(blob_files(), 0, "a failed pull left blobs behind");

    // Back again: the same pull completes.
    dying.revive();
    let pulled = stdout_of(&daemon.hull(&["pull", &name]));
    assert!(
        pulled.contains("Status: Downloaded newer image"),
        "{pulled}"
    );

    // A connection cut once mid-layer: the download resumes where it stopped.
    let other = Daemon::start(&[]);
    let flaky = CuttingProxy::new(&registry.addr, 64 * 1024, Cut::Once);
    let name = format!("{}/library/busybox:1.36", flaky.addr);
    let pulled = stdout_of(&other.hull(&["pull", &name]));
    assert!(
        pulled.contains("Status: Downloaded newer image"),
        "{pulled}"
    );
    assert_eq!(flaky.cuts(), 1);
    assert!(
        other.log().contains("blob download interrupted: resuming"),
        "{}",
        other.log()
    );
    assert_eq!(
        stdout_of(&other.hull(&["run", "--rm", &name, "echo", "whole"])),
        "whole\n"
    );
}

#[test]
fn concurrent_pulls_download_a_shared_layer_once() {
    use common::registry::CuttingProxy;
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&registry.raw_manifest("library/busybox:1.36", &[])).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let daemon = Daemon::start(&[]);
    // Held-back responses make the two pulls overlap.
    let proxy = CuttingProxy::slow(&registry.addr, std::time::Duration::from_millis(700));
    let name = format!("{}/library/busybox:1.36", proxy.addr);

    let pulls: Vec<_> = (0..2)
        .map(|_| {
            daemon
                .command(&["pull", &name])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        let output = pull.wait_with_output().unwrap();
        assert!(stdout_of(&output).contains(&format!("for {name}")));
    }
    let fetched = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET ") && r.contains(&layer))
        .count();
    assert_eq!(fetched, 1, "{:#?}", proxy.requests());
    assert_eq!(
        stdout_of(&daemon.hull(&["run", "--rm", &name, "echo", "once"])),
        "once\n"
    );
}

#[test]
fn short_names_are_pulled_from_the_first_mirror_that_has_them() {
    let mirror = Registry::start();
    mirror.push_archive(&busybox_archive(), "library/busybox:latest", &[]);
    let manifest = mirror.raw_manifest("library/busybox:latest", &[]);
    // No registry listens on port 1: a mirror that is down is passed over.
    let mirrors = format!("http://127.0.0.1:1,http://{}", mirror.addr);
    let daemon = Daemon::start(&[("HULL_REGISTRY_MIRRORS", &mirrors)]);

    let pulled = stdout_of(&daemon.hull(&["pull", "busybox"]));
    assert!(pulled.contains("Pulling from library/busybox"), "{pulled}");
    assert_eq!(digest_line(&pulled), sha256(&manifest));
    assert!(
        pulled.contains("Status: Downloaded newer image for busybox:latest"),
        "{pulled}"
    );
    // The image keeps its Docker Hub name, as docker's mirrors leave it.
    let output = stdout_of(&daemon.hull(&["image", "inspect", "busybox"]));
    let inspected: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(
        inspected[0]["RepoDigests"],
        serde_json::json!([format!("busybox@{}", sha256(&manifest))])
    );
    let output = daemon.hull(&["run", "--rm", "busybox", "echo", "mirrored"]);
    assert_eq!(stdout_of(&output), "mirrored\n");
}

#[test]
fn hulld_refuses_a_mirror_that_is_not_a_registry_address() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(common::bin_dir().join("hulld"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--host")
        .arg(format!("unix://{}", dir.path().join("hull.sock").display()))
        .args(["--registry-mirror", "https://mirror.example/v2/"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("cannot have a path"),
        "{}",
        text(&output.stderr)
    );
}
