//! Hyper Cron end to end: crons of the operator and of tenants fire on
//! their schedules in real VMs, keep their history and counts, follow
//! their concurrency policy, record the runs missed while hulld was down,
//! post their records to a webhook, and stay their owner's.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use common::cloud::Cloud;
use common::{assert_fails, eventually, stdout_of, text};
use serde_json::Value;

fn json(output: &str) -> Value {
    serde_json::from_str(output).unwrap_or_else(|e| panic!("{e}: {output}"))
}

/// A webhook on loopback in hulld's namespace: each POST's body arrives
/// on the channel.
fn webhook(cloud: &Cloud) -> (u16, mpsc::Receiver<Value>) {
    let netns = cloud.netns.as_ref().expect("an isolated cloud");
    let listener = netns.within(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let (records, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length.min(1 << 20)];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Ok(record) = serde_json::from_slice(&body) {
                let _ = records.send(record);
            }
        }
    });
    (port, received)
}

/// The cron's history as the operator's `hull cron history --format json` prints it.
fn history(cloud: &Cloud, name: &str) -> Vec<Value> {
    let output = cloud
        .daemon
        .hull(&["cron", "history", name, "--format", "json"]);
    json(&stdout_of(&output)).as_array().unwrap().clone()
}

fn with_status<'a>(runs: &'a [Value], status: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["Status"] == status).collect()
}

fn inspect(cloud: &Cloud, name: &str) -> Value {
    let output = cloud.daemon.hull(&["cron", "inspect", name]);
    json(&stdout_of(&output))[0].clone()
}

#[test]
fn crons_fire_keep_history_skip_overlaps_record_missed_runs_and_stay_their_owner_s() {
    let cloud = Cloud::start_isolated(&[("HULL_NO_TEMPLATES", "1")]);
    let archive = common::busybox_archive();
    stdout_of(
        &cloud
            .daemon
            .hull(&["load", "-i", archive.to_str().unwrap()]),
    );
    bad_schedules_are_refused_naming_the_field(&cloud);
    let (port, records) = webhook(&cloud);

    // Every second, each run lasting longer: Forbid skips the overlaps.
    let url = format!("http://127.0.0.1:{port}/hook");
    stdout_of(&cloud.daemon.hull(&[
        "cron",
        "create",
        "--name",
        "tick",
        "--schedule",
        "* * * * * *",
        "--concurrency",
        "forbid",
        "--starting-deadline",
        "600",
        "--size",
        "S1",
        "--notify-url",
        &url,
        "--notify",
        "all",
        "busybox",
        "sh",
        "-c",
        "echo hello-cron; sleep 2",
    ]));
    eventually(300, || {
        let runs = history(&cloud, "tick");
        let done = with_status(&runs, "Succeeded").len();
        (done >= 3)
            .then_some(())
            .ok_or(format!("{done} runs succeeded: {runs:?}"))
    });
    let runs = history(&cloud, "tick");
    let succeeded = with_status(&runs, "Succeeded");
    for run in &succeeded {
        assert_eq!(run["ExitCode"], 0, "{run}");
        assert_eq!(run["Output"], "hello-cron", "{run}");
        let container = run["Container"].as_str().unwrap();
        let unix = container.strip_prefix("tick-").unwrap();
        assert_eq!(unix, run["Scheduled"].to_string(), "{run}");
        assert!(run["StartedAt"].is_string() && run["FinishedAt"].is_string());
    }
    assert!(
        !with_status(&runs, "Skipped").is_empty(),
        "no run was skipped while another ran: {runs:?}"
    );
    let cron = inspect(&cloud, "tick");
    assert!(cron["SuccessCount"].as_u64().unwrap() >= 3, "{cron}");
    assert_eq!(cron["ErrorCount"], 0, "{cron}");
    assert!(cron["LastRun"].is_string() && cron["NextRun"].is_string());
    assert_eq!(cron["ConcurrencyPolicy"], "Forbid");
    // Each run's container is gone once its record is kept.
    let ps = stdout_of(&cloud.daemon.hull(&["ps", "-a"]));
    for run in &succeeded {
        assert!(!ps.contains(run["Container"].as_str().unwrap()), "{ps}");
    }
    let posted = records.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(posted["Cron"], "tick", "{posted}");
    assert!(["Succeeded", "Skipped"].contains(&posted["Status"].as_str().unwrap()));

    runs_missed_while_hulld_was_down_are_recorded(&cloud);
    stdout_of(&cloud.daemon.hull(&["cron", "rm", "tick"]));
    tenants_see_only_their_own_crons(&cloud, &archive);
}

fn bad_schedules_are_refused_naming_the_field(cloud: &Cloud) {
    for (schedule, field) in [
        ("0 25 * * *", "hour field"),
        ("61 * * * *", "minute field"),
        ("* * * 13 *", "month field"),
        ("0 0 * * MON-FUNDAY", "day-of-week field"),
        ("* * *", "3 fields"),
        ("@fortnightly", "unknown macro"),
    ] {
        let output = cloud.daemon.hull(&[
            "cron",
            "create",
            "--name",
            "bad",
            "--schedule",
            schedule,
            "busybox",
            "true",
        ]);
        assert_fails(&output, 1, &[field]);
    }
    let output = cloud.daemon.hull(&[
        "cron",
        "create",
        "--name",
        "bad",
        "--schedule",
        "@daily",
        "--tz",
        "Mars/Olympus",
        "busybox",
        "true",
    ]);
    assert_fails(&output, 1, &["unknown time zone"]);
    let listed = stdout_of(&cloud.daemon.hull(&["cron", "ls"]));
    assert!(!listed.contains("bad"), "{listed}");
}

/// hulld is killed while `tick` fires every second: on its start again
/// the times it slept through are recorded as missed and the latest runs.
fn runs_missed_while_hulld_was_down_are_recorded(cloud: &Cloud) {
    let stopped_at = unix_now();
    cloud.restart_after_crash_with(&[("HULL_NO_TEMPLATES", "1")], || {
        std::thread::sleep(Duration::from_secs(4));
    });
    eventually(120, || {
        let runs = history(cloud, "tick");
        let missed: Vec<&Value> = with_status(&runs, "Missed")
            .into_iter()
            .filter(|r| r["Scheduled"].as_i64().unwrap() > stopped_at)
            .collect();
        let ran_after = runs.iter().any(|r| {
            r["Status"] == "Succeeded" && r["Scheduled"].as_i64().unwrap() > stopped_at + 2
        });
        (missed.len() >= 2 && ran_after)
            .then_some(())
            .ok_or(format!("{} missed after the stop: {runs:?}", missed.len()))
    });
    // A run the killed hulld left is taken back: waited for, recorded, removed.
    eventually(120, || {
        let ps = stdout_of(&cloud.daemon.hull(&["ps", "-a"]));
        let left: Vec<&str> = ps
            .split_whitespace()
            .filter(|name| {
                let stamp = name.trim_start_matches('/').strip_prefix("tick-");
                stamp
                    .and_then(|s| s.parse::<i64>().ok())
                    .is_some_and(|s| s <= stopped_at)
            })
            .collect();
        left.is_empty().then_some(()).ok_or(format!(
            "containers of runs before the stop are left: {left:?}"
        ))
    });
}

fn tenants_see_only_their_own_crons(cloud: &Cloud, archive: &std::path::Path) {
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    let acme_hull = |args: &[&str]| cloud.tenant(&acme, &acme_secret, args);
    let beta_hull = |args: &[&str]| cloud.tenant(&beta, &beta_secret, args);
    let load = acme_hull(&["load", "-i", archive.to_str().unwrap()]);
    assert!(load.status.success(), "{}", text(&load.stderr));

    let create = |hull: &dyn Fn(&[&str]) -> std::process::Output, extra: &[&str]| {
        let mut args = vec![
            "cron",
            "create",
            "--name",
            "nightly",
            "--schedule",
            "0 3 * * *",
        ];
        args.extend_from_slice(extra);
        args.extend(["--size", "S1", "busybox", "echo", "from-acme"]);
        hull(&args)
    };
    // A tenant's webhook may not reach the host's own services.
    let refused = create(&acme_hull, &["--notify-url", "http://127.0.0.1:9/"]);
    assert_fails(&refused, 1, &["not a public address"]);
    assert!(create(&acme_hull, &[]).status.success());
    // The same name is beta's own to use, and the operator's.
    assert_fails(&create(&acme_hull, &[]), 1, &["already exists"]);

    // Beta cannot see, inspect, run, read or remove acme's cron.
    let listed = stdout_of(&beta_hull(&["cron", "ls"]));
    assert!(!listed.contains("nightly"), "{listed}");
    for args in [
        &["cron", "inspect", "nightly"][..],
        &["cron", "run", "nightly"],
        &["cron", "history", "nightly"],
        &["cron", "suspend", "nightly"],
        &["cron", "rm", "nightly"],
    ] {
        let output = beta_hull(args);
        assert_fails(&output, 1, &["no cron nightly"]);
    }
    let (status, _) = cloud.curl_as("beta", "GET", "/crons/nightly", None);
    assert_eq!(status, 404);
    // Nor does the operator's own listing show it, unless asked for all.
    let mine = stdout_of(&cloud.daemon.hull(&["cron", "ls"]));
    assert!(!mine.contains("nightly"), "{mine}");
    let all = stdout_of(&cloud.daemon.hull(&["cron", "ls", "--all"]));
    assert!(all.contains("nightly") && all.contains("acme"), "{all}");

    // What containers/create refuses a tenant, a cron's container gets neither.
    let privileged =
        r#"{"Schedule":"@hourly","Config":{"Image":"busybox","HostConfig":{"Privileged":true}}}"#;
    let (status, body) = cloud.curl_as("acme", "POST", "/crons/create?name=root", Some(privileged));
    assert_eq!(status, 403, "{body}");
    let binds =
        r#"{"Schedule":"@hourly","Config":{"Image":"busybox","HostConfig":{"Binds":["/etc:/e"]}}}"#;
    let (status, body) = cloud.curl_as("acme", "POST", "/crons/create?name=etc", Some(binds));
    assert_eq!(status, 403, "{body}");
    let huge = format!(
        r#"{{"Schedule":"@hourly","Config":{{"Image":"busybox","Env":["X={}"]}}}}"#,
        "x".repeat(100 * 1024)
    );
    let (status, body) = cloud.curl_as("acme", "POST", "/crons/create?name=huge", Some(&huge));
    assert_eq!(status, 400, "{body}");

    // Acme's run now: its own container, from its own image, recorded.
    stdout_of(&acme_hull(&["cron", "run", "nightly"]));
    eventually(180, || {
        let output = acme_hull(&["cron", "history", "nightly", "--format", "json"]);
        let runs = json(&stdout_of(&output));
        let done = runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["Status"] == "Succeeded" && r["Output"] == "from-acme");
        done.then_some(()).ok_or(format!("{runs}"))
    });
    let cron = json(&stdout_of(&acme_hull(&["cron", "inspect", "nightly"])));
    assert_eq!(cron[0]["SuccessCount"], 1, "{cron}");
    assert!(cron[0].get("Tenant").is_none(), "{cron}");
    stdout_of(&acme_hull(&["cron", "rm", "nightly"]));
    assert_fails(
        &acme_hull(&["cron", "inspect", "nightly"]),
        1,
        &["no cron nightly"],
    );
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
