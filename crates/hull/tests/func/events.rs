//! What a function's owner sees of its calls and does to them: their
//! events (`func logs`, followed live too) and counts (`func status`),
//! on the API and on the call plane as Hyper.sh served them; and removing
//! a function stops the VMs of its running calls.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use super::common::cloud::Cloud;
use super::common::{eventually, stdout_of, text};
use super::{call_path, output_path, Plane};

/// `hull func logs -f` shows a new call's events as they happen.
pub fn a_follower_sees_each_call_as_it_happens(cloud: &Cloud, plane: &Plane<'_>, echo: &str) {
    let mut follower = cloud
        .daemon
        .command(&["func", "logs", "-f", "--tail", "0", "echo"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("hull runs");
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Once the follower listens: it shows nothing kept before (tail 0).
    std::thread::sleep(Duration::from_secs(1));
    let (status, body) = plane.call(&format!("{echo}/sync"), "followed");
    assert_eq!(status, 200, "{body}");
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("[FINISHED]")) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the follower stopped short: {seen:?}"),
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let kinds: Vec<&str> = seen
        .iter()
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(kinds, ["CALL", "QUEUED", "RUNNING", "FINISHED"], "{seen:?}");
    assert!(seen[0].contains("ShortStdin: followed"), "{seen:?}");
}

/// After calls of `func` ran through a hulld restart: its events in order
/// and its counts, on the API (signed) and on the call plane (its uuid).
pub fn events_and_counts_are_kept(cloud: &Cloud, plane: &Plane<'_>, path: &str, name: &str) {
    let hull = |args: &[&str]| cloud.daemon.hull(args);
    let logs = stdout_of(&hull(&["func", "logs", name]));
    let kinds: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert_eq!(kinds, ["CALL", "QUEUED", "RUNNING", "FINISHED"], "{logs}");
    assert!(logs.contains("ShortStdin: in"), "{logs}");
    assert!(logs.contains("ShortStdout: in"), "{logs}");
    let last = stdout_of(&hull(&["func", "logs", "--tail", "1", name]));
    assert!(
        last.starts_with("20") && last.contains("[FINISHED]"),
        "{last}"
    );
    let status = stdout_of(&hull(&["func", "status", name]));
    let counts: Vec<&str> = status.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(counts, ["1", "0", "0", "1", "0"], "{status}");

    // The call plane answers the same to whoever holds the uuid.
    let uuid = path.rsplit('/').next().unwrap();
    let (status, body) = plane.send("GET", &format!("/status/{name}/{uuid}"), &[], b"");
    let counts: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{counts}");
    assert_eq!(
        (&counts["Total"], &counts["Finished"]),
        (&1.into(), &1.into())
    );
    let (status, body) = plane.send("GET", &format!("/logs/{name}/{uuid}?tail=2"), &[], b"");
    assert_eq!(status, 200);
    let events: Vec<Value> = text(&dechunk(&body))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1]["Event"], "FINISHED");
    // Attacks: a wrong uuid, a hostile call id or tail.
    let wrong = "0".repeat(32);
    let (status, _) = plane.send("GET", &format!("/logs/{name}/{wrong}"), &[], b"");
    assert_eq!(status, 404);
    for query in ["callid=../../x", "tail=-1", "tail=9999999999999999999999"] {
        let (status, _) = plane.send("GET", &format!("/logs/{name}/{uuid}?{query}"), &[], b"");
        assert_eq!(status, 400, "{query}");
    }
}

/// Removing a function stops its running calls' VMs before it answers.
pub fn removal_stops_running_calls(cloud: &Cloud, plane: &Plane<'_>) {
    let hull = |args: &[&str]| cloud.daemon.hull(args);
    let (_, sleeper) = call_path(&hull(&[
        "func",
        "create",
        "--name",
        "sleeper",
        "--timeout",
        "10m",
        "busybox",
        "sleep",
        "600",
    ]));
    let id = plane.call_async(&sleeper, "");
    eventually(120, || {
        let ps = stdout_of(&hull(&["ps"]));
        ps.contains("sleeper-call-").then_some(()).ok_or(ps)
    });
    stdout_of(&hull(&["func", "rm", "sleeper"]));
    let ps = stdout_of(&hull(&["ps", "-a"]));
    assert!(!ps.contains("sleeper-call-"), "left running: {ps}");
    let (status, _) = plane.send("GET", &output_path(&sleeper, &id), &[], b"");
    assert_eq!(status, 404);
}

/// A chunked HTTP body's data: the logs are streamed.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size = usize::from_str_radix(text(&body[..line_end]).trim(), 16).unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return data;
        }
        data.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}
