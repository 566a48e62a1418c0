//! A hostile guest cannot hold hulld up or fill its memory: a guest that
//! floods its channel past its credit is reported failed while hulld's
//! memory stays flat, and `stop`, `kill` and `rm -f` of a container whose
//! agent is silent (or whose QEMU is stopped outright) finish and leave no
//! QEMU behind. The guest is hull-test-guest, packed in place of the agent.

mod common;

use std::process::{Child, Stdio};
use std::sync::OnceLock;

use common::{eventually, finishes, proc_field_mib, stdout_of, test_guest, text, Daemon};

/// A hulld whose VMs boot hull-test-guest, cold (a template would be the
/// hostile guest's too, and nothing here needs one).
fn daemon() -> &'static Daemon {
    static DAEMON: OnceLock<Daemon> = OnceLock::new();
    DAEMON.get_or_init(|| {
        let guest = test_guest();
        common::loaded_daemon(&[
            ("HULL_AGENT", guest.to_str().unwrap()),
            ("HULL_NO_TEMPLATES", "1"),
        ])
    })
}

fn inspect(daemon: &Daemon, id: &str) -> serde_json::Value {
    let output = stdout_of(&daemon.hull(&["inspect", id]));
    serde_json::from_str::<serde_json::Value>(&output).unwrap()[0].clone()
}

/// The container's status; empty while it does not exist yet.
fn status(daemon: &Daemon, id: &str) -> String {
    let output = daemon.hull(&["inspect", id]);
    let inspected: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    inspected[0]["State"]["Status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Starts a detached container whose guest plays `attack`; returns its id.
fn run_detached(daemon: &Daemon, attack: &str) -> String {
    let id = stdout_of(&daemon.hull(&["run", "-d", "busybox", attack]));
    id.trim().to_owned()
}

/// The pids of the QEMUs of container `id`: their command lines name its
/// VM's directory.
fn qemus_of(id: &str) -> Vec<i32> {
    let run_dir = format!("c-{}", &id[..16]);
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("qemu") && cmdline.contains(&run_dir)).then_some(pid)
        })
        .collect()
}

fn hulld_status(daemon: &Daemon) -> String {
    let pid = daemon.pid().expect("hulld wrote its pid");
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

#[test]
fn a_guest_that_floods_its_channel_is_reported_failed_and_hulld_stays_small() {
    let daemon = daemon();
    let before = hulld_status(daemon);
    let (rss_before, peak_before) = (
        proc_field_mib(&before, "VmRSS"),
        proc_field_mib(&before, "VmHWM"),
    );
    // An attached client that reads nothing: hulld cannot pass the output
    // on, so all a flood could do is pile up in hulld.
    let mut client: Child = daemon
        .command(&["run", "--name", "flood", "busybox", "flood"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(240, || match status(daemon, "flood").as_str() {
        "exited" => Ok(()),
        other => Err(format!("the flooding container is {other:?}")),
    });
    let state = inspect(daemon, "flood")["State"].clone();
    let error = state["Error"].as_str().unwrap_or_default();
    assert!(
        error.contains("past") && error.contains("credit"),
        "the flood is not the reported failure: {state}"
    );
    assert_ne!(state["ExitCode"], 0, "{state}");
    println!("the flooding container's error: {error}");
    let after = hulld_status(daemon);
    let (rss_after, peak_after) = (
        proc_field_mib(&after, "VmRSS"),
        proc_field_mib(&after, "VmHWM"),
    );
    println!("hulld RSS {rss_before} -> {rss_after} MiB, peak {peak_before} -> {peak_after} MiB");
    assert!(
        peak_after < peak_before + 64,
        "hulld's peak memory grew from {peak_before} to {peak_after} MiB"
    );
    let _ = client.kill();
    let _ = client.wait();
    let id = inspect(daemon, "flood")["Id"].as_str().unwrap().to_owned();
    eventually(30, || match qemus_of(&id).as_slice() {
        [] => Ok(()),
        left => Err(format!("QEMU {left:?} of the flooding guest still runs")),
    });
}

#[test]
fn stop_of_a_container_whose_agent_is_silent_finishes_and_leaves_no_qemu() {
    let daemon = daemon();
    let id = run_detached(daemon, "silent");
    let (output, took) = finishes(daemon.command(&["stop", "-t", "1", &id]));
    stdout_of(&output);
    println!("stop of a silent guest took {took:?}");
    assert_eq!(status(daemon, &id), "exited");
    assert_eq!(qemus_of(&id), Vec::<i32>::new());
}

#[test]
fn kill_of_a_container_whose_agent_is_silent_finishes_and_leaves_no_qemu() {
    let daemon = daemon();
    let id = run_detached(daemon, "silent");
    let (output, took) = finishes(daemon.command(&["kill", &id]));
    stdout_of(&output);
    println!("kill of a silent guest took {took:?}");
    assert_eq!(status(daemon, &id), "exited");
    assert_eq!(qemus_of(&id), Vec::<i32>::new());
}

#[test]
fn rm_f_of_a_container_whose_qemu_is_stopped_finishes_and_leaves_no_qemu() {
    let daemon = daemon();
    let id = run_detached(daemon, "sleep");
    let qemus = qemus_of(&id);
    assert_eq!(qemus.len(), 1, "one QEMU runs the container: {qemus:?}");
    // SAFETY: stopping the QEMU this test's hulld started.
    unsafe { libc::kill(qemus[0], libc::SIGSTOP) };
    let (output, took) = finishes(daemon.command(&["rm", "-f", &id]));
    stdout_of(&output);
    println!("rm -f of a stopped QEMU took {took:?}");
    assert!(
        !daemon.hull(&["inspect", &id]).status.success(),
        "the container was not removed"
    );
    eventually(30, || match qemus_of(&id).as_slice() {
        [] => Ok(()),
        left => Err(format!("QEMU {left:?} still runs")),
    });
}

#[test]
fn update_of_a_container_whose_qemu_is_stopped_fails_at_qmps_deadline_and_rm_f_follows() {
    let daemon = daemon();
    let id = run_detached(daemon, "sleep");
    let qemus = qemus_of(&id);
    assert_eq!(qemus.len(), 1, "one QEMU runs the container: {qemus:?}");
    // SAFETY: stopping the QEMU this test's hulld started.
    unsafe { libc::kill(qemus[0], libc::SIGSTOP) };
    // The balloon moves over QMP, which a stopped QEMU never answers.
    let (output, took) = finishes(daemon.command(&["update", "--memory", "40m", &id]));
    println!("update of a stopped QEMU took {took:?}");
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "the update succeeded: {stderr}");
    println!("update's error: {}", stderr.trim());
    assert!(
        stderr.contains("balloon") && stderr.contains("within"),
        "the error does not name the QMP command: {stderr}"
    );
    // The container's lock was let go: its removal is not held up.
    let (output, took) = finishes(daemon.command(&["rm", "-f", &id]));
    stdout_of(&output);
    println!("rm -f after the failed update took {took:?}");
    eventually(30, || match qemus_of(&id).as_slice() {
        [] => Ok(()),
        left => Err(format!("QEMU {left:?} still runs")),
    });
}
