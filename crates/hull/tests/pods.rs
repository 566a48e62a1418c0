//! Pods end to end through the `hull` CLI: several containers in one VM,
//! talking over localhost and sharing a volume, each with its own rootfs;
//! per-container restarts; stop, start and rm of the whole pod; a pod's
//! size; and a hulld killed with pods running, then recovered.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_fails, daemon, loaded_daemon, stdout_of, text, Daemon};

fn hull_out(daemon: &Daemon, args: &[&str]) -> String {
    stdout_of(&daemon.hull(args))
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    common::eventually(90, || check().then_some(()).ok_or_else(|| what.to_owned()));
}

/// Writes a pod file next to the daemon's state.
fn pod_file(daemon: &Daemon, name: &str, text: &str) -> PathBuf {
    let path = daemon.root.parent().unwrap().join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn inspect(daemon: &Daemon, container: &str) -> serde_json::Value {
    let output = hull_out(daemon, &["inspect", container]);
    let mut array: Vec<serde_json::Value> = serde_json::from_str(&output).unwrap();
    array.remove(0)
}

fn state(daemon: &Daemon, container: &str, field: &str) -> serde_json::Value {
    inspect(daemon, container)["State"][field].clone()
}

fn pod_json(daemon: &Daemon, pod: &str) -> serde_json::Value {
    let output = hull_out(daemon, &["pod", "inspect", pod]);
    let mut array: Vec<serde_json::Value> = serde_json::from_str(&output).unwrap();
    array.remove(0)
}

/// The VM directories under the daemon's state: one per running VM.
fn vm_dirs(daemon: &Daemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(daemon.root.join("vms"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("c-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: shop}
spec:
  restartPolicy: Always
  volumes:
    - name: html
      emptyDir: {}
  containers:
    - name: server
      image: busybox
      command: [sh, -c]
      args: ["echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
      ports:
        - {containerPort: 8080, hostPort: HOST_PORT, hostIP: 127.0.0.1}
      volumeMounts:
        - {name: html, mountPath: /www}
    - name: client
      image: busybox
      command:
        - sh
        - -c
        - |
          until wget -qO- http://localhost:8080/; do sleep 0.2; done
          cat /shared/index.html
          touch /shared/x 2>/dev/null || echo "volume is read-only"
          while [ ! -e /tmp/quit ]; do sleep 0.2; done
          rm /tmp/quit
          exit 3
      env:
        - {name: ROLE, value: fetcher}
      volumeMounts:
        - {name: html, mountPath: /shared, readOnly: true}
"#;

#[test]
fn a_pods_containers_share_one_vm_its_network_and_volumes_but_not_their_rootfs() {
    let daemon = daemon();
    let host_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = pod_file(
        daemon,
        "web",
        &WEB.replace("HOST_PORT", &host_port.to_string()),
    );
    let id = hull_out(daemon, &["pod", "run", "-f", file.to_str().unwrap()]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "pod run prints the pod's id: {id:?}");

    // The client reached the server on localhost and read the shared volume,
    // read-only; both see the pod's hostname.
    eventually("the client's fetch in its logs", || {
        hull_out(daemon, &["logs", "web.client"]).contains("volume is read-only")
    });
    let logs = hull_out(daemon, &["logs", "web.client"]);
    assert_eq!(
        logs, "served-by-web\nserved-by-web\nvolume is read-only\n",
        "{logs}"
    );

    // The server's hostPort reaches it from the host.
    assert_eq!(fetch(host_port), "served-by-web\n");
    assert_eq!(
        hull_out(daemon, &["port", "web.server"]),
        format!("8080/tcp -> 127.0.0.1:{host_port}\n")
    );

    // One VM holds both (other tests' VMs may run beside it).
    let pod_vm = format!("c-pod-{}", &id[..16]);
    let members = [
        inspect(daemon, "web.server")["Id"]
            .as_str()
            .unwrap()
            .to_owned(),
        inspect(daemon, "web.client")["Id"]
            .as_str()
            .unwrap()
            .to_owned(),
    ];
    let vms = vm_dirs(daemon);
    assert!(vms.contains(&pod_vm), "{vms:?}");
    for member in &members {
        assert!(!vms.iter().any(|vm| vm.contains(&member[..16])), "{vms:?}");
    }
    let listing = hull_out(daemon, &["pod", "ls"]);
    let row = listing
        .lines()
        .find(|l| l.contains(" web "))
        .expect(&listing);
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains("2/2 running"), "{row}");
    assert!(row.contains("server,client"), "{row}");
    let ps = hull_out(daemon, &["ps"]);
    assert!(
        ps.contains("web.server") && ps.contains("web.client"),
        "{ps}"
    );

    // Each has its own rootfs, its own env and process tree; exec targets one.
    let output = daemon.hull(&["exec", "web.client", "ls", "/www"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    assert_eq!(
        hull_out(daemon, &["exec", "web.client", "sh", "-c", "echo $ROLE"]),
        "fetcher\n"
    );
    let server_pid = state(daemon, "web.server", "Pid");
    let processes = hull_out(daemon, &["exec", "web.server", "ps", "-o", "comm"]);
    assert!(processes.contains("httpd"), "{processes}");
    assert!(
        !processes.contains("wget") && !processes.contains("sleep"),
        "{processes}"
    );
    hull_out(
        daemon,
        &["exec", "web.server", "sh", "-c", "echo kept > /root/note"],
    );

    // A pod's container goes with its pod only.
    assert_fails(
        &daemon.hull(&["rm", "-f", "web.client"]),
        1,
        &["belongs to pod web"],
    );

    // One container exits: its policy restarts it in the same VM; the other
    // runs on untouched.
    // The exec may still be ending when the main process exits and its
    // processes go with it (as in docker): 0, or 137 if it was killed.
    let quit = daemon.hull(&["exec", "web.client", "touch", "/tmp/quit"]);
    assert!(
        matches!(quit.status.code(), Some(0 | 137)),
        "{}",
        text(&quit.stderr)
    );
    eventually("the client restarted", || {
        state(daemon, "web.client", "Status") == "running"
            && inspect(daemon, "web.client")["RestartCount"] == 1
    });
    assert_eq!(state(daemon, "web.server", "Pid"), server_pid);
    assert!(vm_dirs(daemon).contains(&pod_vm));

    // Stop the pod: both exit, the VM powers off. Start it: a new VM, the
    // containers' files kept.
    hull_out(daemon, &["pod", "stop", "-t", "1", "web"]);
    for member in ["web.server", "web.client"] {
        assert_eq!(state(daemon, member, "Status"), "exited", "{member}");
    }
    eventually("the pod's VM gone", || !vm_dirs(daemon).contains(&pod_vm));
    assert_eq!(pod_json(daemon, "web")["State"], "exited");
    hull_out(daemon, &["pod", "start", "web"]);
    assert_eq!(pod_json(daemon, "web")["Status"], "2/2 running");
    assert_eq!(
        hull_out(daemon, &["exec", "web.server", "cat", "/root/note"]),
        "kept\n"
    );

    // Removal: refused while running, then forced; nothing is left.
    assert_fails(
        &daemon.hull(&["pod", "rm", "web"]),
        1,
        &["stop the pod before removing it or force remove"],
    );
    hull_out(daemon, &["pod", "rm", "-f", "web"]);
    let all = hull_out(daemon, &["ps", "-a"]);
    assert!(!all.contains("web."), "{all}");
    assert!(!hull_out(daemon, &["pod", "ls"]).contains(" web "));
    eventually("no VM left", || !vm_dirs(daemon).contains(&pod_vm));
}

#[test]
fn a_pods_size_sets_its_vms_memory_and_cpus() {
    let daemon = daemon();
    let file = pod_file(
        daemon,
        "sized",
        r#"
metadata:
  name: sized
  annotations: {hull.sh/size: S4}
spec:
  containers:
    - {name: main, image: busybox, command: [sleep, "1000"]}
"#,
    );
    hull_out(daemon, &["pod", "run", "-f", file.to_str().unwrap()]);
    assert_eq!(pod_json(daemon, "sized")["Size"], "1 vCPU, 512 MiB");
    let meminfo = hull_out(daemon, &["exec", "sized.main", "cat", "/proc/meminfo"]);
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect(&meminfo);
    // The default VM has 256 MiB; this one has 512, less the kernel's share.
    assert!(
        (400 * 1024..=512 * 1024).contains(&total_kib),
        "{total_kib} KiB"
    );
    hull_out(daemon, &["pod", "rm", "-f", "sized"]);
}

#[test]
fn a_bad_pod_file_is_refused_by_name_and_creates_nothing() {
    let daemon = daemon();
    let cases = [
        (
            "metadata: {name: bad}\nspec: {containers: [{name: c, image: busybox, livenessProbe: {}}]}",
            "unknown field `livenessProbe`",
        ),
        (
            "metadata: {name: bad}\nspec: {volumes: [{name: v, hostPath: {path: /}}], containers: [{name: c, image: busybox}]}",
            "emptyDir",
        ),
        (
            "metadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: busybox}]}",
            "invalid pod name",
        ),
        ("metadata: {name: bad}\nspec: [", "not a valid pod"),
    ];
    for (index, (text, expected)) in cases.iter().enumerate() {
        let file = pod_file(daemon, &format!("bad{index}"), text);
        assert_fails(
            &daemon.hull(&["pod", "create", file.to_str().unwrap()]),
            1,
            &[expected],
        );
    }
    // The server checks too, for clients other than the CLI.
    let answer = post(
        &daemon.socket,
        "/hull/pods/create",
        "metadata: {name: p}\nspec: {containers: []}",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("the pod has no containers"), "{answer}");
    assert!(!hull_out(daemon, &["pod", "ls"]).contains("bad"));
    let all = hull_out(daemon, &["ps", "-a"]);
    assert!(!all.contains("bad."), "{all}");
}

/// The body of `GET /` from `127.0.0.1:port`.
fn fetch(port: u16) -> String {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (head, body) =
        common::http_exchange(stream, "GET / HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body
}

/// A raw HTTP request to hulld, as any client could send it.
fn post(socket: &Path, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: hull\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

const COUNTERS: &str = r#"
metadata: {name: counters}
spec:
  containers:
    - name: a
      image: busybox
      command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo a$i; sleep 0.3; done']
    - name: b
      image: busybox
      command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo b$i; sleep 0.3; done']
"#;

/// The highest count in a counter's logs.
fn last_count(daemon: &Daemon, container: &str, prefix: char) -> u64 {
    hull_out(daemon, &["logs", container])
        .lines()
        .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
        .max()
        .unwrap_or(0)
}

fn pod_vm_dir(daemon: &Daemon) -> PathBuf {
    let vms = vm_dirs(daemon);
    assert_eq!(vms.len(), 1, "{vms:?}");
    daemon.root.join("vms").join(&vms[0])
}

#[test]
fn pods_survive_hulld_killed_and_restarted() {
    let daemon = loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let file = pod_file(&daemon, "counters", COUNTERS);
    hull_out(&daemon, &["pod", "run", "-f", file.to_str().unwrap()]);
    eventually("both counting", || {
        last_count(&daemon, "counters.a", 'a') >= 2 && last_count(&daemon, "counters.b", 'b') >= 2
    });
    let pids = (
        state(&daemon, "counters.a", "Pid"),
        state(&daemon, "counters.b", "Pid"),
    );
    let vm_dir = pod_vm_dir(&daemon);
    hull_out(
        &daemon,
        &["exec", "counters.a", "sh", "-c", "echo kept > /root/file"],
    );

    daemon.restart_after_crash(&[("HULL_NO_TEMPLATES", "1")]);

    // The same VM and processes, their output still reaching the logs.
    eventually("both re-attached", || {
        state(&daemon, "counters.a", "Status") == "running"
            && state(&daemon, "counters.b", "Status") == "running"
    });
    assert_eq!(
        (
            state(&daemon, "counters.a", "Pid"),
            state(&daemon, "counters.b", "Pid")
        ),
        pids
    );
    assert_eq!(pod_vm_dir(&daemon), vm_dir);
    let before = (
        last_count(&daemon, "counters.a", 'a'),
        last_count(&daemon, "counters.b", 'b'),
    );
    eventually("both counting on", || {
        last_count(&daemon, "counters.a", 'a') >= before.0 + 3
            && last_count(&daemon, "counters.b", 'b') >= before.1 + 3
    });
    assert_eq!(
        hull_out(&daemon, &["exec", "counters.a", "cat", "/root/file"]),
        "kept\n"
    );
    assert_eq!(pod_json(&daemon, "counters")["Status"], "2/2 running");

    // Stopping the pod after the crash still powers its VM off.
    hull_out(&daemon, &["pod", "stop", "-t", "1", "counters"]);
    eventually("the VM gone", || !Path::new(&vm_dir).exists());
    hull_out(&daemon, &["pod", "rm", "counters"]);
}
