//! The Engine API as docker's clients expect it, over the raw socket:
//! settings docker stores come back from inspect, nulls read as absent, a
//! SIGKILL returns once the container has exited, an exit is reported
//! without waiting for the VM's power-off, detach keys end an attach, and
//! swarm's endpoints answer as a host outside a swarm does; GroupAdd,
//! MacAddress and the WebSocket attach are honoured.

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
    // VolumesFrom names a container that is there, as docker requires.
    let source = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Binds": ["/vf"]}}),
    );
    let (status, _) = api(
        daemon,
        "POST",
        &format!("/containers/{source}/rename?name=other"),
        None,
    );
    assert_eq!(status, 204);
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
    let mounts = inspect["Mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["Destination"] == "/vf"),
        "other's volume is mounted: {mounts:?}"
    );
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
    for container in [id, source] {
        let (status, _) = api(
            daemon,
            "DELETE",
            &format!("/containers/{container}?v=1"),
            None,
        );
        assert_eq!(status, 204);
    }
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
    // `/services` is not among them: it holds Hull's services, as Hyper.sh's did.
    for (method, path) in [
        ("GET", "/swarm"),
        ("GET", "/nodes"),
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

/// `start`, then `wait`: the exit code, with the time the wait took.
fn run_to_exit(daemon: &Daemon, id: &str) -> (Value, std::time::Duration) {
    let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
    assert_eq!(status, 204, "{answer}");
    let began = std::time::Instant::now();
    let (status, waited) = api(daemon, "POST", &format!("/containers/{id}/wait"), None);
    assert_eq!(status, 200, "{waited}");
    (waited["StatusCode"].clone(), began.elapsed())
}

#[test]
fn an_exit_is_reported_at_once_and_the_vm_powers_off_after() {
    let daemon = daemon();
    // Each run counts the runs before it in its writable layer: a start
    // right after an exit must find the last run's writes on the disk its
    // VM (still powering off when the exit was reported) handed back.
    let script = "echo x >> /runs; echo run-$(wc -l < /runs); exit 3";
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sh", "-c", script],
                "HostConfig": {"Binds": ["exit-fast:/data"]}}),
    );
    for run in 1..=2 {
        let (code, took) = run_to_exit(daemon, &id);
        assert_eq!(code, 3, "run {run}");
        eprintln!("run {run}: the wait took {took:?}");
        let (_, inspect) = api(daemon, "GET", &format!("/containers/{id}/json"), None);
        let state = &inspect["State"];
        assert_eq!(state["Status"], "exited", "{state}");
        assert_eq!(
            (&state["Running"], &state["ExitCode"]),
            (&json!(false), &json!(3))
        );
        let (status, _) = api(daemon, "POST", &format!("/containers/{id}/kill"), None);
        assert_eq!(status, 409, "an exited container is not killed");
        let logs = Command::new("curl")
            .args(["-sS", "--unix-socket"])
            .arg(&daemon.socket)
            .arg(format!("http://hulld/v1.43/containers/{id}/logs?stdout=1"))
            .output()
            .unwrap();
        assert!(
            text(&logs.stdout).contains(&format!("run-{run}")),
            "run {run}"
        );
    }
    // The volume's next user starts (no "attached to the running
    // container") and reads what the last one wrote, right after its exit.
    let writer = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sh", "-c", "echo written > /data/f"],
                "HostConfig": {"Binds": ["exit-fast:/data"]}}),
    );
    assert_eq!(run_to_exit(daemon, &writer).0, 0);
    let reader = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sh", "-c", "test \"$(cat /data/f)\" = written"],
                "HostConfig": {"Binds": ["exit-fast:/data"]}}),
    );
    assert_eq!(
        run_to_exit(daemon, &reader).0,
        0,
        "the reader saw the write"
    );
    // Removed right after its exit, with its volume after it.
    for id in [&id, &writer, &reader] {
        let (status, answer) = api(daemon, "DELETE", &format!("/containers/{id}"), None);
        assert_eq!(status, 204, "{answer}");
    }
    let (status, answer) = api(daemon, "DELETE", "/volumes/exit-fast", None);
    assert_eq!(status, 204, "{answer}");
}

/// Sends `request` on a fresh connection to the daemon, which takes it
/// over; returns the connection past the answer's headers.
fn hijack(daemon: &Daemon, method: &str, path: &str, body: &str) -> std::os::unix::net::UnixStream {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "{method} /v1.43{path} HTTP/1.1\r\nHost: hulld\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "{}", text(&head));
        head.push(byte[0]);
    }
    assert!(text(&head).starts_with("HTTP/1.1 101"), "{}", text(&head));
    stream
}

/// Reads until the daemon closes the connection; what came.
fn read_to_close(stream: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    let mut all = Vec::new();
    stream
        .read_to_end(&mut all)
        .expect("the daemon closes the connection");
    all
}

#[test]
fn detach_keys_close_an_attach_and_an_exec_and_the_process_runs_on() {
    use std::io::Write;
    let daemon = daemon();
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["cat"], "Tty": true, "OpenStdin": true}),
    );
    let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
    assert_eq!(status, 204, "{answer}");
    // Docker's default, ctrl-p ctrl-q, split across writes; then one of the
    // client's own, a single key.
    for (query, keys) in [
        ("", &[&b"\x10"[..], b"\x11"][..]),
        ("&detachKeys=ctrl-x", &[b"\x18"]),
    ] {
        let path = format!("/containers/{id}/attach?stream=1&stdin=1&stdout=1{query}");
        let mut stream = hijack(daemon, "POST", &path, "");
        for key in keys {
            stream.write_all(key).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let echoed = read_to_close(&mut stream);
        assert!(
            !echoed.contains(&0x10),
            "the keys are not the process's: {echoed:?}"
        );
        let (_, inspect) = api(daemon, "GET", &format!("/containers/{id}/json"), None);
        assert_eq!(inspect["State"]["Status"], "running", "{query}");
    }
    let path = format!("/containers/{id}/attach?stream=1&stdin=1&detachKeys=ctrl-1");
    let (status, answer) = api(daemon, "POST", &path, None);
    assert_eq!(status, 400, "{answer}");

    let exec = json!({"Cmd": ["cat"], "AttachStdin": true, "AttachStdout": true, "Tty": true,
                      "detachKeys": "ctrl-y"});
    let (status, answer) = api(
        daemon,
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&exec),
    );
    assert_eq!(status, 201, "{answer}");
    let exec_id = answer["Id"].as_str().unwrap().to_owned();
    let mut stream = hijack(
        daemon,
        "POST",
        &format!("/exec/{exec_id}/start"),
        r#"{"Tty":true}"#,
    );
    stream.write_all(b"\x19").unwrap();
    read_to_close(&mut stream);
    let (_, inspect) = api(daemon, "GET", &format!("/exec/{exec_id}/json"), None);
    assert_eq!(inspect["Running"], true, "the exec runs on: {inspect}");
    // A terminal's output framed as the start asks, as docker frames it.
    let exec = json!({"Cmd": ["echo", "hello"], "AttachStdout": true, "Tty": true});
    let (_, answer) = api(
        daemon,
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&exec),
    );
    let exec_id = answer["Id"].as_str().unwrap().to_owned();
    let mut stream = hijack(
        daemon,
        "POST",
        &format!("/exec/{exec_id}/start"),
        r#"{"Tty":false}"#,
    );
    let framed = read_to_close(&mut stream);
    assert!(framed.starts_with(&[1, 0, 0, 0]), "{framed:?}");
    assert!(text(&framed).contains("hello\r\n"), "{framed:?}");
    let bad = json!({"Cmd": ["cat"], "DetachKeys": "ctrl-pp"});
    let (status, answer) = api(
        daemon,
        "POST",
        &format!("/containers/{id}/exec"),
        Some(&bad),
    );
    assert_eq!(status, 400, "{answer}");
    api(daemon, "DELETE", &format!("/containers/{id}?force=1"), None);
}

#[test]
fn a_wait_ends_at_an_exit_that_the_restart_policy_follows() {
    let daemon = daemon();
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["true"],
                "HostConfig": {"RestartPolicy": {"Name": "always"}}}),
    );
    let (code, took) = run_to_exit(daemon, &id);
    assert_eq!(code, 0);
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let (status, answer) = api(daemon, "DELETE", &format!("/containers/{id}?force=1"), None);
    assert_eq!(status, 204, "{answer}");
}

#[test]
fn added_groups_join_the_process_and_its_execs() {
    if !common::has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let run = daemon.docker(&[
        "run",
        "--rm",
        "--group-add",
        "daemon",
        "--group-add",
        "4242",
        "busybox",
        "id",
        "-G",
    ]);
    assert_eq!(common::stdout_of(&run), "0 1 4242\n");
    let unknown = daemon.docker(&["run", "--rm", "--group-add", "nosuch", "busybox", "true"]);
    assert!(
        common::text(&unknown.stderr).contains("unable to find group nosuch"),
        "{}",
        common::text(&unknown.stderr)
    );
    let id = common::stdout_of(&daemon.docker(&[
        "run",
        "-d",
        "--group-add",
        "4242",
        "busybox",
        "sleep",
        "600",
    ]));
    let exec = daemon.docker(&["exec", id.trim(), "id", "-G"]);
    assert_eq!(common::stdout_of(&exec), "0 4242\n");
    common::stdout_of(&daemon.docker(&["rm", "-f", id.trim()]));
}

/// A WebSocket client of the daemon's socket at `url`.
async fn ws_connect(
    daemon: &Daemon,
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(&daemon.socket)
        .await
        .unwrap();
    let (socket, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    socket
}

#[test]
fn a_websocket_attach_carries_output_out_and_input_in() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let daemon = daemon();
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sh", "-c", "read line; echo got:$line"],
                "OpenStdin": true, "StdinOnce": true}),
    );
    // A request that is no WebSocket upgrade is refused, saying why.
    let (status, answer) = api(daemon, "GET", &format!("/containers/{id}/attach/ws"), None);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("websocket"),
        "{answer}"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url =
        format!("ws://localhost/containers/{id}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1");
    let said = runtime.block_on(async {
        let mut socket = ws_connect(daemon, &url).await;
        let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
        assert_eq!(status, 204, "{answer}");
        socket.send(Message::text("hello\n")).await.unwrap();
        let mut said = Vec::new();
        let read = async {
            while let Some(Ok(message)) = socket.next().await {
                if let Message::Binary(data) = message {
                    said.extend_from_slice(&data);
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), read)
            .await
            .expect("the output ends with the container");
        said
    });
    assert_eq!(String::from_utf8_lossy(&said), "got:hello\n");

    // A client's message past the bound closes its connection.
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sleep", "600"], "OpenStdin": true}),
    );
    let (status, _) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
    assert_eq!(status, 204);
    let url = format!("ws://localhost/containers/{id}/attach/ws?stream=1&stdin=1&stdout=1");
    runtime.block_on(async {
        let mut socket = ws_connect(daemon, &url).await;
        let _ = socket.send(Message::binary(vec![b'x'; 2 << 20])).await;
        let closed = async {
            loop {
                match socket.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), closed)
            .await
            .expect("hulld closes a connection that sent too much");
    });
    let (status, _) = api(daemon, "DELETE", &format!("/containers/{id}?force=1"), None);
    assert_eq!(status, 204);
}

#[test]
fn a_mac_address_given_is_the_interfaces() {
    let daemon = daemon();
    let mac = "02:42:ac:11:00:0b";
    let id = create(
        daemon,
        &json!({"Image": "busybox", "Cmd": ["sleep", "600"], "MacAddress": mac}),
    );
    let (status, answer) = api(daemon, "POST", &format!("/containers/{id}/start"), None);
    assert_eq!(status, 204, "{answer}");
    let exec = daemon.hull(&["exec", &id, "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(common::stdout_of(&exec), format!("{mac}\n"));
    let (_, inspect) = api(daemon, "GET", &format!("/containers/{id}/json"), None);
    assert_eq!(inspect["NetworkSettings"]["MacAddress"], mac, "{inspect}");
    let (status, _) = api(daemon, "DELETE", &format!("/containers/{id}?force=1"), None);
    assert_eq!(status, 204);
    for bad in ["01:42:ac:11:00:0b", "02:42:ac:11:00", "zz:42:ac:11:00:0b"] {
        let body = json!({"Image": "busybox", "MacAddress": bad});
        let (status, answer) = api(daemon, "POST", "/containers/create", Some(&body));
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("invalid MAC address"),
            "{answer}"
        );
    }
}
