//! VMs cloned from a template, and VMs booted cold, both end to end.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{daemon, stdout_of, text};

/// Hostname, 16 bytes of the guest's RNG, the guest's clock, and whether a
/// file written by an earlier clone is visible.
const IDENTITY: &str = "echo $(hostname) $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' ') $(date +%s) $(cat /marker 2>/dev/null || echo none); echo written > /marker";

fn identity() -> Vec<String> {
    let output = daemon().hull(&["run", "--rm", "busybox", "sh", "-c", IDENTITY]);
    stdout_of(&output)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn clones_run_commands_with_the_requested_rootfs() {
    assert_eq!(daemon().template_status(), "ready");
    let output = daemon().hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "cat /etc/passwd | grep -c hull; exit 4",
    ]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "1\n");
    assert!(
        daemon().log().contains("start=\"template clone\""),
        "{}",
        daemon().log()
    );
}

#[test]
fn clones_share_no_hostname_entropy_clock_or_files() {
    let (first, second) = (identity(), identity());
    assert_eq!(first.len(), 4, "{first:?}");
    assert_ne!(first[0], second[0], "hostnames");
    assert_ne!(first[1], second[1], "random bytes");
    assert_eq!(
        (first[3].as_str(), second[3].as_str()),
        ("none", "none"),
        "writable layers"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for clock in [&first[2], &second[2]] {
        let guest: i64 = clock.parse().unwrap();
        // The template was saved minutes ago; a clone's clock is set on resume.
        assert!((now - guest).abs() < 60, "guest clock {guest}, host {now}");
    }
}

#[test]
fn a_corrupt_template_is_replaced_and_the_run_still_succeeds() {
    let daemon = common::loaded_daemon(&[]);
    daemon.wait_for_template();
    let states: Vec<_> = glob_template_states(&daemon);
    assert_eq!(states.len(), 1, "{states:?}");
    std::fs::write(&states[0], b"not a migration stream").unwrap();

    let output = daemon.hull(&["run", "--rm", "busybox", "echo", "survived"]);
    assert_eq!(stdout_of(&output), "survived\n");
    assert!(
        daemon.log().contains("cloning the VM template failed"),
        "{}",
        daemon.log()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while daemon.template_status() != "ready" {
        assert!(Instant::now() < deadline, "the template was not rebuilt");
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = std::fs::read(&glob_template_states(&daemon)[0]).unwrap();
    assert_ne!(state, b"not a migration stream");
    let output = daemon.hull(&["run", "--rm", "busybox", "echo", "cloned"]);
    assert_eq!(stdout_of(&output), "cloned\n");
}

#[test]
fn without_templates_every_vm_boots_cold() {
    let daemon = common::loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let output = daemon.hull_with_input(
        &["run", "--rm", "-i", "busybox", "sh", "-c", "cat; exit 3"],
        b"cold\n",
    );
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "cold\n");
    assert_eq!(daemon.template_status(), "disabled");
    assert!(daemon.log().contains("start=\"cold boot\""));
}

/// The state files of the daemon's templates, found through its log.
fn glob_template_states(daemon: &common::Daemon) -> Vec<std::path::PathBuf> {
    daemon
        .log()
        .lines()
        .filter(|line| line.contains("VM template ready"))
        .filter_map(|line| line.split(" dir=").nth(1))
        .map(|dir| std::path::Path::new(dir.trim()).join("state"))
        .filter(|state| state.is_file())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn a_pool_hands_out_resumed_clones_and_refills() {
    let daemon = common::loaded_daemon(&[("HULL_POOL", "2")]);
    daemon.wait_for_template();
    let pooled = |daemon: &common::Daemon| {
        let info = stdout_of(&daemon.hull(&["info"]));
        info.lines()
            .find_map(|line| line.strip_prefix("VM Pool: "))
            .map(|rest| rest.trim_end_matches(" idle").to_string())
    };
    let wait_for_full_pool = || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while pooled(&daemon).as_deref() != Some("2") {
            assert!(
                Instant::now() < deadline,
                "the pool did not fill: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for_full_pool();
    let first = daemon.hull(&["run", "--rm", "busybox", "hostname"]);
    let second = daemon.hull(&["run", "--rm", "busybox", "hostname"]);
    assert_ne!(stdout_of(&first), stdout_of(&second));
    assert_eq!(
        daemon.log().matches("start=\"pool\"").count(),
        2,
        "{}",
        daemon.log()
    );
    wait_for_full_pool();
    // Each pooled VM ran a throwaway container before it was handed out,
    // and what that left is its configured network alone: the run has one
    // disk, its own, and the default route the warm-up set.
    assert!(
        daemon.log().matches("pooled VM warmed").count() >= 4,
        "{}",
        daemon.log()
    );
    let seen = stdout_of(&daemon.hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ls /sys/block; cat /proc/net/route; ls /",
    ]));
    let disks: Vec<&str> = seen.lines().filter(|l| l.starts_with("sd")).collect();
    assert_eq!(disks.len(), 1, "{seen}");
    assert!(
        seen.lines()
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "no default route: {seen}"
    );
    assert!(!seen.contains("warm-up"), "{seen}");
    assert_eq!(daemon.log().matches("start=\"pool\"").count(), 3);
    wait_for_full_pool();

    // hulld dies with a full pool: its idle VMs go with it, and the next
    // hulld fills a pool of its own and hands it out.
    let pooled_vms = qemu_pids(&daemon.root);
    assert_eq!(pooled_vms.len(), 2, "{pooled_vms:?}");
    daemon.restart_after_crash(&[("HULL_POOL", "2")]);
    common::eventually(30, || {
        let alive: Vec<_> = pooled_vms
            .iter()
            .filter(|pid| process_exists(**pid))
            .collect();
        alive
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("pooled QEMUs {alive:?} outlived their hulld"))
    });
    wait_for_full_pool();
    let new_pool = qemu_pids(&daemon.root);
    assert_eq!(new_pool.len(), 2, "{new_pool:?}");
    assert!(new_pool.iter().all(|pid| !pooled_vms.contains(pid)));
    stdout_of(&daemon.hull(&["run", "--rm", "busybox", "true"]));
    assert_eq!(daemon.log().matches("start=\"pool\"").count(), 4);
}

/// The pids of the QEMUs running VMs under hulld's `root`: their command
/// lines name their console files there.
fn qemu_pids(root: &std::path::Path) -> Vec<i32> {
    let root = root.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.starts_with("qemu-system") && cmdline.contains(&root)).then_some(pid)
        })
        .collect()
}

fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn templates_are_listed_removed_and_rebuilt_and_starts_are_reported() {
    let daemon = common::loaded_daemon(&[]);
    daemon.wait_for_template();
    stdout_of(&daemon.hull(&["run", "--rm", "busybox", "true"]));
    let info = stdout_of(&daemon.hull(&["info"]));
    assert!(
        info.contains("Recent VM Starts: 0 from the pool, 1 template clones, 0 image template clones, 1 cold boots"),
        "{info}"
    );

    let listed = stdout_of(&daemon.hull(&["template", "ls"]));
    let row = listed
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no template listed:\n{listed}"));
    let key = row.split_whitespace().next().unwrap().to_owned();
    assert_eq!(key.len(), 16, "{listed}");
    assert!(row.contains("MiB"), "{listed}");
    let pool = stdout_of(&daemon.hull(&["pool", "ls"]));
    assert_eq!(pool.lines().count(), 1, "no pool: only the header\n{pool}");

    assert_eq!(
        stdout_of(&daemon.hull(&["template", "rm", &key[..8]])),
        format!("{}\n", &key[..8])
    );
    assert_eq!(
        stdout_of(&daemon.hull(&["template", "ls"])).lines().count(),
        1
    );
    let again = daemon.hull(&["template", "rm", &key]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("no such VM template"),
        "{}",
        text(&again.stderr)
    );

    // Without a template the next VM boots cold, and the template comes back.
    stdout_of(&daemon.hull(&["run", "--rm", "busybox", "true"]));
    let info = stdout_of(&daemon.hull(&["info"]));
    assert!(info.contains("\n  cold boot "), "{info}");
    daemon.wait_for_template();
    assert_eq!(
        stdout_of(&daemon.hull(&["template", "ls"])).lines().count(),
        2
    );
}

/// `MemTotal` of the guest, in MiB.
fn guest_memory_mib(output: &std::process::Output) -> u64 {
    common::mem_total_mib(&stdout_of(output))
}

#[test]
fn each_size_has_its_own_pool_and_template() {
    let daemon = common::loaded_daemon(&[("HULL_POOL", "S1=1")]);
    daemon.wait_for_template();
    let pools = || stdout_of(&daemon.hull(&["pool", "ls"]));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !pools()
        .lines()
        // READY, before PRIMED.
        .any(|l| l.starts_with("S1") && l.split_whitespace().rev().nth(1) == Some("1"))
    {
        assert!(
            Instant::now() < deadline,
            "the S1 pool did not fill: {}\n{}",
            pools(),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let meminfo = ["busybox", "grep", "MemTotal", "/proc/meminfo"];
    let run = |size: &str| {
        let mut args = vec!["run", "--rm", "--size", size];
        args.extend_from_slice(&meminfo);
        daemon.hull(&args)
    };
    // From the S1 pool: a 64 MiB guest, and the image's rootfs.
    let small = guest_memory_mib(&run("S1"));
    assert!(small < 64, "{small} MiB");
    assert_eq!(
        daemon.log().matches("start=\"pool\"").count(),
        1,
        "{}",
        daemon.log()
    );
    let rootfs = stdout_of(&daemon.hull(&[
        "run",
        "--rm",
        "--size",
        "S1",
        "busybox",
        "grep",
        "-c",
        "hull",
        "/etc/passwd",
    ]));
    assert_eq!(rootfs, "1\n");

    // S2 has no template yet: its first VM boots cold and builds one for
    // the next, which is a clone.
    let clones = || daemon.log().matches("start=\"template clone\"").count();
    let before = clones();
    let first = guest_memory_mib(&run("S2"));
    assert!((64..128).contains(&first), "{first} MiB");
    let deadline = Instant::now() + Duration::from_secs(180);
    let templates = || stdout_of(&daemon.hull(&["template", "ls"]));
    while !templates().contains("1 vCPU, 128 MiB") {
        assert!(Instant::now() < deadline, "no S2 template: {}", templates());
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = guest_memory_mib(&run("S2"));
    assert_eq!(second, first);
    assert_eq!(clones(), before + 1, "{}", daemon.log());
    // One template per size in use: the default, S1 and S2.
    let listed = templates();
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(listed.contains("1 vCPU, 64 MiB"), "{listed}");
}

/// READY and PRIMED of the one pool `hull pool ls` shows.
fn pool_counts(daemon: &common::Daemon) -> (String, String) {
    let listed = stdout_of(&daemon.hull(&["pool", "ls"]));
    let row = listed.lines().nth(1).unwrap_or_default();
    let mut fields = row.split_whitespace().rev();
    let primed = fields.next().unwrap_or_default().to_owned();
    (fields.next().unwrap_or_default().to_owned(), primed)
}

/// The bytes the agents of the daemon's idle VMs read ahead when primed,
/// as their consoles say.
fn primed_reads(daemon: &common::Daemon) -> Vec<u64> {
    let vms = std::fs::read_dir(daemon.root.join("vms")).unwrap();
    vms.flatten()
        .filter_map(|vm| std::fs::read_to_string(vm.path().join("console.log")).ok())
        .flat_map(|console| {
            console
                .lines()
                .filter_map(|l| l.strip_prefix("hull-agent: primed hull-rootfs: "))
                .filter_map(|l| l.strip_suffix(" bytes read ahead")?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

#[test]
fn pooled_vms_hold_the_image_that_ran_last() {
    let layer = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(7);
        header.set_mode(0o644);
        header.set_mtime(1_000_000);
        builder
            .append_data(&mut header, "marker", &b"marked\n"[..])
            .unwrap();
        builder.into_inner().unwrap()
    };
    let marked = common::layered_archive("marked:latest", Some(layer), |_| {});
    let daemon = common::loaded_daemon(&[("HULL_POOL", "1")]);
    stdout_of(&daemon.hull(&["load", "-q", "-i", marked.to_str().unwrap()]));
    daemon.wait_for_template();
    let wait_for = |ready: &str, primed: &str| {
        common::eventually(120, || match pool_counts(&daemon) {
            (r, p) if r == ready && p == primed => Ok(()),
            other => Err(format!("pool is {other:?}, not ({ready}, {primed})")),
        })
    };
    // One run of busybox so far (the template's): nothing is primed yet.
    wait_for("1", "0");
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(args);
        stdout_of(&daemon.hull(&all))
    };
    let pooled = || daemon.log().matches("start=\"pool\"").count();
    assert_eq!(run(&["busybox", "echo", "one"]), "one\n");
    assert_eq!(pooled(), 1, "{}", daemon.log());
    // Busybox ran twice in a row: the next VM holds it, and read the
    // image's program ahead (its command, `sh`: busybox, through the link).
    wait_for("1", "1");
    let reads = primed_reads(&daemon);
    assert!(
        reads.len() == 1 && reads[0] > 500_000,
        "read ahead: {reads:?}"
    );

    // A run of busybox takes it: one disk, the image's, and its files.
    let seen = run(&[
        "busybox",
        "sh",
        "-c",
        "ls /sys/block; grep -c hull /etc/passwd",
    ]);
    let disks = seen.lines().filter(|l| l.starts_with("sd")).count();
    assert_eq!((disks, seen.lines().last()), (1, Some("1")), "{seen}");
    assert_eq!(pooled(), 2, "{}", daemon.log());
    wait_for("1", "1");

    // A VM that held busybox is not handed to another image: the run is
    // cloned, and the VM replaced by an unprimed one...
    assert_eq!(run(&["marked", "cat", "/marker"]), "marked\n");
    assert_eq!(pooled(), 2, "{}", daemon.log());
    wait_for("1", "0");
    // ... which the image's second run takes; the one after finds its
    // rootfs primed, with its own files and nothing else.
    assert_eq!(run(&["marked", "cat", "/marker"]), "marked\n");
    assert_eq!(pooled(), 3, "{}", daemon.log());
    wait_for("1", "1");
    let primed = daemon.log();
    let primed = primed
        .lines()
        .rev()
        .find(|l| l.contains("pooled VM primed"));
    assert!(
        primed.is_some_and(|l| !l.contains(&busybox_rootfs(&daemon))),
        "{primed:?}"
    );
    let seen = run(&["marked", "sh", "-c", "cat /marker; ls /sys/block"]);
    assert!(
        seen.starts_with("marked\n") && seen.lines().filter(|l| l.starts_with("sd")).count() == 1,
        "{seen}"
    );
    assert_eq!(pooled(), 4, "{}", daemon.log());
}

/// The file name of the busybox image's rootfs, as hulld logs it.
fn busybox_rootfs(daemon: &common::Daemon) -> String {
    let listed = stdout_of(&daemon.hull(&["images", "--no-trunc"]));
    let row = listed.lines().find(|l| l.starts_with("busybox "));
    let id = row
        .and_then(|row| row.split_whitespace().find(|w| w.starts_with("sha256:")))
        .unwrap_or_else(|| panic!("no busybox image id in:\n{listed}"));
    format!("{}.erofs", id.trim_start_matches("sha256:"))
}
