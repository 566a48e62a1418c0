//! Each VM's QEMU is confined: a host uid of its own from Hull's range,
//! QEMU's seccomp sandbox, files handed over as descriptors, and template
//! memory that no clone can write.

mod common;

use std::path::PathBuf;

use common::{daemon, status_field, stdout_of, text};
use hull_vm::VmUids;

/// The QEMU of the container `id` (its run directory, named after the
/// id's first 16 digits, is on its command line).
fn qemu_of(daemon: &common::Daemon, id: &str) -> i32 {
    let vms = daemon.root.join("vms").display().to_string();
    let pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse().ok())
        .filter(|pid: &i32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.starts_with("qemu-system")
                && cmdline.contains(&vms)
                && cmdline.contains(&id[..16])
        })
        .collect();
    assert_eq!(pids.len(), 1, "the QEMU of {id}: {pids:?}");
    pids[0]
}

/// The uid a process runs as, checked to be the same real, effective,
/// saved and filesystem uid, and its gid to be the same number.
fn sole_uid(pid: i32) -> u32 {
    let uids: Vec<u32> = status_field(pid, "Uid")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let gids: Vec<u32> = status_field(pid, "Gid")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(uids.iter().all(|uid| *uid == uids[0]), "{uids:?}");
    assert_eq!(gids, uids, "gid = uid");
    assert_eq!(status_field(pid, "Groups"), "", "no supplementary groups");
    uids[0]
}

fn run_detached(daemon: &common::Daemon, args: &[&str]) -> String {
    let mut full = vec!["run", "-d"];
    full.extend_from_slice(args);
    stdout_of(&daemon.hull(&full)).trim().to_owned()
}

#[test]
fn each_container_s_qemu_runs_as_its_own_uid_under_seccomp() {
    let daemon = daemon();
    let first = run_detached(daemon, &["busybox", "sleep", "600"]);
    let second = run_detached(daemon, &["busybox", "sleep", "600"]);
    let (a, b) = (qemu_of(daemon, &first), qemu_of(daemon, &second));
    let (uid_a, uid_b) = (sole_uid(a), sole_uid(b));
    assert!(VmUids::DEFAULT.contains(uid_a), "{uid_a}");
    assert!(VmUids::DEFAULT.contains(uid_b), "{uid_b}");
    assert_ne!(uid_a, uid_b, "two live VMs share no uid");
    for pid in [a, b] {
        assert_eq!(status_field(pid, "Seccomp"), "2", "QEMU's sandbox");
        assert_eq!(status_field(pid, "NoNewPrivs"), "1");
        // 9p's passthrough model's four (every VM has a share), no more.
        assert_eq!(status_field(pid, "CapEff"), "000000000000001b");
        assert_eq!(status_field(pid, "CapAmb"), "000000000000001b");
        // None of hulld's environment (its HULL_* settings among it).
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<String> = environ
            .split(|b| *b == 0)
            .filter(|v| !v.is_empty())
            .map(|v| text(v).split('=').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(names, ["PATH"], "QEMU's environment");
    }
    // The VMs still run commands.
    let exec = stdout_of(&daemon.hull(&["exec", &first, "echo", "alive"]));
    assert_eq!(exec, "alive\n");
    stdout_of(&daemon.hull(&["rm", "-f", &first, &second]));
    // The uid is free again once its QEMU is gone, and the next VM takes it.
    let third = run_detached(daemon, &["busybox", "sleep", "600"]);
    let uid = sole_uid(qemu_of(daemon, &third));
    // The first free uid: one of theirs, or a lower one that a VM of a
    // test running beside this one gave back meanwhile.
    assert!(uid <= uid_a.max(uid_b), "{uid} reuses a freed uid");
    stdout_of(&daemon.hull(&["rm", "-f", &third]));
}

/// The template memory files a process has open: the descriptor's
/// `/proc` path, and its open flags.
fn open_memory_files(pid: i32) -> Vec<(PathBuf, u32)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            target.ends_with("memory").then_some(())?;
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info
                .lines()
                .find_map(|line| line.strip_prefix("flags:"))
                .map(|octal| u32::from_str_radix(octal.trim(), 8).unwrap())?;
            Some((fd.path(), flags))
        })
        .collect()
}

/// The file below `dir` that is the same file as `opened`.
fn host_path_of(opened: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(opened).unwrap();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let found = std::fs::symlink_metadata(&path).unwrap();
            if found.is_dir() {
                pending.push(path);
            } else if (found.dev(), found.ino()) == (meta.dev(), meta.ino()) {
                return path;
            }
        }
    }
    panic!("{} is not below {}", opened.display(), dir.display())
}

#[test]
fn a_template_clone_runs_and_cannot_write_its_template() {
    use std::os::unix::fs::MetadataExt;
    let daemon = daemon();
    let id = run_detached(daemon, &["busybox", "sleep", "600"]);
    assert!(
        daemon
            .log()
            .lines()
            .any(|line| line.contains(&id[..12]) && line.contains("start=\"template clone\"")),
        "{}",
        daemon.log()
    );
    let qemu = qemu_of(daemon, &id);
    let files = open_memory_files(qemu);
    assert!(!files.is_empty(), "the clone maps its template's memory");
    for (path, flags) in &files {
        assert_eq!(
            flags & libc::O_ACCMODE as u32,
            libc::O_RDONLY as u32,
            "{} is open for writing",
            path.display()
        );
    }
    let templates = daemon.root.parent().unwrap().join("templates");
    let memory = host_path_of(&files[0].0, &templates);
    let meta = std::fs::metadata(&memory).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    // The template directory is root's alone.
    let meta = std::fs::metadata(&templates).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));
    // As the clone's uid, the file cannot be opened for writing.
    let uid = sole_uid(qemu);
    let opened = open_for_writing_as(uid, &memory);
    assert!(opened.contains("Permission denied"), "{opened}");
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
}

/// What a shell running as `uid` says when it opens `path` to append.
fn open_for_writing_as(uid: u32, path: &std::path::Path) -> String {
    use std::os::unix::process::CommandExt;
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 3>>\"$1\" && echo opened")
        .arg("sh")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    format!("{}{}", text(&output.stdout), text(&output.stderr))
}

#[test]
fn a_host_bind_keeps_owners_through_a_confined_qemu() {
    use std::os::unix::fs::MetadataExt;
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("from-host");
    std::fs::write(&host_file, "host\n").unwrap();
    std::os::unix::fs::chown(&host_file, Some(4321), Some(4322)).unwrap();
    let bind = format!("{}:/src", dir.path().display());
    let id = run_detached(daemon, &["-v", &bind, "busybox", "sleep", "600"]);
    let qemu = qemu_of(daemon, &id);
    assert!(VmUids::DEFAULT.contains(sole_uid(qemu)));
    assert_eq!(status_field(qemu, "Seccomp"), "2");
    // chown, dac_override, fowner, fsetid: what 9p passthrough needs.
    assert_eq!(status_field(qemu, "CapEff"), "000000000000001b");
    assert_eq!(status_field(qemu, "CapAmb"), "000000000000001b");
    let script = "stat -c '%u:%g' /src/from-host; echo guest > /src/made; chown 1234:5678 /src/made; mkdir /src/d; chmod 2750 /src/d";
    let out = stdout_of(&daemon.hull(&["exec", &id, "sh", "-c", script]));
    assert_eq!(out, "4321:4322\n");
    let made = std::fs::metadata(dir.path().join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1234, 5678));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("made")).unwrap(),
        "guest\n"
    );
    let d = std::fs::metadata(dir.path().join("d")).unwrap();
    assert_eq!(d.mode() & 0o7777, 0o2750);
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
}

#[test]
fn hot_plugged_disks_and_volumes_work_by_descriptor() {
    let daemon = daemon();
    stdout_of(&daemon.hull(&["volume", "create", "-o", "size=64m", "confined"]));
    let write = [
        "run",
        "--rm",
        "-v",
        "confined:/data",
        "busybox",
        "sh",
        "-c",
        "echo kept > /data/f",
    ];
    stdout_of(&daemon.hull(&write));
    let id = run_detached(daemon, &["-v", "confined:/data", "busybox", "sleep", "600"]);
    let out = stdout_of(&daemon.hull(&["exec", &id, "cat", "/data/f"]));
    assert_eq!(out, "kept\n");
    // QEMU got the disks as descriptors: no image path on its command line.
    let qemu = qemu_of(daemon, &id);
    let cmdline = std::fs::read(format!("/proc/{qemu}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        !cmdline.contains(".erofs") && !cmdline.contains(".img"),
        "{cmdline}"
    );
    assert!(cmdline.contains("-kernel /proc/self/fd/"), "{cmdline}");
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
    stdout_of(&daemon.hull(&["volume", "rm", "confined"]));
}

#[test]
fn a_template_directory_of_another_mode_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::set_permissions(&templates, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = common::loaded_daemon(&[("HULL_TEMPLATE_DIR", templates.to_str().unwrap())]);
    let output = daemon.hull(&["run", "--rm", "busybox", "true"]);
    assert_ne!(output.status.code(), Some(0));
    let err = text(&output.stderr);
    assert!(
        err.contains(&templates.display().to_string()) && err.contains("mode 0755"),
        "{err}"
    );
}

#[test]
fn a_port_below_1024_is_published_by_a_confined_qemu() {
    let daemon = daemon();
    // A port below 1024 that nothing on loopback holds.
    let port = (700..1000)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free low port");
    let publish = format!("127.0.0.1:{port}:8080");
    let serve = "mkdir -p /www && echo low > /www/index.html && exec httpd -f -p 8080 -h /www";
    let id = run_detached(daemon, &["-p", &publish, "busybox", "sh", "-c", serve]);
    assert_eq!(common::http_get("127.0.0.1", port), "low\n");
    let qemu = qemu_of(daemon, &id);
    assert!(VmUids::DEFAULT.contains(sole_uid(qemu)));
    // cap_net_bind_service beside the share's four.
    assert_eq!(status_field(qemu, "CapEff"), "000000000000041b");
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
}

/// The descriptors `pid` holds, with the files they name.
fn open_files(pid: i32) -> Vec<(String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            Some((
                fd.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// The descriptor number behind QEMU's `flag /proc/self/fd/N`.
fn fd_of_flag(pid: i32, flag: &str) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let value = args
        .iter()
        .skip_while(|arg| *arg != flag)
        .nth(1)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    value.strip_prefix("/proc/self/fd/").unwrap().to_owned()
}

#[test]
fn a_qemu_with_a_host_share_cannot_reopen_the_files_it_reads_for_writing() {
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let bind = format!("{}:/src", dir.path().display());
    let id = run_detached(daemon, &["-v", &bind, "busybox", "sleep", "600"]);
    let qemu = qemu_of(daemon, &id);
    // The capabilities 9p keeps owners with, which would let it write
    // any file it can name.
    assert_eq!(status_field(qemu, "CapEff"), "000000000000001b");
    let files = open_files(qemu);
    let named = |part: &str| -> Vec<String> {
        files
            .iter()
            .filter(|(_, target)| target.contains(part))
            .map(|(fd, _)| fd.clone())
            .collect()
    };
    let erofs = named(".erofs");
    assert!(!erofs.is_empty(), "no rootfs image among {files:?}");
    assert!(
        named("vm-uids").is_empty(),
        "QEMU holds its uid slot: {files:?}"
    );
    let mut read_only = vec![fd_of_flag(qemu, "-kernel"), fd_of_flag(qemu, "-initrd")];
    read_only.extend(erofs);
    for fd in read_only {
        let path = format!("/proc/{qemu}/fd/{fd}");
        let script = format!(
            "head -c1 {path} >/dev/null && echo readable; \
             (exec 3<>{path}) && echo opened; chmod 666 {path} && echo chmodded"
        );
        let said = common::as_qemu::run_as(qemu, &script);
        assert!(said.contains("readable"), "fd {fd}: {said}");
        assert!(
            !said.contains("opened") && !said.contains("chmodded"),
            "fd {fd}: {said}"
        );
        assert_eq!(
            said.matches("Read-only file system").count(),
            2,
            "fd {fd}: {said}"
        );
    }
    // The same process opens what QEMU writes: only the mount refuses.
    let console = named("console.log");
    let script = format!("exec 3>>/proc/{qemu}/fd/{} && echo opened", console[0]);
    assert_eq!(common::as_qemu::run_as(qemu, &script), "opened\n");
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
}

#[test]
fn an_operator_chosen_uid_range_confines_qemu_and_the_firewall_follows_it() {
    // Its own namespace: the firewall it writes must not replace the one
    // the host's other daemons rely on.
    let netns = common::netns::NetNs::new("uids");
    let slots = tempfile::tempdir().unwrap();
    let range = VmUids::parse("2100000000:64").unwrap();
    let daemon = common::Daemon::start_in(
        Some(&netns.name),
        &[
            ("HULL_VM_UIDS", "2100000000:64"),
            ("HULL_VM_UID_DIR", slots.path().to_str().unwrap()),
            ("HULL_NO_TEMPLATES", "1"),
        ],
    );
    let archive = common::busybox_archive();
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    let id = run_detached(&daemon, &["busybox", "sleep", "600"]);
    let uid = sole_uid(qemu_of(&daemon, &id));
    assert!(
        range.contains(uid) && !VmUids::DEFAULT.contains(uid),
        "{uid}"
    );
    let rules = text(&netns.exec("nft", &["list", "table", "inet", "hull"]).stdout);
    assert!(rules.contains("2100000000-2100000063"), "{rules}");
    stdout_of(&daemon.hull(&["rm", "-f", &id]));

    let refused = std::process::Command::new(common::bin_dir().join("hulld"))
        .args(["--vm-uids", "1000:64", "--root"])
        .arg(slots.path().join("never"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("FIRST:COUNT"),
        "{}",
        text(&refused.stderr)
    );
}
