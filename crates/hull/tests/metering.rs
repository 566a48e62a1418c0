//! Metering end to end: a tenant's container run and pod VM recorded with
//! their sizes and a 10 s minimum, and closed at their real end when their
//! VM ends while hulld is down (killed with SIGKILL), not when hulld comes
//! back; the operator's foreground runs billed too.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::cloud::Cloud;
use common::{assert_fails, eventually, stdout_of, text};
use serde_json::Value;

const ENV: &[(&str, &str)] = &[("HULL_NO_TEMPLATES", "1")];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A pod of two S1 containers whose `side` ends at once.
const POD: &str = r#"
metadata:
  name: app
  labels: {sh_hyper_instancetype: S1}
spec:
  restartPolicy: Never
  containers:
    - {name: main, image: busybox, command: [sleep, "600"]}
    - {name: side, image: busybox, command: [echo, side done]}
"#;

fn runs(output: &std::process::Output) -> Vec<Value> {
    let report: Value = serde_json::from_str(&stdout_of(output)).unwrap();
    serde_json::from_value(report["Runs"].clone()).unwrap()
}

#[test]
fn a_run_that_ends_while_hulld_is_down_is_closed_at_its_real_end() {
    let metrics_port = common::free_port();
    let metrics = format!("tcp://127.0.0.1:{metrics_port}");
    let env = [ENV, &[("HULL_METRICS", metrics.as_str())]].concat();
    let cloud = Cloud::start(&env);
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    let archive = common::busybox_archive();
    stdout_of(
        &cloud
            .daemon
            .hull(&["load", "-i", archive.to_str().unwrap()]),
    );
    let acme_usage = |args: &[&str]| cloud.tenant(&acme, &acme_secret, args);
    stdout_of(&acme_usage(&["load", "-i", archive.to_str().unwrap()]));

    let id = stdout_of(&acme_usage(&[
        "run", "-d", "--name", "web", "--size", "S2", "busybox", "sleep", "600",
    ]));
    let id = id.trim();
    let mut open = Vec::new();
    eventually(30, || {
        open = runs(&acme_usage(&["usage", "--format", "json"]));
        (open.len() == 1).then_some(()).ok_or(format!("{open:?}"))
    });
    let run = &open[0];
    assert_eq!(run["Kind"], "container");
    assert_eq!(run["ContainerId"], id);
    assert_eq!(run["ContainerName"], "web");
    assert_eq!(run["Tenant"], "acme");
    assert_eq!(run["Size"]["Name"], "S2");
    assert_eq!(run["Size"]["Vcpus"], 1);
    assert_eq!(run["Size"]["MemoryMiB"], 128);
    assert!(run["End"].is_null(), "{run}");
    let start = run["Start"].as_i64().unwrap();
    // Another tenant sees none of it.
    let theirs = runs(&cloud.tenant(&beta, &beta_secret, &["usage", "--format", "json"]));
    assert!(theirs.is_empty(), "{theirs:?}");

    // A pod's VM is billed as one run at the pod's size (2 × S1), whatever
    // its containers do: its `side` ending at once ends nothing.
    let pod_file = cloud.daemon.root.parent().unwrap().join("pod.yaml");
    std::fs::write(&pod_file, POD).unwrap();
    let pod = stdout_of(&acme_usage(&[
        "pod",
        "run",
        "-f",
        pod_file.to_str().unwrap(),
    ]));
    let pod = pod.trim().to_owned();
    let mut pod_run = Value::Null;
    eventually(60, || {
        let all = runs(&acme_usage(&["usage", "--format", "json"]));
        let side_done = stdout_of(&acme_usage(&["logs", "app.side"])) == "side done\n";
        pod_run = all
            .iter()
            .find(|r| r["Kind"] == "pod")
            .cloned()
            .unwrap_or_default();
        (side_done && all.len() == 2)
            .then_some(())
            .ok_or(format!("{all:?}"))
    });
    assert_eq!(pod_run["ContainerId"], pod.as_str(), "{pod_run}");
    assert_eq!(pod_run["ContainerName"], "app", "{pod_run}");
    assert_eq!(pod_run["Size"]["Vcpus"], 2, "{pod_run}");
    assert_eq!(pod_run["Size"]["MemoryMiB"], 128, "{pod_run}");
    assert!(pod_run["End"].is_null(), "{pod_run}");
    let pod_pid_file = cloud
        .daemon
        .root
        .join("vms")
        .join(format!("c-pod-{}", &pod[..16]))
        .join("qemu.pid");

    // hulld dies; the VMs end while no hulld runs; hulld comes back later.
    let pid_file = cloud
        .daemon
        .root
        .join("vms")
        .join(format!("c-{}", &id[..16]))
        .join("qemu.pid");
    let mut killed_at = 0;
    cloud.restart_after_crash_with(&env, || {
        let pid = |file: &std::path::Path| -> i32 {
            std::fs::read_to_string(file)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (qemu, pod_qemu) = (pid(&pid_file), pid(&pod_pid_file));
        killed_at = now_ms();
        // SAFETY: signalling the VMs this test's hulld started.
        unsafe {
            libc::kill(qemu, libc::SIGKILL);
            libc::kill(pod_qemu, libc::SIGKILL);
        }
        // Long enough that an end taken at the restart would show.
        std::thread::sleep(Duration::from_secs(4));
    });
    let restarted_at = now_ms();
    let mut closed = Value::Null;
    eventually(60, || {
        // The tenant listener comes up a moment after the socket.
        let output = acme_usage(&["usage", "--format", "json"]);
        if !output.status.success() {
            return Err(text(&output.stderr));
        }
        let all = runs(&output);
        closed = all.first().cloned().unwrap_or_default();
        pod_run = all.get(1).cloned().unwrap_or_default();
        (!closed["End"].is_null() && !pod_run["End"].is_null())
            .then_some(())
            .ok_or(format!("still open: {all:?}"))
    });
    assert_eq!(pod_run["Kind"], "pod", "{pod_run}");
    assert_eq!(pod_run["EndedBy"], "witness", "{pod_run}");
    let pod_off = pod_run["End"].as_i64().unwrap() - killed_at;
    assert!(
        (-50..1000).contains(&pod_off),
        "{pod_run}: killed at {killed_at}"
    );
    let end = closed["End"].as_i64().unwrap();
    let off = end - killed_at;
    eprintln!(
        "the run ended {off} ms after QEMU was killed; hulld came back {} ms after",
        restarted_at - killed_at
    );
    assert_eq!(closed["EndedBy"], "witness", "{closed}");
    assert!(
        (-50..1000).contains(&off),
        "{closed}: killed at {killed_at}"
    );
    assert!(end < restarted_at - 2000, "{closed}");
    let seconds = closed["Seconds"].as_u64().unwrap();
    let expected = (((end - start) as u64).div_ceil(1000)).max(10);
    assert_eq!(seconds, expected, "{closed}");
    // The image acme keeps is sampled as its own stored bytes (the first
    // sample is taken once hulld has taken its VMs back).
    eventually(60, || {
        let output = acme_usage(&["usage", "--format", "json"]);
        let report: Value = serde_json::from_str(&stdout_of(&output)).unwrap();
        let stored = report["Storage"].as_array().cloned().unwrap_or_default();
        stored
            .iter()
            .any(|s| {
                s["Kind"] == "image"
                    && s["Tenant"] == "acme"
                    && s["Bytes"].as_u64().unwrap_or(0) > 0
            })
            .then_some(())
            .ok_or(format!("no image sampled: {report}"))
    });

    // A run that ends while hulld runs is closed by whichever sees the end
    // first (the witness, at QEMU's exit, usually precedes hulld's `die`);
    // an operator's run has no tenant; a short one is billed 10 s.
    stdout_of(
        &cloud
            .daemon
            .hull(&["run", "--name", "quick", "busybox", "true"]),
    );
    let mut quick = Value::Null;
    eventually(30, || {
        let all = runs(&cloud.daemon.hull(&["admin", "usage", "--format", "json"]));
        quick = all
            .into_iter()
            .find(|r| r["ContainerName"] == "quick")
            .unwrap_or_default();
        (!quick["End"].is_null())
            .then_some(())
            .ok_or(format!("{quick}"))
    });
    assert!(quick["Tenant"].is_null(), "{quick}");
    assert_eq!(quick["Seconds"], 10, "{quick}");
    assert!(
        quick["EndedBy"] == "hulld" || quick["EndedBy"] == "witness",
        "{quick}"
    );

    // The operator's foreground `run --rm` (Hull's own run stream, no
    // container record) is billed too, under the image's name.
    stdout_of(&cloud.daemon.hull(&["run", "--rm", "busybox", "true"]));
    let mut foreground = Value::Null;
    eventually(30, || {
        let all = runs(&cloud.daemon.hull(&["admin", "usage", "--format", "json"]));
        foreground = all
            .into_iter()
            .find(|r| r["ContainerName"] == "busybox")
            .unwrap_or_default();
        (!foreground["End"].is_null())
            .then_some(())
            .ok_or(format!("{foreground}"))
    });
    assert!(foreground["Tenant"].is_null(), "{foreground}");
    assert_eq!(foreground["Seconds"], 10, "{foreground}");
    assert_eq!(foreground["EndedBy"], "hulld", "{foreground}");

    let table = stdout_of(&cloud.daemon.hull(&["admin", "usage"]));
    assert!(table.contains("acme") && table.contains("TOTAL"), "{table}");
    let only_acme = runs(
        &cloud
            .daemon
            .hull(&["admin", "usage", "--tenant", "acme", "--format", "json"]),
    );
    assert_eq!(only_acme.len(), 2, "{only_acme:?}");
    let later = runs(
        &cloud
            .daemon
            .hull(&["admin", "usage", "--since", "1s", "--format", "json"]),
    );
    assert!(
        later.iter().all(|r| r["ContainerName"] != "web"),
        "{later:?}"
    );
    assert_fails(
        &acme_usage(&["usage", "--since", "2100-01-01T00:00:00Z"]),
        1,
        &["lies in the future"],
    );
    for since in ["soon", "1e9", "99999999999999999999", "-5"] {
        let output = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&cloud.daemon.socket)
            .arg(format!("http://hull/hull/admin/usage?since={since}"))
            .output()
            .unwrap();
        assert_eq!(text(&output.stdout), "400", "since={since}");
    }

    let scraped = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{metrics_port}/metrics")])
        .output()
        .unwrap();
    let scraped = text(&scraped.stdout);
    assert!(
        scraped.contains(&format!(
            "hull_tenant_container_seconds_total{{tenant=\"acme\",size=\"S2\"}} {seconds}"
        )),
        "{scraped}"
    );
}
