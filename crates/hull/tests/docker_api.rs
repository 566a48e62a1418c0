//! The Engine API as docker's clients expect it, over the raw socket:
//! settings docker stores come back from inspect, nulls read as absent, a
//! SIGKILL returns once the container has exited, and swarm's endpoints
//! answer as a host outside a swarm does.

mod common;

use common::{daemon, text, Daemon};
use serde_json::{json, Value};
use std::process::Command;

/// `method path` with a JSON `body` on the daemon's socket: (status, answer).
fn api(daemon: &Daemon, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg("--unix-socket")
        .arg(&daemon.socket)
        .args(["-H", "Content-Type: application/json"]);
    if let Some(body) = body {
        command.arg("--data-binary").arg(body.to_string());
    }
    let output = command
        .arg(format!("http://hulld/v1.43{path}"))
        .output()
        .expect("curl runs");
    let out = text(&output.stdout);
    let (answer, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let answer = serde_json::from_str(answer).unwrap_or(Value::String(answer.to_owned()));
    (code.trim().parse().unwrap_or(0), answer)
}

fn create(daemon: &Daemon, body: &Value) -> String {
    let (status, answer) = api(daemon, "POST", "/containers/create", Some(body));
    assert_eq!(status, 201, "{answer}");
    answer["Id"].as_str().unwrap().to_owned()
}

#[test]
fn host_config_keys_docker_stores_come_back_from_inspect() {
    let daemon = daemon();
    let id = create(
        daemon,
        &json!({
            "Image": "busybox", "Cmd": ["true"], "MacAddress": "02:42:ac:11:00:0a",
            "Tty": null, "Labels": null,
            "HostConfig": {
                "CpuShares": 512, "CpusetCpus": "0", "Init": true, "Tmpfs": {"/run": "size=1m"},
                "UTSMode": "host", "PidMode": "host", "CgroupnsMode": "private",
                "Isolation": "default", "Runtime": "runc", "VolumesFrom": ["other"],
                "DeviceCgroupRules": ["c 7:128 rwm"], "MemorySwappiness": 10,
                "GroupAdd": ["1000"], "AutoRemove": null, "Dns": null,
                "LogConfig": {"Type": "json-file", "Config": {"max-file": "3"}},
            },
        }),
    );
    let (status, inspect) = api(daemon, "GET", &format!("/containers/{id}/json"), None);
    assert_eq!(status, 200, "{inspect}");
    let host = &inspect["HostConfig"];
    assert_eq!(host["CpuShares"], 512);
    assert_eq!(host["CpusetCpus"], "0");
    assert_eq!(host["Init"], true);
    assert_eq!(host["Tmpfs"], json!({"/run": "size=1m"}));
    assert_eq!(host["UTSMode"], "host");
    assert_eq!(host["PidMode"], "host");
    assert_eq!(host["CgroupnsMode"], "private");
    assert_eq!(host["Isolation"], "default");
    assert_eq!(host["Runtime"], "runc");
    assert_eq!(host["VolumesFrom"], json!(["other"]));
    assert_eq!(host["DeviceCgroupRules"], json!(["c 7:128 rwm"]));
    assert_eq!(host["MemorySwappiness"], 10);
    assert_eq!(host["GroupAdd"], json!(["1000"]));
    assert_eq!(host["AutoRemove"], false);
    assert_eq!(host["LogConfig"]["Config"], json!({"max-file": "3"}));
    // Docker's defaults for what the client left out.
    assert_eq!(host["IpcMode"], "private");
    assert_eq!(host["ShmSize"], 67_108_864);
    assert_eq!(inspect["Config"]["MacAddress"], "02:42:ac:11:00:0a");

    let update = json!({"CpuShares": 3});
    let (status, answer) = api(
        daemon,
        "POST",
        &format!("/containers/{id}/update"),
        Some(&update),
    );
    assert_eq!(status, 200, "{answer}");
    let (_, inspect) = api(daemon, "GET", &format!("/containers/{id}/json"), None);
    assert_eq!(inspect["HostConfig"]["CpuShares"], 3);
    assert_eq!(
        inspect["HostConfig"]["Init"], true,
        "an update keeps the rest"
    );

    // What Hull cannot honour in any form is refused, saying why.
    for host in [json!({"Runtime": "kata"}), json!({"Isolation": "hyperv"})] {
        let body = json!({"Image": "busybox", "HostConfig": host});
        let (status, answer) = api(daemon, "POST", "/containers/create", Some(&body));
        assert_eq!(status, 400, "{host}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("Hull"),
            "{answer}"
        );
    }
    let (status, _) = api(daemon, "DELETE", &format!("/containers/{id}"), None);
    assert_eq!(status, 204);
}

#[test]
fn a_sigkill_returns_once_the_container_has_exited() {
    let daemon = daemon();
    for _ in 0..3 {
        let id = create(
            daemon,
            &json!({"Image": "busybox", "Cmd": ["sleep", "600"]}),
        );
        let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
        assert_eq!(status, 204, "{answer}");
        let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/kill"), None);
        assert_eq!(status, 204, "{answer}");
        let (_, inspect) = api(daemon, "GET", &format!("/containers/{id}/json"), None);
        let state = &inspect["State"];
        assert_eq!(state["Status"], "exited", "{state}");
        assert_eq!(state["Running"], false, "{state}");
        assert_eq!(state["ExitCode"], 137, "{state}");
        let (status, answer) = api(daemon, "DELETE", &format!("/containers/{id}"), None);
        assert_eq!(status, 204, "{answer}");
    }
}

#[test]
fn swarm_endpoints_answer_as_a_host_outside_a_swarm() {
    let daemon = daemon();
    for (method, path) in [
        ("GET", "/swarm"),
        ("GET", "/services"),
        ("POST", "/swarm/leave"),
    ] {
        let (status, answer) = api(daemon, method, path, None);
        assert_eq!(status, 503, "{method} {path}: {answer}");
        assert_eq!(answer["message"], "This node is not part of a swarm");
    }
}

#[test]
fn diff_lists_what_a_stopped_container_added_and_deleted() {
    let daemon = daemon();
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sh", "-c", "touch /test && rm /etc/group"]}),
    );
    let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
    assert_eq!(status, 204, "{answer}");
    let (status, waited) = api(daemon, "POST", &format!("/containers/{id}/wait"), None);
    assert_eq!(
        (status, &waited["StatusCode"]),
        (200, &json!(0)),
        "{waited}"
    );
    let (status, changes) = api(daemon, "GET", &format!("/containers/{id}/changes"), None);
    assert_eq!(status, 200, "{changes}");
    let changes = changes.as_array().unwrap();
    let kind = |path: &str| {
        changes
            .iter()
            .find(|c| c["Path"] == path)
            .map(|c| c["Kind"].clone())
    };
    assert_eq!(kind("/test"), Some(json!(1)), "added: {changes:?}");
    assert_eq!(kind("/etc/group"), Some(json!(2)), "deleted: {changes:?}");
    assert_eq!(kind("/etc"), Some(json!(0)), "changed: {changes:?}");
    assert_eq!(kind("/bin"), None, "untouched: {changes:?}");
    let (status, answer) = api(daemon, "GET", "/containers/no-such/changes", None);
    assert_eq!(status, 404, "{answer}");
    api(daemon, "DELETE", &format!("/containers/{id}"), None);
}

#[test]
fn distribution_inspect_asks_the_registry() {
    let daemon = daemon();
    let registry = common::registry::Registry::start();
    registry.push_archive(&common::busybox_archive(), "library/busybox:1.36", &[]);
    let manifest = registry.raw_manifest("library/busybox:1.36", &[]);
    let name = registry.name("library/busybox:1.36");
    let (status, answer) = api(daemon, "GET", &format!("/distribution/{name}/json"), None);
    assert_eq!(status, 200, "{answer}");
    let digest = {
        use sha2::Digest;
        format!("sha256:{:x}", sha2::Sha256::digest(&manifest))
    };
    assert_eq!(answer["Descriptor"]["digest"], digest.as_str(), "{answer}");
    assert_eq!(answer["Descriptor"]["size"], manifest.len());
    let platforms = answer["Platforms"].as_array().unwrap();
    assert!(platforms.iter().any(|p| p["os"] == "linux"), "{answer}");
    // A tag the registry lacks, and a registry nobody serves.
    let missing = registry.name("library/busybox:none");
    let (status, answer) = api(
        daemon,
        "GET",
        &format!("/distribution/{missing}/json"),
        None,
    );
    assert_eq!(status, 404, "{answer}");
    let port = common::free_port();
    let nowhere = format!("127.0.0.1:{port}/busybox:latest");
    let (status, answer) = api(
        daemon,
        "GET",
        &format!("/distribution/{nowhere}/json"),
        None,
    );
    assert_eq!(status, 500, "{answer}");
}
