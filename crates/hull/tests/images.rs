//! The image commands beside load, pull and push: tag, rmi, inspect, save,
//! prune, system df, login and logout; with the docker CLI as well.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::registry::Registry;
use common::{
    busybox_archive, has_docker_cli, loaded_daemon, start_long_run, stdout_of, text, Daemon,
};

fn inspect(daemon: &Daemon, name: &str) -> serde_json::Value {
    let output = stdout_of(&daemon.hull(&["image", "inspect", name]));
    let mut all: serde_json::Value = serde_json::from_str(&output).unwrap();
    all[0].take()
}

/// The image's layers; those of a loaded docker-archive are stored as they
/// came, uncompressed, so each blob's digest is its diff_id.
fn layers(daemon: &Daemon, name: &str) -> Vec<String> {
    inspect(daemon, name)["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_tag_names_the_image_and_rmi_of_the_last_tag_deletes_it() {
    let daemon = loaded_daemon(&[]);
    let id = daemon.image_id("busybox");
    let layer = layers(&daemon, "busybox").remove(0);
    stdout_of(&daemon.hull(&["tag", "busybox", "other:tag"]));
    assert_eq!(daemon.image_id("other:tag"), id);
    let images = stdout_of(&daemon.hull(&["images"]));
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("other ") && l.contains(" tag ")),
        "{images}"
    );

    let conflict = daemon.hull(&["rmi", &id[7..19]]);
    assert_eq!(conflict.status.code(), Some(1));
    assert!(
        text(&conflict.stderr).contains("must be forced"),
        "{}",
        text(&conflict.stderr)
    );

    assert_eq!(
        stdout_of(&daemon.hull(&["rmi", "other:tag"])),
        "Untagged: other:tag\n"
    );
    assert_eq!(
        stdout_of(&daemon.hull(&["rmi", "busybox"])),
        format!("Untagged: busybox:latest\nDeleted: {id}\nDeleted: {layer}\n")
    );
    assert_eq!(stdout_of(&daemon.hull(&["images", "-q"])), "");
    let blobs = std::fs::read_dir(daemon.root.join("images/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(blobs, 0, "the blobs of a deleted image stay");

    let missing = daemon.hull(&["rmi", "busybox"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no such image: busybox:latest"));
}

#[test]
fn image_subcommands_are_the_same_commands() {
    let daemon = loaded_daemon(&[]);
    let id = daemon.image_id("busybox");
    stdout_of(&daemon.hull(&["image", "tag", "busybox", "viaimage:1"]));
    let listed = stdout_of(&daemon.hull(&["image", "ls"]));
    assert!(
        listed.lines().any(|l| l.starts_with("viaimage ")),
        "{listed}"
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar");
    let path = archive.to_str().unwrap();
    stdout_of(&daemon.hull(&["image", "save", "-o", path, "viaimage:1"]));
    let removed = stdout_of(&daemon.hull(&["image", "rm", "viaimage:1"]));
    assert_eq!(removed, "Untagged: viaimage:1\n");
    stdout_of(&daemon.hull(&["image", "load", "-i", path]));
    assert_eq!(daemon.image_id("viaimage:1"), id);
}

#[test]
fn rmi_force_removes_an_image_with_several_tags() {
    let daemon = loaded_daemon(&[]);
    let id = daemon.image_id("busybox");
    let layer = layers(&daemon, "busybox").remove(0);
    stdout_of(&daemon.hull(&["tag", &id, "a:1"]));
    let removed = stdout_of(&daemon.hull(&["rmi", "-f", &id]));
    assert_eq!(
        removed,
        format!("Untagged: a:1\nUntagged: busybox:latest\nDeleted: {id}\nDeleted: {layer}\n")
    );
}

#[test]
fn an_image_a_run_uses_is_kept_until_the_run_ends() {
    let daemon = loaded_daemon(&[]);
    let id = daemon.image_id("busybox");
    let mut run = start_long_run(&daemon);

    let refused = daemon.hull(&["rmi", "busybox"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("being used by a running container"),
        "{}",
        text(&refused.stderr)
    );
    let pruned = stdout_of(&daemon.hull(&["image", "prune", "-a", "-f"]));
    assert!(!pruned.contains("deleted"), "{pruned}");
    // forced, the image only loses its tag while the run lasts
    let forced = stdout_of(&daemon.hull(&["rmi", "-f", "busybox"]));
    assert_eq!(forced, "Untagged: busybox:latest\n");
    assert_eq!(daemon.image_id(&id), id);
    assert!(run.try_wait().unwrap().is_none(), "the run ended");

    run.kill().unwrap();
    run.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pruned = stdout_of(&daemon.hull(&["image", "prune", "-f"]));
        if pruned.contains(&format!("deleted: {id}")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pruned}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(stdout_of(&daemon.hull(&["images", "-q"])), "");
}

#[test]
fn inspect_shows_the_config_and_the_layers() {
    let daemon = loaded_daemon(&[]);
    let image = inspect(&daemon, "busybox");
    assert!(image["Id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(image["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(image["RepoDigests"], serde_json::json!([]));
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Architecture"], "amd64");
    assert_eq!(image["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert!(image["Config"]["Env"][0]
        .as_str()
        .unwrap()
        .starts_with("PATH="));
    assert_eq!(image["RootFS"]["Type"], "layers");
    assert_eq!(image["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert!(image["Size"].as_i64().unwrap() > 1_000_000);
    assert!(image["Created"].as_str().unwrap().starts_with("20"));

    let missing = daemon.hull(&["image", "inspect", "nothing:here"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no such image: nothing:here"));
}

#[test]
fn a_pulled_image_lists_its_repo_digest() {
    let registry = Registry::start();
    registry.push_archive(&busybox_archive(), "library/busybox:1.36", &[]);
    let daemon = Daemon::start(&[]);
    let name = registry.name("library/busybox:1.36");
    let pulled = stdout_of(&daemon.hull(&["pull", &name]));
    let digest = pulled
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap()
        .to_owned();
    let repository = registry.name("library/busybox");
    let image = inspect(&daemon, &name);
    assert_eq!(
        image["RepoDigests"],
        serde_json::json!([format!("{repository}@{digest}")])
    );
    let images = stdout_of(&daemon.hull(&["images", "--digests"]));
    assert!(images.starts_with("REPOSITORY"), "{images}");
    assert!(
        images.lines().next().unwrap().contains(" DIGEST "),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(&repository) && l.contains(&digest)),
        "{images}"
    );

    // rmi untags the name it was pulled by too, and lists its one layer,
    // stored as the registry's compressed blob
    let id = daemon.image_id(&name);
    let removed = stdout_of(&daemon.hull(&["rmi", &name]));
    let lines: Vec<&str> = removed.lines().collect();
    assert_eq!(lines.len(), 4, "{removed}");
    assert_eq!(lines[0], format!("Untagged: {name}"));
    assert_eq!(lines[1], format!("Untagged: {repository}@{digest}"));
    assert_eq!(lines[2], format!("Deleted: {id}"));
    assert!(lines[3].starts_with("Deleted: sha256:"), "{removed}");
}

#[test]
fn a_saved_archive_loads_into_another_daemon_with_the_same_ids_and_runs() {
    let source = loaded_daemon(&[]);
    stdout_of(&source.hull(&["tag", "busybox", "second:v2"]));
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("out.tar");
    stdout_of(&source.hull(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "busybox",
        "second:v2",
    ]));

    let skopeo = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}:second:v2", archive.display()))
        .output()
        .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&stdout_of(&skopeo)).unwrap();
    assert_eq!(seen["Os"], "linux");
    assert_eq!(
        seen["Layers"],
        inspect(&source, "busybox")["RootFS"]["Layers"]
    );

    let target = Daemon::start(&[]);
    let loaded = stdout_of(&target.hull(&["load", "-i", archive.to_str().unwrap()]));
    assert!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");
    assert!(loaded.contains("Loaded image: second:v2"), "{loaded}");
    assert_eq!(target.image_id("busybox"), source.image_id("busybox"));
    assert_eq!(target.image_id("second:v2"), source.image_id("busybox"));
    let output = target.hull(&["run", "--rm", "second:v2", "echo", "restored"]);
    assert_eq!(stdout_of(&output), "restored\n");
}

#[test]
fn an_oci_save_is_an_image_layout_skopeo_reads() {
    let daemon = loaded_daemon(&[]);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("oci.tar");
    let path = archive.to_str().unwrap();
    stdout_of(&daemon.hull(&["save", "--format", "oci", "-o", path, "busybox"]));
    let skopeo = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{path}"))
        .output()
        .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&stdout_of(&skopeo)).unwrap();
    assert_eq!(
        seen["Layers"],
        inspect(&daemon, "busybox")["RootFS"]["Layers"]
    );
    let missing = daemon.hull(&["save", "-o", path, "nothing"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(text(&missing.stderr).contains("no such image"));
}

#[test]
fn prune_removes_untagged_images_and_df_counts_what_is_left() {
    let daemon = loaded_daemon(&[]);
    let busybox = daemon.image_id("busybox");
    let derived = common::derived_archive("derived:1", |config| {
        config["Cmd"] = serde_json::json!(["true"]);
    });
    stdout_of(&daemon.hull(&["load", "-i", derived.to_str().unwrap()]));
    let derived_id = daemon.image_id("derived:1");
    // loaded again under the same tag, the derived image is left untagged
    let again = common::derived_archive("derived:1", |config| {
        config["Cmd"] = serde_json::json!(["false"]);
    });
    stdout_of(&daemon.hull(&["load", "-i", again.to_str().unwrap()]));

    let df = stdout_of(&daemon.hull(&["system", "df"]));
    assert!(
        df.lines()
            .any(|l| l.starts_with("Images ") && l.contains(" 3 ")),
        "{df}"
    );

    let pruned = stdout_of(&daemon.hull(&["image", "prune", "-f"]));
    assert!(
        pruned.starts_with(&format!("Deleted Images:\ndeleted: {derived_id}\n\n")),
        "only the image goes: the remaining images share its layer\n{pruned}"
    );
    assert!(pruned.contains("Total reclaimed space: "), "{pruned}");
    assert_eq!(daemon.image_id("busybox"), busybox);
    assert_eq!(
        stdout_of(&daemon.hull(&["images", "-q"])).lines().count(),
        2
    );
    // the layer the remaining images share stays
    let output = daemon.hull(&["image", "inspect", "busybox", "derived:1"]);
    stdout_of(&output);

    let pruned = stdout_of(&daemon.hull(&["image", "prune", "-a", "-f"]));
    assert!(pruned.contains("untagged: busybox:latest"), "{pruned}");
    assert_eq!(stdout_of(&daemon.hull(&["images", "-q"])), "");
    let df = stdout_of(&daemon.hull(&["system", "df"]));
    assert!(df.contains("Store on disk: 0B"), "{df}");
}

#[test]
fn prune_filters_choose_by_label_and_age() {
    let daemon = loaded_daemon(&[]);
    let load = |tag: &str, labels: serde_json::Value| {
        let archive = common::derived_archive(tag, |config| config["Labels"] = labels);
        stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
        daemon.image_id(tag)
    };
    let web = load("web:1", serde_json::json!({"tier": "web"}));
    let keep = load("keep:1", serde_json::json!({"tier": "db", "keep": "yes"}));
    let prune = |filters: &[&str]| {
        let mut args = vec!["image", "prune", "-a", "-f"];
        for filter in filters {
            args.extend(["--filter", filter]);
        }
        stdout_of(&daemon.hull(&args))
    };

    // every test image was created on 2024-01-01
    let pruned = prune(&["until=2023-06-01T00:00:00Z"]);
    assert!(!pruned.contains("deleted"), "{pruned}");
    let pruned = prune(&["label=tier=web", "until=1h"]);
    assert!(pruned.contains("untagged: web:1"), "{pruned}");
    assert!(pruned.contains(&format!("deleted: {web}")), "{pruned}");
    let pruned = prune(&["label!=keep"]);
    assert!(pruned.contains("untagged: busybox:latest"), "{pruned}");
    assert!(!pruned.contains(&keep), "{pruned}");
    assert_eq!(daemon.image_id("keep:1"), keep);

    let refused = daemon.hull(&["image", "prune", "-f", "--filter", "color=red"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        text(&refused.stderr).contains("invalid filter 'color'"),
        "{}",
        text(&refused.stderr)
    );
}

#[test]
fn login_checks_the_password_and_keeps_it_for_pulls() {
    let registry = Registry::with_busybox_behind_basic_auth();
    let daemon = Daemon::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("conf/auth.json");
    let hull = |args: &[&str], input: &[u8]| {
        let mut command = daemon.command(args);
        command
            .env("HULL_AUTH_FILE", &auth_file)
            .env_remove("HULL_REGISTRY_AUTH");
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
        child.wait_with_output().unwrap()
    };
    let name = registry.name("library/busybox:1.36");

    let refused = hull(&["login", &registry.addr, "-u", "hull", "-p", "wrong"], b"");
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        text(&refused.stderr).contains("refused"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!auth_file.exists());
    let denied = hull(&["pull", &name], b"");
    assert!(!denied.status.success());

    let login = hull(
        &["login", &registry.addr, "-u", "hull", "--password-stdin"],
        b"s3cret\n",
    );
    assert_eq!(stdout_of(&login), "Login Succeeded\n");
    let mode = std::fs::metadata(&auth_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&auth_file).unwrap()).unwrap();
    assert!(
        stored["auths"][&registry.addr]["auth"].is_string(),
        "{stored}"
    );
    stdout_of(&hull(&["pull", &name], b""));

    let logout = hull(&["logout", &registry.addr], b"");
    assert_eq!(
        stdout_of(&logout),
        format!("Removing login credentials for {}\n", registry.addr)
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&auth_file).unwrap()).unwrap();
    assert!(stored["auths"].get(&registry.addr).is_none(), "{stored}");
}

#[test]
fn the_docker_cli_tags_inspects_saves_removes_and_logs_in() {
    if !has_docker_cli() {
        return;
    }
    let daemon = loaded_daemon(&[]);
    let id = daemon.image_id("busybox");
    stdout_of(&daemon.docker(&["tag", "busybox", "viadocker:1"]));
    assert_eq!(daemon.image_id("viadocker:1"), id);
    let format = stdout_of(&daemon.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{json .RepoTags}} {{.Os}} {{json .Config.Cmd}}",
        "viadocker:1",
    ]));
    assert_eq!(
        format.trim(),
        format!(r#"{id} ["busybox:latest","viadocker:1"] linux ["sh"]"#)
    );

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("docker.tar");
    stdout_of(&daemon.docker(&["save", "-o", archive.to_str().unwrap(), "viadocker:1"]));
    let skopeo = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", archive.display()))
        .output()
        .unwrap();
    stdout_of(&skopeo);

    let conflict = daemon.docker(&["rmi", &id]);
    assert!(!conflict.status.success());
    assert!(
        text(&conflict.stderr).contains("must be forced"),
        "{}",
        text(&conflict.stderr)
    );
    let removed = stdout_of(&daemon.docker(&["rmi", "viadocker:1"]));
    assert_eq!(removed, "Untagged: viadocker:1\n");
    let missing = daemon.docker(&["image", "inspect", "viadocker:1"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr)
        .to_lowercase()
        .contains("no such image"));
    let loaded = stdout_of(&daemon.docker(&["load", "-i", archive.to_str().unwrap()]));
    assert!(loaded.contains("viadocker:1"), "{loaded}");
    let df = stdout_of(&daemon.docker(&["system", "df"]));
    assert!(df.lines().any(|l| l.starts_with("Images ")), "{df}");
    let pruned = stdout_of(&daemon.docker(&["image", "prune", "-a", "-f"]));
    assert!(pruned.contains(&format!("deleted: {id}")), "{pruned}");
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    assert_eq!(stdout_of(&daemon.hull(&["images", "-q"])), "");

    let registry = Registry::with_basic_auth("hull", "s3cret");
    let config = dir.path().join("docker-config");
    let login = |password: &str| {
        Command::new("docker")
            .arg("--config")
            .arg(&config)
            .arg("-H")
            .arg(format!("unix://{}", daemon.socket.display()))
            .args(["login", "-u", "hull", "-p", password, &registry.addr])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert!(!login("wrong").status.success());
    let ok = login("s3cret");
    assert!(stdout_of(&ok).contains("Login Succeeded"));
}
