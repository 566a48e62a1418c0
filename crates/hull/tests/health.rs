//! Health checks through the stock docker CLI and docker-compose: the
//! image's `HEALTHCHECK` and `--health-*` run in the container's VM, and
//! inspect, `ps`, events and compose's `service_healthy` follow them.

mod common;

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use common::{daemon, eventually, has_docker_cli, stdout_of, text, Daemon};

/// Taken for writing by the test that restarts hulld, for reading by the
/// others, which cannot reach it meanwhile.
static DAEMON_UP: RwLock<()> = RwLock::new(());

/// The busybox image with `HEALTHCHECK --interval=1s --retries=3 CMD test -f /tmp/ok`.
fn image_with_healthcheck(daemon: &Daemon) -> &'static str {
    static LOADED: std::sync::Once = std::sync::Once::new();
    const TAG: &str = "healthy:1";
    LOADED.call_once(|| {
        let archive = common::derived_archive(TAG, |config| {
            config["Healthcheck"] = serde_json::json!({
                "Test": ["CMD-SHELL", "test -f /tmp/ok"],
                "Interval": 1_000_000_000u64,
                "Timeout": 5_000_000_000u64,
                "Retries": 3,
            });
        });
        stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    });
    TAG
}

fn inspect(daemon: &Daemon, container: &str) -> serde_json::Value {
    let json = stdout_of(&daemon.docker(&["inspect", container]));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    list[0].clone()
}

fn health_status(daemon: &Daemon, container: &str) -> String {
    let format = "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}";
    let output = daemon.docker(&["inspect", "--format", format, container]);
    stdout_of(&output).trim().to_owned()
}

fn becomes(daemon: &Daemon, container: &str, status: &str, seconds: u64) {
    eventually(seconds, || {
        let now = health_status(daemon, container);
        (now == status).then_some(()).ok_or(now)
    });
}

fn ps_status(daemon: &Daemon, filter: &str) -> String {
    let output = daemon.docker(&[
        "ps",
        "--filter",
        filter,
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    stdout_of(&output)
}

fn rfc3339(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn an_images_healthcheck_goes_starting_unhealthy_healthy_and_outlives_a_restart_of_hulld() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let image = image_with_healthcheck(daemon);
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let _up = DAEMON_UP.write().unwrap_or_else(|e| e.into_inner());
    stdout_of(&daemon.docker(&["run", "-d", "--name", "hc", image, "sleep", "1000"]));
    // Three failures in a row, a second apart, before it is unhealthy.
    assert_eq!(health_status(daemon, "hc"), "starting");
    assert!(ps_status(daemon, "name=hc").contains("(health: starting)"));

    becomes(daemon, "hc", "unhealthy", 30);
    let state = &inspect(daemon, "hc")["State"];
    let health = &state["Health"];
    assert!(health["FailingStreak"].as_u64().unwrap() >= 3, "{health}");
    let log = health["Log"].as_array().unwrap();
    assert!((3..=5).contains(&log.len()), "{health}");
    for entry in log {
        assert_eq!(entry["ExitCode"], 1, "{entry}");
        assert!(
            rfc3339(entry["End"].as_str().unwrap()) >= rfc3339(entry["Start"].as_str().unwrap())
        );
    }
    assert!(
        ps_status(daemon, "health=unhealthy").contains("hc Up"),
        "unhealthy filter"
    );

    stdout_of(&daemon.docker(&["exec", "hc", "touch", "/tmp/ok"]));
    becomes(daemon, "hc", "healthy", 10);
    assert_eq!(inspect(daemon, "hc")["State"]["Health"]["FailingStreak"], 0);
    let healthy = ps_status(daemon, "health=healthy");
    assert!(
        healthy.contains("hc Up") && healthy.contains("(healthy)"),
        "{healthy}"
    );
    assert!(!ps_status(daemon, "health=unhealthy").contains("hc "));
    assert!(ps_status(daemon, "health=none")
        .lines()
        .all(|l| !l.starts_with("hc ")));

    let events = daemon.docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &(SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 1)
        .to_string(),
        "--filter",
        "event=health_status",
        "--filter",
        "container=hc",
        "--format",
        "{{.Status}}",
    ]);
    let events = stdout_of(&events);
    let events: Vec<&str> = events.lines().collect();
    assert_eq!(
        events,
        ["health_status: unhealthy", "health_status: healthy"]
    );

    // A new hulld takes the VM back, with its health, and probes on.
    daemon.restart_after_crash(&[]);
    let after = &inspect(daemon, "hc")["State"]["Health"];
    assert_eq!(after["Status"], "healthy", "{after}");
    assert!(!after["Log"].as_array().unwrap().is_empty());
    // Its VM is found again in the background: exec once it is.
    eventually(30, || {
        let removed = daemon.docker(&["exec", "hc", "rm", "/tmp/ok"]);
        removed
            .status
            .success()
            .then_some(())
            .ok_or_else(|| text(&removed.stderr))
    });
    becomes(daemon, "hc", "unhealthy", 30);

    // Probing stops with the container; its last health stays to inspect.
    stdout_of(&daemon.docker(&["stop", "-t", "1", "hc"]));
    let stopped = inspect(daemon, "hc")["State"]["Health"]["Log"]
        .as_array()
        .unwrap()
        .len();
    std::thread::sleep(Duration::from_secs(2));
    let later = inspect(daemon, "hc");
    assert_eq!(
        later["State"]["Health"]["Log"].as_array().unwrap().len(),
        stopped
    );
    stdout_of(&daemon.docker(&["rm", "-f", "hc"]));
}

#[test]
fn no_healthcheck_disables_the_images_and_health_cmd_sets_one_with_bounded_output() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let image = image_with_healthcheck(daemon);
    let _up = DAEMON_UP.read().unwrap_or_else(|e| e.into_inner());
    let run = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "hc-none",
        "--no-healthcheck",
        image,
        "sleep",
        "1000",
    ]);
    stdout_of(&run);
    let flood = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo done >&2";
    let run = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "hc-cmd",
        "--health-cmd",
        flood,
        "--health-interval",
        "1s",
        "busybox",
        "sleep",
        "1000",
    ]);
    stdout_of(&run);
    becomes(daemon, "hc-cmd", "healthy", 30);
    let container = inspect(daemon, "hc-cmd");
    assert_eq!(container["Config"]["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(
        container["Config"]["Healthcheck"]["Interval"],
        1_000_000_000u64
    );
    let output = container["State"]["Health"]["Log"][0]["Output"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(output.len(), 4096, "docker keeps 4 KiB of a probe's output");
    assert!(output.bytes().all(|b| b == b'x'));

    let none = inspect(daemon, "hc-none");
    assert_eq!(
        none["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["NONE"])
    );
    assert!(none["State"]["Health"].is_null(), "{}", none["State"]);
    assert!(ps_status(daemon, "health=none").contains("hc-none Up"));
    let refused = daemon.docker(&[
        "run",
        "-d",
        "--health-interval",
        "10us",
        "--health-cmd",
        "true",
        "busybox",
    ]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("Interval in Healthcheck cannot be less than 1ms"),
        "{}",
        text(&refused.stderr)
    );
    stdout_of(&daemon.docker(&["rm", "-f", "hc-none", "hc-cmd"]));
}

#[test]
fn a_probe_that_hangs_past_its_timeout_is_killed_and_counts_as_a_failure() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let _up = DAEMON_UP.read().unwrap_or_else(|e| e.into_inner());
    let run = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "hc-hang",
        "--health-cmd",
        "exec sleep 77",
        "--health-interval",
        "1s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    stdout_of(&run);
    becomes(daemon, "hc-hang", "unhealthy", 30);
    let log = inspect(daemon, "hc-hang")["State"]["Health"]["Log"][0].clone();
    assert_eq!(log["ExitCode"], -1, "{log}");
    assert_eq!(log["Output"], "Health check exceeded timeout (1s)");
    let took = rfc3339(log["End"].as_str().unwrap())
        .duration_since(rfc3339(log["Start"].as_str().unwrap()))
        .unwrap();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Killed at its timeout, and never two at once.
    let top = stdout_of(&daemon.docker(&["top", "hc-hang"]));
    assert!(top.matches("sleep 77").count() <= 1, "{top}");
    stdout_of(&daemon.docker(&["rm", "-f", "hc-hang"]));
}

#[test]
fn compose_starts_a_service_once_the_one_it_depends_on_is_healthy() {
    let daemon = daemon();
    let _up = DAEMON_UP.read().unwrap_or_else(|e| e.into_inner());
    let Some(project) = common::compose::Project::new(
        daemon,
        "waits",
        r#"version: "2.4"
services:
  web:
    image: busybox
    command: sh -c "sleep 3 && touch /tmp/ready && exec sleep 1000"
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
  app:
    image: busybox
    command: sleep 1000
    depends_on:
      web:
        condition: service_healthy
"#,
    ) else {
        return;
    };
    let compose = |args: &[&str]| project.run(args);
    compose(&["up", "-d"]);
    let web = inspect(daemon, "waits_web_1");
    let app = inspect(daemon, "waits_app_1");
    assert_eq!(
        web["State"]["Health"]["Status"], "healthy",
        "{}",
        web["State"]
    );
    let first_healthy = web["State"]["Health"]["Log"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["ExitCode"] == 0)
        .map(|entry| rfc3339(entry["End"].as_str().unwrap()))
        .expect("a passing probe");
    let app_started = rfc3339(app["State"]["StartedAt"].as_str().unwrap());
    assert!(
        app_started >= first_healthy,
        "app started before web was healthy"
    );
    compose(&["down", "-t", "1"]);
}

/// hulld's resident memory, in KiB.
fn hulld_rss_kib(daemon: &Daemon) -> u64 {
    let pid = daemon.pid().expect("hulld runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_guest_flooding_its_probes_output_does_not_grow_hulld() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let _up = DAEMON_UP.read().unwrap_or_else(|e| e.into_inner());
    // 16 MiB from each probe, which fails, so each result is logged.
    let flood = "head -c 16777216 /dev/zero; exit 1";
    let run = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "hc-flood",
        "--health-cmd",
        flood,
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    stdout_of(&run);
    becomes(daemon, "hc-flood", "unhealthy", 60);
    let before = hulld_rss_kib(daemon);
    eventually(90, || {
        let health = inspect(daemon, "hc-flood")["State"]["Health"].clone();
        let streak = health["FailingStreak"].as_u64().unwrap_or(0);
        (streak >= 5).then_some(()).ok_or(health.to_string())
    });
    let grown = hulld_rss_kib(daemon).saturating_sub(before);
    let health = inspect(daemon, "hc-flood")["State"]["Health"].clone();
    for entry in health["Log"].as_array().unwrap() {
        assert_eq!(entry["ExitCode"], 1, "{entry}");
        assert_eq!(entry["Output"].as_str().unwrap().len(), 4096);
    }
    // 64 MiB and more went through; hulld kept a few KiB of it.
    assert!(grown < 32 << 10, "hulld grew by {grown} KiB");
    eprintln!("hulld grew by {grown} KiB while probes wrote 64 MiB");
    stdout_of(&daemon.docker(&["rm", "-f", "hc-flood"]));
}
