//! The stock docker CLI looking into a container that hulld runs: `docker
//! top` lists its processes, `docker stats` its VM's figures, and `docker
//! cp` moves files in and out of it, running or stopped.

mod common;

use common::{assert_fails, daemon, has_docker_cli, stdout_of, text};

#[test]
fn top_stats_and_cp_reach_into_a_running_container() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let run = daemon.docker(&["run", "-d", "--name", "files", "busybox", "sleep", "1000"]);
    let id = stdout_of(&run).trim().to_owned();

    let top = stdout_of(&daemon.docker(&["top", "files"]));
    let mut lines = top.lines();
    let titles: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    let sleep = lines
        .find(|line| line.ends_with("sleep 1000"))
        .unwrap_or_else(|| panic!("no sleep 1000 in:\n{top}"));
    assert!(sleep.starts_with("root "), "{sleep}");

    let stats = stdout_of(&daemon.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}|{{.PIDs}}|{{.MemUsage}}",
        "files",
    ]));
    let fields: Vec<&str> = stats.trim().split('|').collect();
    assert_eq!(fields[..2], ["files", "1"], "{stats}");
    let (usage, limit) = fields[2]
        .split_once(" / ")
        .unwrap_or_else(|| panic!("no usage / limit in {stats:?}"));
    assert_ne!(usage, "0B", "{stats}");
    assert!(limit.ends_with("MiB") || limit.ends_with("GiB"), "{stats}");

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let copied = daemon.docker(&["cp", "files:/etc/hostname", out.to_str().unwrap()]);
    stdout_of(&copied);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{}\n", &id[..12])
    );

    let payload = dir.path().join("payload");
    std::fs::create_dir_all(payload.join("sub")).unwrap();
    std::fs::write(payload.join("file"), "copied in\n").unwrap();
    std::fs::write(payload.join("sub/deeper"), "further down\n").unwrap();
    stdout_of(&daemon.docker(&["cp", payload.to_str().unwrap(), "files:/tmp/"]));
    let read_back = daemon.docker(&["exec", "files", "cat", "/tmp/payload/file"]);
    assert_eq!(stdout_of(&read_back), "copied in\n");

    // And out again: a directory comes back whole.
    let back = dir.path().join("back");
    stdout_of(&daemon.docker(&["cp", "files:/tmp/payload", back.to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(back.join("sub/deeper")).unwrap(),
        "further down\n"
    );

    // `dir/.` is the directory's contents, here into a new directory.
    let contents = dir.path().join("contents");
    let dot = daemon.docker(&["cp", "files:/tmp/payload/.", contents.to_str().unwrap()]);
    stdout_of(&dot);
    assert_eq!(
        std::fs::read_to_string(contents.join("sub/deeper")).unwrap(),
        "further down\n"
    );

    let missing = daemon.docker(&["cp", "files:/nope", dir.path().to_str().unwrap()]);
    assert_fails(
        &missing,
        1,
        &["Could not find the file /nope in container files"],
    );

    // A stopped container has no VM: top says so, stats reads zero.
    stdout_of(&daemon.docker(&["kill", "files"]));
    stdout_of(&daemon.docker(&["wait", "files"]));
    let top = daemon.docker(&["top", "files"]);
    assert_fails(&top, 1, &[&format!("container {id} is not running")]);
    let stats = daemon.docker(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}} {{.PIDs}}",
        "files",
    ]);
    assert_eq!(
        stdout_of(&stats).trim(),
        "0B / 0B 0",
        "{}",
        text(&stats.stderr)
    );
    // But cp reaches its files both ways, as docker's does: what its
    // last run wrote comes out, and what goes in is there at its next start.
    let stopped_out = dir.path().join("stopped-out");
    stdout_of(&daemon.docker(&[
        "cp",
        "files:/tmp/payload/file",
        stopped_out.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read_to_string(&stopped_out).unwrap(),
        "copied in\n"
    );
    std::fs::write(payload.join("file"), "copied in while stopped\n").unwrap();
    stdout_of(&daemon.docker(&["cp", payload.to_str().unwrap(), "files:/tmp/"]));
    let missing = daemon.docker(&["cp", "files:/nope", dir.path().to_str().unwrap()]);
    assert_fails(
        &missing,
        1,
        &["Could not find the file /nope in container files"],
    );
    stdout_of(&daemon.docker(&["start", "files"]));
    let read_back = daemon.docker(&["exec", "files", "cat", "/tmp/payload/file"]);
    assert_eq!(stdout_of(&read_back), "copied in while stopped\n");

    stdout_of(&daemon.docker(&["rm", "-f", "files"]));
}

#[test]
fn hull_cp_copies_in_and_out_of_running_and_stopped_containers() {
    let daemon = daemon();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path();
    std::fs::create_dir_all(host.join("tree/sub")).unwrap();
    std::fs::write(host.join("tree/sub/f"), "deep\n").unwrap();
    std::fs::write(host.join("file"), "top\n").unwrap();
    let at = |name: &str| host.join(name).to_str().unwrap().to_owned();
    stdout_of(&daemon.hull(&["run", "-d", "--name", "hullcp", "busybox", "sleep", "1000"]));

    // In: a tree into an existing directory, a file under a new name.
    stdout_of(&daemon.hull(&["cp", &at("tree"), "hullcp:/tmp"]));
    stdout_of(&daemon.hull(&["cp", &at("file"), "hullcp:/etc/renamed"]));
    let inside = daemon.hull(&["exec", "hullcp", "cat", "/tmp/tree/sub/f", "/etc/renamed"]);
    assert_eq!(stdout_of(&inside), "deep\ntop\n");

    // Out of the stopped container: a tree under a new name, a file into a
    // directory, a tar to standard output.
    stdout_of(&daemon.hull(&["stop", "-t", "1", "hullcp"]));
    stdout_of(&daemon.hull(&["cp", "hullcp:/tmp/tree", &at("copied")]));
    assert_eq!(
        std::fs::read_to_string(host.join("copied/sub/f")).unwrap(),
        "deep\n"
    );
    std::fs::create_dir(host.join("into")).unwrap();
    stdout_of(&daemon.hull(&["cp", "hullcp:/etc/renamed", &at("into")]));
    assert_eq!(
        std::fs::read_to_string(host.join("into/renamed")).unwrap(),
        "top\n"
    );
    let tar = daemon.hull(&["cp", "hullcp:/etc/renamed", "-"]);
    assert!(tar.status.success(), "{}", text(&tar.stderr));
    let mut archive = tar::Archive::new(&tar.stdout[..]);
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["renamed"]);

    // What is missing says so, and nothing is written.
    assert_fails(
        &daemon.hull(&["cp", "hullcp:/nope", &at("x")]),
        1,
        &["/nope", "hullcp"],
    );
    assert_fails(
        &daemon.hull(&["cp", "nosuch:/x", &at("x")]),
        1,
        &["No such container"],
    );
    assert_fails(
        &daemon.hull(&["cp", &at("none"), "hullcp:/x"]),
        1,
        &["none"],
    );
    assert_fails(&daemon.hull(&["cp", "a", "b"]), 1, &["CONTAINER:PATH"]);
    assert!(!host.join("x").exists());
    stdout_of(&daemon.hull(&["rm", "-f", "hullcp"]));
}
