//! Volumes end to end: a named volume's data outliving its containers and
//! read in another VM, read-only mounts, a host directory seen live in both
//! directions over 9p, a volume in use refused removal, anonymous volumes
//! removed with `rm -v`, the image's `VOLUME`s filled from the image, data
//! on the host's disk once its container exits, snapshots and restores, and
//! the docker CLI's `-v` and `docker volume`.

mod common;

use common::{
    assert_fails, daemon, has_docker_cli, layered_archive, loaded_daemon, stdout_of, text,
};

fn hull_out(args: &[&str]) -> String {
    stdout_of(&daemon().hull(args))
}

#[test]
fn a_named_volumes_data_outlives_its_containers() {
    assert_eq!(
        hull_out(&["volume", "create", "-o", "size=64m", "data"]),
        "data\n"
    );
    let listing = hull_out(&["volume", "ls"]);
    assert!(listing.lines().any(|l| l.ends_with(" data")), "{listing}");

    // Written in one VM, read in another after the first is gone.
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/file && df -m /data | tail -1",
    ]);
    let df = stdout_of(&output);
    // A 64 MiB ext4 disk, not the VM's root.
    assert!(
        df.split_whitespace()
            .nth(1)
            .is_some_and(|mib| mib.parse::<u32>().is_ok_and(|m| (40..=64).contains(&m))),
        "{df}"
    );
    assert_eq!(
        hull_out(&[
            "run",
            "--rm",
            "-v",
            "data:/mnt/d:ro",
            "busybox",
            "cat",
            "/mnt/d/file"
        ]),
        "kept\n"
    );
    // Read-only is honoured.
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-v",
        "data:/d:ro",
        "busybox",
        "sh",
        "-c",
        "touch /d/new 2>/dev/null && echo wrote || echo refused",
    ]);
    assert_eq!(stdout_of(&output), "refused\n");

    // In use by a container, even a stopped one, it stays.
    hull_out(&[
        "create",
        "--name",
        "holder",
        "-v",
        "data:/data",
        "busybox",
        "true",
    ]);
    assert_fails(
        &daemon().hull(&["volume", "rm", "data"]),
        1,
        &["volume is in use"],
    );
    // One running VM at a time holds its disk.
    hull_out(&[
        "run",
        "-d",
        "--name",
        "runner",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert_fails(
        &daemon().hull(&["start", "holder"]),
        1,
        &["attached to the running container runner"],
    );
    hull_out(&["rm", "-f", "holder", "runner"]);
    assert_eq!(hull_out(&["volume", "rm", "data"]), "data\n");
    assert_fails(
        &daemon().hull(&["volume", "inspect", "data"]),
        1,
        &["no such volume"],
    );
}

#[test]
fn a_host_directory_is_shared_live_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("from-host"), "host\n").unwrap();
    let bind = format!("{}:/src", dir.path().display());
    hull_out(&[
        "run", "-d", "--name", "binder", "-v", &bind, "busybox", "sleep", "1000",
    ]);
    assert_eq!(
        hull_out(&["exec", "binder", "cat", "/src/from-host"]),
        "host\n"
    );
    hull_out(&["exec", "binder", "sh", "-c", "echo guest > /src/from-guest"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("from-guest")).unwrap(),
        "guest\n"
    );
    // A change on the host is seen at once.
    std::fs::write(dir.path().join("from-host"), "changed\n").unwrap();
    assert_eq!(
        hull_out(&["exec", "binder", "cat", "/src/from-host"]),
        "changed\n"
    );
    hull_out(&["rm", "-f", "binder"]);

    // Read-only binds refuse writes.
    let bind = format!("{}:/src:ro", dir.path().display());
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-v",
        &bind,
        "busybox",
        "sh",
        "-c",
        "cat /src/from-host; touch /src/x 2>/dev/null && echo wrote || echo refused",
    ]);
    assert_eq!(stdout_of(&output), "changed\nrefused\n");
    assert!(!dir.path().join("x").exists());
}

#[test]
fn anonymous_volumes_go_with_rm_v() {
    let id = hull_out(&[
        "run", "-d", "--name", "anon", "-v", "/cache", "busybox", "sleep", "1000",
    ]);
    let inspect: serde_json::Value = serde_json::from_str(&hull_out(&["inspect", "anon"])).unwrap();
    let mounts = inspect[0]["Mounts"].as_array().unwrap().clone();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Destination"], "/cache");
    let name = mounts[0]["Name"].as_str().unwrap().to_owned();
    assert_eq!(name.len(), 64);
    assert!(hull_out(&["volume", "ls"]).contains(&name));
    hull_out(&["rm", "-f", "-v", id.trim()]);
    assert!(!hull_out(&["volume", "ls"]).contains(&name));
}

#[test]
fn the_docker_cli_mounts_volumes() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let output = daemon.docker(&["volume", "create", "dockervol"]);
    assert_eq!(
        text(&output.stdout),
        "dockervol\n",
        "{}",
        text(&output.stderr)
    );
    let output = daemon.docker(&[
        "run",
        "--rm",
        "-v",
        "dockervol:/v",
        "busybox",
        "sh",
        "-c",
        "echo via-docker > /v/f",
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = daemon.docker(&[
        "run",
        "--rm",
        "-v",
        "dockervol:/v:ro",
        "busybox",
        "cat",
        "/v/f",
    ]);
    assert_eq!(
        text(&output.stdout),
        "via-docker\n",
        "{}",
        text(&output.stderr)
    );
    let output = daemon.docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Name}} {{.Driver}}",
        "dockervol",
    ]);
    assert_eq!(
        text(&output.stdout),
        "dockervol local\n",
        "{}",
        text(&output.stderr)
    );
    let output = daemon.docker(&["volume", "rm", "dockervol"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

/// A layer holding `/seed`, owned by 1000:1000 with mode 0750: a file of
/// mode 0640, a symlink and a root-owned subdirectory.
fn seed_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, owner: u64, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_mtime(1_700_000_000);
        header.set_size(data.len() as u64);
        if kind == tar::EntryType::Symlink {
            header.set_link_name("greeting").unwrap();
        }
        builder.append_data(&mut header, path, data).unwrap();
    };
    entry("seed/", tar::EntryType::Directory, 0o750, 1000, b"");
    entry(
        "seed/greeting",
        tar::EntryType::Regular,
        0o640,
        1000,
        b"from the image\n",
    );
    entry("seed/link", tar::EntryType::Symlink, 0o777, 1000, b"");
    entry("seed/sub/", tar::EntryType::Directory, 0o755, 0, b"");
    entry(
        "seed/sub/deep",
        tar::EntryType::Regular,
        0o600,
        0,
        b"deep\n",
    );
    builder.into_inner().unwrap()
}

#[test]
fn the_images_volumes_become_anonymous_volumes_filled_from_the_image() {
    let archive = layered_archive("seeded:1", Some(seed_layer()), |config| {
        config["Volumes"] = serde_json::json!({"/seed": {}});
    });
    hull_out(&["load", "-i", archive.to_str().unwrap()]);

    let id = hull_out(&["run", "-d", "--name", "seeded", "seeded:1", "sleep", "1000"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&hull_out(&["inspect", "seeded"])).unwrap();
    let mounts = inspect[0]["Mounts"].as_array().unwrap().clone();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["Type"], "volume");
    assert_eq!(mounts[0]["Destination"], "/seed");
    let name = mounts[0]["Name"].as_str().unwrap().to_owned();
    assert!(hull_out(&["volume", "ls"]).contains(&name));

    // The volume's directory (over 9p), holding the image's files with
    // their owners, modes and links.
    let script = "awk '$2==\"/seed\"{print $3}' /proc/mounts; \
        stat -c '%n %u:%g %a' /seed /seed/greeting /seed/sub /seed/sub/deep; \
        readlink /seed/link; cat /seed/link /seed/sub/deep";
    assert_eq!(
        hull_out(&["exec", "seeded", "sh", "-c", script]),
        "9p\n\
         /seed 1000:1000 750\n\
         /seed/greeting 1000:1000 640\n\
         /seed/sub 0:0 755\n\
         /seed/sub/deep 0:0 600\n\
         greeting\n\
         from the image\n\
         deep\n"
    );
    // What the container writes there is the volume's, not copied over again
    // when the container starts again.
    hull_out(&[
        "exec",
        "seeded",
        "sh",
        "-c",
        "echo changed > /seed/greeting",
    ]);
    hull_out(&["restart", "-t", "0", "seeded"]);
    assert_eq!(
        hull_out(&["exec", "seeded", "cat", "/seed/greeting"]),
        "changed\n"
    );

    // A named volume mounted there is filled the same way when it is new;
    // a host directory is shown as it is.
    assert_eq!(
        hull_out(&[
            "run",
            "--rm",
            "-v",
            "seedvol:/seed",
            "seeded:1",
            "cat",
            "/seed/greeting"
        ]),
        "from the image\n"
    );
    let host = tempfile::tempdir().unwrap();
    let bind = format!("{}:/seed", host.path().display());
    assert_eq!(
        hull_out(&["run", "--rm", "-v", &bind, "seeded:1", "ls", "-A", "/seed"]),
        ""
    );
    hull_out(&["volume", "rm", "seedvol"]);

    hull_out(&["rm", "-f", "-v", id.trim()]);
    assert!(!hull_out(&["volume", "ls"]).contains(&name));
}

/// The file `path` of the ext4 volume disk `disk`, read on the host
/// without any VM.
fn read_from_disk(disk: &str, path: &str) -> String {
    let output = std::process::Command::new("debugfs")
        .args(["-R", &format!("cat {path}"), disk])
        .output()
        .expect("debugfs runs (e2fsprogs)");
    text(&output.stdout)
}

#[test]
fn a_volumes_data_is_on_the_hosts_disk_once_its_container_exits() {
    hull_out(&["volume", "create", "-o", "size=64m", "durable"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&hull_out(&["volume", "inspect", "durable"])).unwrap();
    let disk = inspect[0]["Mountpoint"].as_str().unwrap().to_owned();

    // Written without sync by a process that then exits: the guest's page
    // cache would hold it for 30 seconds, its journal for 5.
    hull_out(&[
        "run",
        "--rm",
        "-v",
        "durable:/data",
        "busybox",
        "sh",
        "-c",
        "echo first > /data/f",
    ]);
    assert_eq!(read_from_disk(&disk, "/f"), "first\n");

    // Written just before the process is killed by stop.
    hull_out(&[
        "run",
        "-d",
        "--name",
        "writer",
        "-v",
        "durable:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    hull_out(&["exec", "writer", "sh", "-c", "echo second > /data/g"]);
    hull_out(&["stop", "-t", "0", "writer"]);
    assert_eq!(read_from_disk(&disk, "/g"), "second\n");
    // The filesystem was left clean: nothing for fsck to repair.
    let fsck = std::process::Command::new("e2fsck")
        .args(["-f", "-n", &disk])
        .output()
        .unwrap();
    assert!(fsck.status.success(), "{}", text(&fsck.stdout));

    hull_out(&["rm", "writer"]);
    hull_out(&["volume", "rm", "durable"]);
}

#[test]
fn a_snapshot_keeps_a_volumes_data_and_restores_it_as_a_new_volume() {
    hull_out(&["volume", "create", "-o", "size=64m", "snapsrc"]);
    let write = |volume: &str, text: &str| {
        let mount = format!("{volume}:/data");
        let script = format!("echo {text} > /data/f");
        hull_out(&["run", "--rm", "-v", &mount, "busybox", "sh", "-c", &script]);
    };
    let read = |volume: &str| {
        let mount = format!("{volume}:/data:ro");
        hull_out(&["run", "--rm", "-v", &mount, "busybox", "cat", "/data/f"])
    };
    write("snapsrc", "one");
    assert_eq!(
        hull_out(&["volume", "snapshot", "snapsrc", "snap1"]),
        "snap1\n"
    );
    assert_fails(
        &daemon().hull(&["volume", "snapshot", "snapsrc", "snap1"]),
        1,
        &["snapshot snap1 exists already"],
    );
    write("snapsrc", "two");

    let listing = hull_out(&["volume", "snapshot", "ls"]);
    let row = listing
        .lines()
        .find(|l| l.starts_with("snap1 "))
        .unwrap_or_else(|| panic!("{listing}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[1], "snapsrc", "{listing}");
    // This host's filesystem decides: a reflink, or a sparse copy.
    assert!(["reflink", "copy"].contains(&columns[4]), "{listing}");

    assert_eq!(
        hull_out(&["volume", "create", "--from", "snap1", "restored"]),
        "restored\n"
    );
    assert_eq!(read("restored"), "one\n");
    assert_eq!(read("snapsrc"), "two\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&hull_out(&["volume", "inspect", "restored"])).unwrap();
    assert_eq!(inspect[0]["Options"]["size"], (64u64 << 20).to_string());
    assert_fails(
        &daemon().hull(&["volume", "create", "--from", "snap1", "snapsrc"]),
        1,
        &["volume snapsrc exists already"],
    );
    assert_fails(
        &daemon().hull(&["volume", "create", "--from", "nosuch", "other"]),
        1,
        &["no such snapshot"],
    );

    // A running container's volume: its filesystem is frozen for the copy,
    // which so holds what the container wrote into the guest's cache; the
    // container's writes go on after.
    hull_out(&[
        "run",
        "-d",
        "--name",
        "snapuser",
        "-v",
        "snapsrc:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    hull_out(&["exec", "snapuser", "sh", "-c", "echo three > /data/f"]);
    assert_eq!(
        hull_out(&["volume", "snapshot", "snapsrc", "snap2"]),
        "snap2\n"
    );
    assert_eq!(
        hull_out(&[
            "exec",
            "snapuser",
            "sh",
            "-c",
            "echo four > /data/f; cat /data/f"
        ]),
        "four\n"
    );
    hull_out(&["rm", "-f", "snapuser"]);
    hull_out(&["volume", "create", "--from", "snap2", "live"]);
    assert_eq!(read("live"), "three\n");
    hull_out(&["volume", "rm", "live"]);

    // Snapshots outlive their volume; removing one leaves restored volumes.
    hull_out(&["volume", "rm", "snapsrc"]);
    assert_eq!(
        hull_out(&["volume", "snapshot", "rm", "snap1", "snap2"]),
        "snap1\nsnap2\n"
    );
    assert!(!hull_out(&["volume", "snapshot", "ls"]).contains("snap1"));
    assert_eq!(read("restored"), "one\n");
    hull_out(&["volume", "rm", "restored"]);
}

#[test]
fn a_volumes_data_survives_a_crash_of_hulld_and_its_containers_removal() {
    let cold = [("HULL_NO_TEMPLATES", "1")];
    let daemon = loaded_daemon(&cold);
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    hull(&["volume", "create", "-o", "size=64m", "kept"]);
    hull(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "-v",
        "kept:/data",
        "busybox",
        "sleep",
        "1000",
    ]);
    hull(&["exec", "keeper", "sh", "-c", "echo before > /data/a"]);

    // The VM outlives hulld; the next hulld takes it back, and its stop
    // leaves the data on the host's disk.
    daemon.restart_after_crash(&cold);
    common::eventually(60, || {
        let exec = daemon.hull(&["exec", "keeper", "sh", "-c", "echo after > /data/b"]);
        exec.status
            .success()
            .then_some(())
            .ok_or_else(|| format!("{}\n{}", text(&exec.stderr), daemon.log()))
    });
    hull(&["stop", "-t", "0", "keeper"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&hull(&["volume", "inspect", "kept"])).unwrap();
    let disk = inspect[0]["Mountpoint"].as_str().unwrap().to_owned();
    assert_eq!(read_from_disk(&disk, "/b"), "after\n");

    hull(&["rm", "-v", "keeper"]);
    assert_eq!(
        hull(&[
            "run",
            "--rm",
            "-v",
            "kept:/data",
            "busybox",
            "cat",
            "/data/a",
            "/data/b"
        ]),
        "before\nafter\n"
    );
}
