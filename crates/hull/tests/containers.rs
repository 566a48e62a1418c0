//! Containers that outlive a command, end to end through the `hull` CLI:
//! run -d, ps, logs, exec, stop, start, restart, kill, wait, rm and restart
//! policies, each over real VMs.

mod common;

use common::{assert_fails, daemon, stdout_of, text};

/// Waits until `check` holds, or fails naming `what`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    common::eventually(60, || check().then_some(()).ok_or_else(|| what.to_owned()));
}

/// `hull inspect name`'s only element.
fn inspect(name: &str) -> serde_json::Value {
    let output = stdout_of(&daemon().hull(&["inspect", name]));
    let mut array: Vec<serde_json::Value> = serde_json::from_str(&output).unwrap();
    assert_eq!(array.len(), 1, "{output}");
    array.remove(0)
}

/// The `hull ps` row of the container `name` (the last column is NAMES).
fn ps_row(args: &[&str], name: &str) -> Option<String> {
    let mut full = vec!["ps"];
    full.extend_from_slice(args);
    let listing = stdout_of(&daemon().hull(&full));
    assert!(listing.starts_with("CONTAINER ID   IMAGE"), "{listing}");
    listing
        .lines()
        .find(|line| line.split_whitespace().last() == Some(name))
        .map(str::to_owned)
}

fn hull_out(args: &[&str]) -> String {
    stdout_of(&daemon().hull(args))
}

#[test]
fn a_detached_container_lives_through_exec_stop_start_restart_kill_and_rm() {
    let id = hull_out(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; while true; do echo tick; sleep 1; done",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    let row = ps_row(&[], "web").expect("ps lists the running container");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains("Up "), "{row}");
    assert!(row.contains("\"sh -c trap 'echo go…\""), "{row}");
    let filtered = hull_out(&["ps", "-q", "--no-trunc", "-f", "label=tier=front"]);
    assert_eq!(filtered.trim(), id);

    eventually("two ticks in the logs", || {
        hull_out(&["logs", "web"]).matches("tick").count() >= 2
    });
    assert_eq!(hull_out(&["logs", "--tail", "1", "web"]), "tick\n");

    // exec: exit codes, stdin, and stdout and stderr kept apart.
    let output = daemon().hull(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "out\n");
    assert_eq!(text(&output.stderr), "err\n");
    let output = daemon().hull_with_input(&["exec", "-i", "web", "cat"], b"piped\n");
    assert_eq!(stdout_of(&output), "piped\n");
    hull_out(&["exec", "web", "sh", "-c", "echo kept > /root/note"]);

    // kill -s reaches the process's trap.
    assert_eq!(hull_out(&["kill", "-s", "USR1", "web"]), "web\n");
    eventually("the trap's line in the logs", || {
        hull_out(&["logs", "web"]).contains("got-usr1")
    });

    // PID 1 has no TERM handler, so stop kills it after its timeout.
    assert_eq!(hull_out(&["stop", "-t", "1", "web"]), "web\n");
    assert!(ps_row(&[], "web").is_none(), "ps lists only running ones");
    let row = ps_row(&["-a"], "web").expect("ps -a lists the stopped container");
    assert!(
        row.contains("Exited (137)") || row.contains("Exited (143)"),
        "{row}"
    );
    let output = daemon().hull(&["exec", "web", "true"]);
    assert_fails(
        &output,
        1,
        &["Error response from daemon:", "is not running"],
    );

    // The writable layer survives the stop.
    assert_eq!(hull_out(&["start", "web"]), "web\n");
    assert_eq!(hull_out(&["exec", "web", "cat", "/root/note"]), "kept\n");

    let started = inspect("web")["State"]["StartedAt"].clone();
    assert_eq!(hull_out(&["restart", "-t", "1", "web"]), "web\n");
    let state = inspect("web")["State"].clone();
    assert_eq!(state["Running"], true);
    assert_ne!(state["StartedAt"], started, "restart starts it anew");

    assert_eq!(hull_out(&["kill", "web"]), "web\n");
    assert_eq!(hull_out(&["wait", "web"]), "137\n");

    assert_eq!(hull_out(&["start", "web"]), "web\n");
    let output = daemon().hull(&["rm", "web"]);
    assert_fails(
        &output,
        1,
        &[
            "Error response from daemon:",
            "You cannot remove a running container",
        ],
    );
    assert_eq!(hull_out(&["rm", "-f", "web"]), "web\n");
    assert!(ps_row(&["-a"], "web").is_none());
    let output = daemon().hull(&["inspect", "web"]);
    assert_fails(&output, 1, &["No such object: web"]);
}

#[test]
fn logs_follow_until_the_container_stops_with_streams_apart() {
    let id = hull_out(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; sleep 1; done; echo done >&2",
    ]);
    let output = daemon().hull(&["logs", "-f", id.trim()]);
    assert_eq!(stdout_of(&output), "line1\nline2\nline3\n");
    assert_eq!(text(&output.stderr), "done\n");
    let stamped = hull_out(&["logs", "-t", "--tail", "2", id.trim()]);
    assert!(stamped.ends_with("Z line3\n"), "{stamped:?}");
    assert_eq!(hull_out(&["wait", id.trim()]), "0\n");
    assert_eq!(hull_out(&["rm", id.trim()]), format!("{}\n", id.trim()));
}

#[test]
fn an_on_failure_policy_restarts_the_container_twice() {
    hull_out(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo try; exit 1",
    ]);
    eventually("two restarts and a final exit", || {
        let state = inspect("flaky");
        state["RestartCount"] == 2 && state["State"]["Status"] == "exited"
    });
    let inspected = inspect("flaky");
    assert_eq!(inspected["State"]["ExitCode"], 1);
    assert_eq!(
        inspected["HostConfig"]["RestartPolicy"]["Name"],
        "on-failure"
    );
    assert_eq!(hull_out(&["logs", "flaky"]), "try\ntry\ntry\n");
    assert_eq!(hull_out(&["rm", "flaky"]), "flaky\n");
}

#[test]
fn a_containers_ulimits_hold_its_execs_and_show_in_inspect() {
    hull_out(&[
        "run",
        "-d",
        "--name",
        "limited",
        "--ulimit",
        "nofile=256:512",
        "--ulimit",
        "nproc=100:-1",
        "busybox",
        "sleep",
        "1000",
    ]);
    let limits = hull_out(&[
        "exec",
        "limited",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -Hu",
    ]);
    assert_eq!(limits, "256\n512\nunlimited\n");
    let ulimits = &inspect("limited")["HostConfig"]["Ulimits"];
    assert_eq!(
        ulimits,
        &serde_json::json!([
            {"Name": "nofile", "Soft": 256, "Hard": 512},
            {"Name": "nproc", "Soft": 100, "Hard": -1},
        ])
    );
    hull_out(&["rm", "-f", "limited"]);
}

#[test]
fn a_foreground_run_without_rm_leaves_an_exited_container() {
    let output = daemon().hull(&[
        "run",
        "--name",
        "fg",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 4",
    ]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "out\n");
    assert_eq!(text(&output.stderr), "err\n");
    let row = ps_row(&["-a", "-f", "name=fg"], "fg").expect("ps -a lists it");
    assert!(row.contains("Exited (4)"), "{row}");

    // Unnamed, and found by a label: other tests share the daemon.
    let label = "test=foreground-unnamed";
    stdout_of(&daemon().hull(&["run", "--label", label, "busybox", "true"]));
    let filter = format!("label={label}");
    let found = hull_out(&["ps", "-aq", "--no-trunc", "-f", &filter]);
    let new: Vec<&str> = found.lines().collect();
    assert_eq!(new.len(), 1, "one container left: {found}");
    let inspected = inspect(new[0]);
    assert_eq!(inspected["State"]["Status"], "exited");
    assert_eq!(inspected["State"]["ExitCode"], 0);

    let output = daemon().hull_with_input(&["run", "-i", "busybox", "cat"], b"through stdin\n");
    assert_eq!(stdout_of(&output), "through stdin\n");
    let output = daemon().hull(&["run", "busybox", "no-such-command"]);
    assert_fails(
        &output,
        127,
        &["Error response from daemon:", "no-such-command"],
    );
    let output = daemon().hull(&["run", "-d", "127.0.0.1:1/no-such-image"]);
    assert_fails(
        &output,
        125,
        &["Error response from daemon:", "no-such-image"],
    );
    let output = daemon().hull(&["stop", "no-such-container"]);
    assert_fails(
        &output,
        1,
        &["Error response from daemon: No such container: no-such-container"],
    );
    assert_eq!(hull_out(&["rename", "fg", "fg2"]), "");
    assert!(ps_row(&["-a"], "fg2").is_some());

    // create, then start -a: attached to its output, exiting with its code.
    let id = hull_out(&[
        "create",
        "--name",
        "made",
        "busybox",
        "sh",
        "-c",
        "echo made; exit 5",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let row = ps_row(&["-a"], "made").expect("ps -a lists a created container");
    assert!(row.contains("Created"), "{row}");
    let output = daemon().hull(&["start", "-a", "made"]);
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "made\n");
}

/// The guest's `MemTotal`, in MiB, as the container sees it.
fn guest_memory_mib(container: &str) -> u64 {
    common::mem_total_mib(&hull_out(&["exec", container, "cat", "/proc/meminfo"]))
}

#[test]
fn a_containers_size_or_resources_pick_its_vm() {
    // A named size.
    hull_out(&[
        "run", "-d", "--name", "sized", "--size", "s4", "busybox", "sleep", "1000",
    ]);
    let host = &inspect("sized")["HostConfig"];
    assert_eq!(host["Memory"], 512 << 20, "{host}");
    assert_eq!(host["NanoCpus"], 1_000_000_000_i64, "{host}");
    let mib = guest_memory_mib("sized");
    assert!((400..=512).contains(&mib), "{mib} MiB");

    // --memory and --cpus get the smallest size that holds them, M2
    // (2 vCPUs, 2 GiB), which is held to them.
    hull_out(&[
        "run", "-d", "--name", "fitted", "--memory", "1500m", "--cpus", "1.5", "busybox", "sleep",
        "1000",
    ]);
    let host = &inspect("fitted")["HostConfig"];
    assert_eq!(host["Memory"], 1500_i64 << 20, "{host}");
    assert_eq!(host["NanoCpus"], 1_500_000_000_i64, "{host}");
    let cpus = hull_out(&["exec", "fitted", "nproc"]);
    assert_eq!(cpus.trim(), "2");
    eventually("the balloon to hold the guest to 1500 MiB", || {
        (1024..1500).contains(&guest_memory_mib("fitted"))
    });
    assert!(daemon()
        .hull(&["rm", "-f", "sized", "fitted"])
        .status
        .success());

    // What fits no size, or is no size, is refused before anything runs.
    let output = daemon().hull(&["run", "--rm", "--cpus", "9", "busybox", "true"]);
    assert_fails(&output, 125, &["fit no size"]);
    let output = daemon().hull(&["run", "--rm", "--size", "XL", "busybox", "true"]);
    assert_fails(&output, 125, &["unknown size \"XL\""]);
}

#[test]
fn memory_and_cpu_limits_hold_the_guest_and_change_while_it_runs() {
    // 100 MiB gets the 128 MiB size; the balloon takes back the rest.
    hull_out(&[
        "run", "-d", "--name", "limited", "--memory", "100m", "busybox", "sleep", "1000",
    ]);
    let full = stdout_of(&daemon().hull(&[
        "run",
        "--rm",
        "--size",
        "S2",
        "busybox",
        "grep",
        "MemTotal",
        "/proc/meminfo",
    ]));
    let full_mib = common::mem_total_mib(&full);
    eventually("the balloon to leave the guest under 100 MiB", || {
        guest_memory_mib("limited") < 100
    });
    assert!(
        guest_memory_mib("limited") + 20 < full_mib,
        "{full_mib} MiB unlimited"
    );
    let config = inspect("limited");
    assert_eq!(config["HostConfig"]["Memory"], 100 << 20);

    // Up again, within the size, while it runs; the docker CLI sends the same.
    let updated = hull_out(&["update", "--memory", "120m", "limited"]);
    assert_eq!(updated, "limited\n");
    eventually("the balloon to give memory back", || {
        (101..=120).contains(&guest_memory_mib("limited"))
    });
    assert_eq!(inspect("limited")["HostConfig"]["Memory"], 120 << 20);
    if common::has_docker_cli() {
        stdout_of(&daemon().docker(&["update", "--memory", "90m", "limited"]));
        eventually("docker update to shrink the guest", || {
            guest_memory_mib("limited") < 90
        });
    }

    // Beyond the size, or too little to run a guest: refused, unchanged.
    let output = daemon().hull(&["update", "--memory", "200m", "limited"]);
    assert_fails(&output, 1, &["beyond the container's VM (1 vCPU, 128 MiB)"]);
    let output = daemon().hull(&["update", "--memory", "8m", "limited"]);
    assert_fails(&output, 1, &["too small"]);
    let output = daemon().hull(&["update", "--cpus", "2", "limited"]);
    assert_fails(&output, 1, &["2 CPUs", "beyond"]);
    let expected = if common::has_docker_cli() { 90 } else { 120 };
    assert_eq!(inspect("limited")["HostConfig"]["Memory"], expected << 20);

    // The limit outlives a restart: the new VM is held to it from the start.
    hull_out(&["restart", "-t", "1", "limited"]);
    eventually("the restarted guest to be held to its limit", || {
        guest_memory_mib("limited") < expected
    });
    hull_out(&["rm", "-f", "limited"]);

    // Two vCPUs; the agent takes the second offline and brings it back.
    hull_out(&[
        "run", "-d", "--name", "two-cpus", "--cpus", "2", "busybox", "sleep", "1000",
    ]);
    let online = || hull_out(&["exec", "two-cpus", "cat", "/sys/devices/system/cpu/online"]);
    assert_eq!(online(), "0-1\n");
    hull_out(&["update", "--cpus", "0.5", "two-cpus"]);
    assert_eq!(online(), "0\n");
    assert_eq!(hull_out(&["exec", "two-cpus", "nproc"]), "1\n");
    assert_eq!(inspect("two-cpus")["HostConfig"]["NanoCpus"], 500_000_000);
    hull_out(&["update", "--cpus", "2", "two-cpus"]);
    assert_eq!(online(), "0-1\n");
    hull_out(&["rm", "-f", "two-cpus"]);
}

/// The /proc directory and command line of the QEMU running container `id`.
fn qemu_of(id: &str) -> (std::path::PathBuf, String) {
    let needle = format!("/c-{}/", &id[..16]);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then(|| (entry.path(), cmdline))
        })
        .unwrap_or_else(|| panic!("no QEMU runs container {id}"))
}

/// The resident memory of the QEMU running container `id`, in MiB.
fn qemu_rss_mib(id: &str) -> u64 {
    let status = std::fs::read_to_string(qemu_of(id).0.join("status")).unwrap();
    common::proc_field_mib(&status, "VmRSS")
}

#[test]
fn pages_the_guest_frees_go_back_to_the_host() {
    // Only a VM with RAM of its own can give pages back: a clone maps its
    // template's file, whose pages QEMU cannot drop. This daemon boots cold.
    let cold = common::loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let out = |args: &[&str]| stdout_of(&cold.hull(args));
    let id = out(&[
        "run", "-d", "--name", "frees", "--size", "S2", "busybox", "sleep", "1000",
    ]);
    let id = id.trim();
    let fill = [
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=64",
    ];
    out(&[&["exec", "frees"][..], &fill].concat());
    let holding = qemu_rss_mib(id);
    out(&["exec", "frees", "rm", "/dev/shm/fill"]);
    // The balloon reports the freed blocks and QEMU drops them.
    eventually("the guest's freed pages to leave QEMU", || {
        qemu_rss_mib(id) + 24 < holding
    });
    out(&["rm", "-f", "frees"]);

    // A clone's guest is not asked to report, so QEMU has no discards to
    // refuse: its log stays free of them, however much the guest frees.
    let id = hull_out(&[
        "run",
        "-d",
        "--name",
        "clone-frees",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let cmdline = qemu_of(id).1;
    assert!(cmdline.contains("-incoming"), "not a clone: {cmdline}");
    for _ in 0..3 {
        hull_out(&[&["exec", "clone-frees"][..], &fill].concat());
        hull_out(&["exec", "clone-frees", "rm", "/dev/shm/fill"]);
    }
    let log = daemon().root.join("vms").join(format!("c-{}", &id[..16]));
    let log = std::fs::read_to_string(log.join("qemu.log")).unwrap();
    assert!(!log.contains("ram_block_discard_range"), "{log}");
    hull_out(&["rm", "-f", "clone-frees"]);
}

/// docker's looking commands: top, diff, stats, events and history.
#[test]
fn top_diff_stats_events_and_history_show_a_running_container() {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .saturating_sub(1)
        .to_string();
    let id = hull_out(&["run", "-d", "--name", "looked", "busybox", "sleep", "600"]);
    let id = id.trim();
    let top = hull_out(&["top", "looked"]);
    assert!(
        top.lines().next().is_some_and(|l| l.contains("PID")),
        "{top}"
    );
    assert!(top.contains("sleep 600"), "{top}");
    stdout_of(&daemon().hull(&["exec", "looked", "touch", "/added"]));
    let diff = hull_out(&["diff", "looked"]);
    assert!(diff.lines().any(|l| l == "A /added"), "{diff}");
    let stats = hull_out(&["stats", "--no-stream", "looked"]);
    let row = stats.lines().nth(1).unwrap_or_default().to_owned();
    assert!(stats.starts_with("CONTAINER ID"), "{stats}");
    assert!(
        row.starts_with(&id[..12]) && row.contains("looked"),
        "{stats}"
    );
    assert!(row.contains("MiB / "), "{stats}");
    stdout_of(&daemon().hull(&["rm", "-f", "looked"]));
    // Until a second from now: the kept events, then the stream ends.
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = hull_out(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=looked",
    ]);
    for action in ["create", "start", "destroy"] {
        let wanted = format!(" container {action} {id} (");
        assert!(events.contains(&wanted), "no {action}: {events}");
    }
    assert!(events.contains("name=looked"), "{events}");
    let history = hull_out(&["history", "busybox"]);
    assert!(history.starts_with("IMAGE"), "{history}");
    assert!(history.lines().count() >= 2, "{history}");
}

/// `pause` freezes a container's VM where it is: its output stops, an
/// exec is refused as docker refuses it, ps and inspect say so; `unpause`
/// lets it go on; a paused container stops as any other.
#[test]
fn a_paused_container_is_frozen_until_unpaused_and_stops_as_any() {
    hull_out(&[
        "run",
        "-d",
        "--name",
        "frozen",
        "busybox",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done",
    ]);
    let lines = || hull_out(&["logs", "frozen"]).lines().count();
    eventually("the counter to print", || lines() >= 3);
    hull_out(&["pause", "frozen"]);
    let state = &inspect("frozen")["State"];
    assert_eq!(state["Status"], "paused", "{state}");
    assert_eq!(state["Paused"], true, "{state}");
    assert_eq!(state["Running"], true, "{state}");
    let row = ps_row(&["-f", "status=paused"], "frozen").expect("listed as paused");
    assert!(row.contains("(Paused)"), "{row}");
    assert_fails(
        &daemon().hull(&["exec", "frozen", "true"]),
        1,
        &["is paused, unpause the container before exec"],
    );
    assert_fails(
        &daemon().hull(&["pause", "frozen"]),
        1,
        &["is already paused"],
    );
    // Frozen: nothing more is printed while it is paused.
    let before = lines();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(lines(), before, "it printed while paused");

    hull_out(&["unpause", "frozen"]);
    eventually("the counter to go on", || lines() > before);
    assert_eq!(inspect("frozen")["State"]["Status"], "running");
    assert_fails(
        &daemon().hull(&["unpause", "frozen"]),
        1,
        &["is not paused"],
    );

    // Paused again, it still stops (its VM goes on to take the signal).
    hull_out(&["pause", "frozen"]);
    hull_out(&["stop", "-t", "1", "frozen"]);
    let state = &inspect("frozen")["State"];
    assert_eq!(state["Status"], "exited", "{state}");
    assert_eq!(state["Paused"], false, "{state}");
    let events = hull_out(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "--filter",
        "container=frozen",
    ]);
    for action in [" pause ", " unpause "] {
        assert!(events.contains(action), "{action}: {events}");
    }
    hull_out(&["rm", "frozen"]);
}
