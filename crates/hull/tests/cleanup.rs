//! No QEMU outlives what it ran for: not when the client dies, not when hulld dies.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{stdout_of, text, Daemon};

fn loaded_daemon() -> Daemon {
    let daemon = Daemon::start(&[]);
    let archive = common::busybox_archive();
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    daemon
}

/// Starts a long run and returns once its process printed.
fn start_long_run(daemon: &Daemon) -> Child {
    let mut child = daemon
        .command(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo started; sleep 600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "started\n");
    child
}

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
    let daemon = loaded_daemon();
    let mut child = start_long_run(&daemon);
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
    let daemon = loaded_daemon();
    let mut child = start_long_run(&daemon);
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
