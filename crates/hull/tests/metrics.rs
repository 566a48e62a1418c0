//! The operator's metrics: hulld's `--metrics` listener scraped by a real
//! Prometheus server, and the series read back through its query API.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, http_exchange, loaded_daemon, spawn_owned, stdout_of, Owned};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// `GET path` from `127.0.0.1:port`: the status line and headers, and the body.
fn get(port: u16, path: &str) -> Result<(String, String), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    http_exchange(
        stream,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

/// Starts Prometheus, scraping `target` every second, with its
/// configuration and data in `dir`; returns it and its web port.
fn start_prometheus(dir: &Path, target: u16) -> (Owned, u16) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: hull\n    static_configs:\n      \
             - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let mut command = Command::new(PROMETHEUS);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    (Owned(spawn_owned(command)), port)
}

/// The result vector of an instant query: each series' labels and value.
fn query(port: u16, expression: &str) -> Result<Vec<(Value, f64)>, String> {
    let (head, body) = get(port, &format!("/api/v1/query?query={expression}"))?;
    if !head.contains(" 200 ") {
        return Err(format!("query {expression}: {head}\n{body}"));
    }
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    let results = answer["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("no result vector: {body}"))?;
    Ok(results
        .iter()
        .map(|series| {
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (series["metric"].clone(), value)
        })
        .collect())
}

#[test]
fn prometheus_scrapes_vm_starts_and_api_requests_from_hulld() {
    if !Path::new(PROMETHEUS).exists() {
        eprintln!("skipped: no {PROMETHEUS} (scripts/deps.sh installs it)");
        return;
    }
    let metrics_port = free_port();
    let address = format!("tcp://127.0.0.1:{metrics_port}");
    let daemon = loaded_daemon(&[("HULL_METRICS", &address)]);
    stdout_of(&daemon.hull(&["run", "--rm", "busybox", "true"]));

    // The listener itself: the text format on /metrics, nothing elsewhere.
    let (head, body) = get(metrics_port, "/metrics").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        body.contains("# TYPE hull_vm_start_seconds histogram"),
        "{body}"
    );
    let (head, _) = get(metrics_port, "/").unwrap();
    assert!(head.starts_with("HTTP/1.0 404"), "{head}");
    // A pull from a registry that is not there counts as an error.
    let pull = daemon.hull(&["pull", &format!("127.0.0.1:{}/nothing:1", free_port())]);
    assert!(!pull.status.success());
    eventually(10, || {
        let (_, body) = get(metrics_port, "/metrics")?;
        match body.contains(r#"hull_image_pulls_total{result="error"} 1"#) {
            true => Ok(()),
            false => Err(format!("no failed pull counted: {body}")),
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, port) = start_prometheus(dir.path(), metrics_port);
    let log = || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
    eventually(90, || {
        let up = query(port, "up").map_err(|e| format!("{e}\n{}", log()))?;
        match up.first() {
            Some((_, value)) if *value == 1.0 => Ok(()),
            other => Err(format!("hulld is not up yet: {other:?}\n{}", log())),
        }
    });

    eventually(30, || {
        let starts = query(port, "hull_vm_start_seconds_count")?;
        let started: f64 = starts
            .iter()
            .filter(|(labels, _)| {
                matches!(
                    labels["path"].as_str(),
                    Some("pool" | "template_clone" | "cold_boot")
                )
            })
            .map(|(_, value)| value)
            .sum();
        if started >= 1.0 {
            Ok(())
        } else {
            Err(format!("no VM start by path yet: {starts:?}"))
        }
    });
    let requests = query(port, "hull_api_requests_total").unwrap();
    assert!(
        requests
            .iter()
            .any(|(labels, value)| labels["listener"] == "unix"
                && labels["code"] == "200"
                && labels["method"].is_string()
                && *value >= 1.0),
        "no counted requests by code: {requests:?}"
    );
    let vms = query(port, "hull_vms").unwrap();
    assert!(
        vms.iter()
            .any(|(labels, _)| labels["state"] == "running" && labels["size"].is_string()),
        "no VMs by state and size: {vms:?}"
    );
}
