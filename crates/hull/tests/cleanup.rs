//! No QEMU outlives what it ran for: not when the client dies, not when hulld dies.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::text;

fn qemus_under(root: &Path) -> String {
    let output = Command::new("pgrep")
        .args(["-f", &format!("qemu-system.*{}", root.display())])
        .output()
        .unwrap();
    text(&output.stdout).trim().to_string()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_the_client_stops_its_vm() {
    let daemon = common::loaded_daemon(&[]);
    let mut child = common::start_long_run(&daemon);
    assert!(!qemus_under(&daemon.root).is_empty(), "the run has a QEMU");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the QEMU is gone", || qemus_under(&daemon.root).is_empty());
    let vms = daemon.root.join("vms");
    wait_until("the VM directory is gone", || {
        std::fs::read_dir(&vms).unwrap().count() == 0
    });
}

#[test]
fn killing_hulld_stops_its_vms() {
    let daemon = common::loaded_daemon(&[]);
    let mut child = common::start_long_run(&daemon);
    assert!(!qemus_under(&daemon.root).is_empty(), "the run has a QEMU");
    let pid = std::fs::read_to_string(daemon.root.join("hulld.pid")).unwrap();
    let status = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the QEMU is gone", || qemus_under(&daemon.root).is_empty());
    // The client learns that its run ended.
    let status = child.wait().unwrap();
    assert!(!status.success());
}

#[test]
fn a_vm_that_dies_mid_run_is_reported_and_cleaned_up() {
    // A daemon of its own, so the one VM directory is this run's.
    let daemon = common::loaded_daemon(&[]);
    let mut child = common::start_long_run(&daemon);

    let vms = daemon.root.join("vms");
    let dirs: Vec<_> = std::fs::read_dir(&vms)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let pgrep = std::process::Command::new("pgrep")
        .args(["-f", &dirs[0].display().to_string()])
        .output()
        .unwrap();
    let pids = text(&pgrep.stdout);
    assert!(
        !pids.trim().is_empty(),
        "no QEMU runs for {}",
        dirs[0].display()
    );
    for pid in pids.split_whitespace() {
        let status = std::process::Command::new("kill")
            .args(["-9", pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("stopped unexpectedly"), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirs[0].exists() {
        assert!(
            Instant::now() < deadline,
            "the dead VM's directory was left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
