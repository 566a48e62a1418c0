//! The daemon itself: one per state root, a socket only its group can
//! use, accept errors and descriptor limits that do not end it, logs that
//! rotate, admission of VMs, and what a crash in the middle of creates and
//! starts leaves for the next hulld to clean.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::NetNs;
use common::{assert_fails, eventually, http_exchange, loaded_daemon, stdout_of, text, Daemon};

/// A hulld this file starts by hand, with its own limits; killed on drop.
struct Hulld {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Hulld {
    /// Starts hulld on `root` and `socket` with RLIMIT_NOFILE set to
    /// `nofile` (soft, hard); waits for its socket unless it exits first.
    fn start(root: &Path, socket: &Path, nofile: Option<(u64, u64)>) -> Hulld {
        let log = root.with_extension(format!("{}.log", socket_name(socket)));
        let mut command = Command::new(common::bin_dir().join("hulld"));
        command
            .arg("--root")
            .arg(root)
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .env("HULL_KERNEL", common::kernel())
            .env("HULL_NO_TEMPLATES", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some((soft, hard)) = nofile {
            // SAFETY: setrlimit in the child before exec, on a struct of its own.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut hulld = Hulld {
            child: command.spawn().expect("hulld starts"),
            socket: socket.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(socket).is_err() {
            if hulld.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hulld did not start: {}",
                hulld.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        hulld
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `GET /_ping` answers OK.
    fn pings(&self) -> bool {
        request(&self.socket, "GET", "/_ping", None).is_ok_and(|(status, _)| status == 200)
    }
}

impl Drop for Hulld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn socket_name(socket: &Path) -> String {
    socket.file_name().unwrap().to_string_lossy().into_owned()
}

/// One HTTP/1.0 request over the API socket; the status and the body.
fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, String), String> {
    let stream = UnixStream::connect(socket).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(300)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: hull\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (head, rest) = http_exchange(stream, &request)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, rest))
}

#[test]
fn a_second_hulld_on_one_root_fails_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let first = Hulld::start(&root, &dir.path().join("first.sock"), None);
    assert!(first.pings(), "{}", first.log());
    let mut second = Hulld::start(&root, &dir.path().join("second.sock"), None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "a second hulld runs on one root: {}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "{}", second.log());
    let log = second.log();
    assert!(log.contains(&format!("pid {}", first.pid())), "{log}");
    assert!(log.contains(&root.display().to_string()), "{log}");
    assert!(!dir.path().join("second.sock").exists());
    // The first one's state is untouched: it still answers, its pid file stands.
    assert!(first.pings(), "{}", first.log());
    let pid_file = std::fs::read_to_string(root.join("hulld.pid")).unwrap();
    assert_eq!(pid_file.trim(), first.pid().to_string());
}

#[test]
fn hulds_started_together_by_clis_end_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let socket = dir.path().join("hull.sock");
    // Several CLIs find no daemon at once and each starts one.
    let clis: Vec<Child> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_hull"))
                .arg("ps")
                .env("HULL_HOST", format!("unix://{}", socket.display()))
                .env("HULL_ROOT", &root)
                .env("HULL_KERNEL", common::kernel())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for cli in clis {
        let output = cli.wait_with_output().unwrap();
        stdout_of(&output);
    }
    let pid: i32 = std::fs::read_to_string(root.join("hulld.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The others exit as soon as they find the lock taken.
    let mut running = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        running = hullds_on(&root);
        if running == [pid] {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    common::kill_processes_using(&root);
    assert_eq!(running, [pid], "hullds on one root: {running:?}");
}

/// The pids of the hullds whose command line names `root`.
fn hullds_on(root: &Path) -> Vec<i32> {
    let needle = root.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            let exe = cmdline.split('\0').next()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let zombie = stat.contains(") Z ");
            (!zombie && exe.ends_with("/hulld") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}

#[test]
fn the_api_socket_is_for_its_owner_and_the_hull_group() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hull.sock");
    let hulld = Hulld::start(&dir.path().join("root"), &socket, None);
    assert!(hulld.pings(), "{}", hulld.log());
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "{meta:?}");
    let group = std::ffi::CString::new("hull").unwrap();
    // SAFETY: getgrnam with a valid C string, read at once.
    let hull_gid = unsafe {
        let entry = libc::getgrnam(group.as_ptr());
        (!entry.is_null()).then(|| (*entry).gr_gid)
    };
    // SAFETY: getegid has no preconditions.
    let own_gid = unsafe { libc::getegid() };
    assert_eq!(meta.gid(), hull_gid.unwrap_or(own_gid));
}

#[test]
fn the_open_files_limit_is_raised_to_its_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let hulld = Hulld::start(
        &dir.path().join("root"),
        &dir.path().join("hull.sock"),
        Some((256, 4096)),
    );
    assert!(hulld.pings(), "{}", hulld.log());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", hulld.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
}

#[test]
fn running_out_of_descriptors_does_not_end_hulld() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hull.sock");
    let hulld = Hulld::start(&dir.path().join("root"), &socket, Some((64, 64)));
    assert!(hulld.pings(), "{}", hulld.log());
    // Idle connections until accept fails with EMFILE, and then some.
    let clients: Vec<UnixStream> = (0..150)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    eventually(30, || {
        let log = hulld.log();
        if log.contains("cannot accept an API connection") {
            Ok(())
        } else {
            Err(format!("no failed accept yet: {log}"))
        }
    });
    drop(clients);
    eventually(30, || {
        if let Some(status) = hulld_status(&hulld) {
            return Err(format!("hulld ended ({status}): {}", hulld.log()));
        }
        hulld
            .pings()
            .then_some(())
            .ok_or_else(|| "no answer yet".to_owned())
    });
}

fn hulld_status(hulld: &Hulld) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", hulld.pid())).ok()?;
    // A zombie has ended: its parent, this test, has not reaped it yet.
    stat.contains(") Z ").then(|| "exited".to_owned())
}

/// The files of a container's log, by name, with their sizes.
fn log_files(daemon: &Daemon, id: &str) -> Vec<(String, u64)> {
    let dir = daemon.root.join("containers").join(id);
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-json.log"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn container_logs_rotate_within_max_size_and_max_file() {
    let daemon = loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let id = stdout_of(&daemon.hull(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=10k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done",
    ]))
    .trim()
    .to_owned();
    assert_eq!(stdout_of(&daemon.hull(&["wait", &id])).trim(), "0");
    let files = log_files(&daemon, &id);
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("{id}-json.log"),
            format!("{id}-json.log.1"),
            format!("{id}-json.log.2")
        ]
    );
    for (name, size) in &files {
        assert!(*size <= 10 * 1024, "{name} holds {size} bytes");
    }
    let tail = stdout_of(&daemon.hull(&["logs", "--tail", "3", &id]));
    assert_eq!(tail, "line 2997\nline 2998\nline 2999\n");
    // What remains is the end of the output, whole and in order.
    let all = stdout_of(&daemon.hull(&["logs", &id]));
    let kept: Vec<&str> = all.lines().collect();
    assert!(
        kept.len() > 100 && kept.len() < 3000,
        "{} lines kept",
        kept.len()
    );
    let first: usize = kept[0].strip_prefix("line ").unwrap().parse().unwrap();
    let expected: Vec<String> = (first..3000).map(|i| format!("line {i}")).collect();
    assert_eq!(kept, expected);
    let inspect = stdout_of(&daemon.hull(&["inspect", &id]));
    let inspected: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let log_config = &inspected[0]["HostConfig"]["LogConfig"];
    // As given, as Docker shows it.
    assert_eq!(log_config["Config"]["max-size"], "10k", "{log_config}");
    assert_eq!(log_config["Config"]["max-file"], "3", "{log_config}");
    if common::has_docker_cli() {
        let tail = stdout_of(&daemon.docker(&["logs", "--tail", "2", &id]));
        assert_eq!(tail, "line 2998\nline 2999\n");
    }
    let refused = daemon.hull(&["create", "--log-driver", "syslog", "busybox", "true"]);
    assert_fails(
        &refused,
        125,
        &["logger: no log driver named 'syslog' is registered"],
    );
    // `none` keeps nothing: the output goes to whoever is attached only.
    let out = stdout_of(&daemon.hull(&[
        "run",
        "--name",
        "nolog",
        "--log-driver",
        "none",
        "busybox",
        "echo",
        "hello",
    ]));
    assert_eq!(out, "hello\n");
    let refused = daemon.hull(&["logs", "nolog"]);
    assert_fails(
        &refused,
        1,
        &["configured logging driver does not support reading"],
    );
    let inspect = stdout_of(&daemon.hull(&["inspect", "nolog"]));
    let inspected: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspected[0]["HostConfig"]["LogConfig"]["Type"], "none");
    stdout_of(&daemon.hull(&["rm", "nolog"]));
}

#[test]
fn a_follower_reads_every_line_across_rotations() {
    let daemon = loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let id = stdout_of(&daemon.hull(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=4k",
        "--log-opt",
        "max-file=200",
        "busybox",
        "sh",
        "-c",
        "sleep 2; i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done",
    ]))
    .trim()
    .to_owned();
    // Following from before the first line; the log rotates some 35 times.
    let followed = stdout_of(&daemon.hull(&["logs", "-f", &id]));
    let expected: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    assert!(followed == expected, "{} bytes followed", followed.len());
    assert!(log_files(&daemon, &id).len() > 30);
}

#[test]
fn a_start_past_max_vms_is_refused_until_a_vm_ends() {
    let daemon = loaded_daemon(&[("HULL_MAX_VMS", "1"), ("HULL_NO_TEMPLATES", "1")]);
    let first = stdout_of(&daemon.hull(&["run", "-d", "busybox", "sleep", "600"]))
        .trim()
        .to_owned();
    let second = stdout_of(&daemon.hull(&["create", "busybox", "true"]))
        .trim()
        .to_owned();
    let refused = daemon.hull(&["start", &second]);
    assert_fails(&refused, 1, &["--max-vms 1", "stop or remove containers"]);
    stdout_of(&daemon.hull(&["rm", "-f", &first]));
    // Its VM's share is given back once the VM is gone.
    eventually(60, || {
        let output = daemon.hull(&["start", &second]);
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| text(&output.stderr))
    });
}

#[test]
fn a_start_past_the_memory_overcommit_is_refused() {
    let daemon = loaded_daemon(&[
        ("HULL_MEMORY_OVERCOMMIT", "0.001"),
        ("HULL_NO_TEMPLATES", "1"),
    ]);
    let refused = daemon.hull(&["run", "-d", "busybox", "true"]);
    assert_fails(&refused, 125, &["--memory-overcommit 0.001", "MemTotal"]);
    // The foreground run's own path is admitted alike.
    let refused = daemon.hull(&["run", "--rm", "busybox", "true"]);
    assert_fails(&refused, 125, &["--memory-overcommit 0.001"]);
    // Docker's clients see 503 with the same message.
    let id = stdout_of(&daemon.hull(&["create", "busybox", "true"]))
        .trim()
        .to_owned();
    let (status, body) = request(
        &daemon.socket,
        "POST",
        &format!("/containers/{id}/start"),
        None,
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--memory-overcommit"), "{body}");
}

/// What a container's JSON record says of it.
fn records(root: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(root.join("containers"))
        .unwrap()
        .flatten()
        .map(|entry| {
            let path = entry.path().join("container.json");
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{} has no record ({e})", entry.path().display()));
            serde_json::from_slice(&bytes).unwrap()
        })
        .collect()
}

/// Checks what a hulld started after a crash must have made true.
fn check_recovered(daemon: &Daemon) {
    let root = &daemon.root;
    // Answered once the new hulld has opened its state, as it does before serving.
    let (status, listed) = request(&daemon.socket, "GET", "/containers/json?all=1", None).unwrap();
    let records = records(root);
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c["Id"].as_str().unwrap()).collect();
    for record in &records {
        let id = record["id"].as_str().unwrap();
        assert!(
            record.get("creating").is_none(),
            "a create in flight was left: {record}"
        );
        assert!(ids.contains(&id), "{id} has a record but is not listed");
    }
    for entry in std::fs::read_dir(root.join("networks")).unwrap().flatten() {
        // Beside the networks' records: the FIP, group and service records' folders.
        if entry.path().is_dir() {
            continue;
        }
        let network: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        for holder in network["endpoints"].as_object().unwrap().keys() {
            assert!(
                ids.contains(&holder.as_str()),
                "network {} holds an address for {holder}, which does not exist; hulld said of it:\n{}",
                network["name"],
                daemon
                    .log()
                    .lines()
                    .filter(|l| l.contains(&holder[..12]) || l.contains("hulld listening"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    for entry in std::fs::read_dir(root.join("volumes")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            assert!(
                entry.path().join("volume.json").exists(),
                "volume directory {name} has no record"
            );
        }
    }
    let running: Vec<String> = listed
        .iter()
        .filter(|c| c["State"] == "running")
        .map(|c| format!("c-{}", &c["Id"].as_str().unwrap()[..16]))
        .collect();
    let vms = root.join("vms");
    for entry in std::fs::read_dir(&vms).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with("c-") || running.contains(&name),
            "the VM directory {name} is left, and its container does not run"
        );
    }
    // No QEMU runs for a container that does not, once those killed are gone.
    eventually(10, || {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            let Some((_, rest)) = cmdline.split_once(&format!("{}/", vms.display())) else {
                continue;
            };
            let name = rest.split('/').next().unwrap();
            if !running.iter().any(|r| r == name) {
                return Err(format!(
                    "a VM runs for {name}, whose container does not run"
                ));
            }
        }
        Ok(())
    });
}

/// Creates containers over the API until `stop`, from a thread; starts
/// them too when `start`.
fn keep_creating(
    socket: PathBuf,
    network: String,
    start: bool,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut made = 0;
        while !stop.load(Ordering::Relaxed) {
            let body = serde_json::json!({
                "Image": "busybox",
                "Cmd": ["sleep", "600"],
                "Volumes": {"/data": {}},
                "HostConfig": {"NetworkMode": network},
            });
            let Ok((201, created)) = request(&socket, "POST", "/containers/create", Some(&body))
            else {
                continue;
            };
            made += 1;
            if start {
                let created: serde_json::Value = serde_json::from_str(&created).unwrap();
                let id = created["Id"].as_str().unwrap();
                let _ = request(&socket, "POST", &format!("/containers/{id}/start"), None);
            }
        }
        made
    })
}

/// A pseudo-random duration in `range`, in milliseconds.
fn random_ms(range: std::ops::Range<u64>) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    Duration::from_millis(range.start + nanos % (range.end - range.start))
}

#[test]
fn a_crash_amid_creates_and_starts_leaves_nothing_behind() {
    let netns = NetNs::new("daemon");
    let daemon = Daemon::start_in(Some(&netns.name), &[("HULL_NO_TEMPLATES", "1")]);
    let archive = common::busybox_archive();
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    stdout_of(&daemon.hull(&["network", "create", "crashnet"]));
    for round in 0..6 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = [false, false, true]
            .into_iter()
            .map(|start| {
                keep_creating(
                    daemon.socket.clone(),
                    "crashnet".into(),
                    start,
                    stop.clone(),
                )
            })
            .collect();
        std::thread::sleep(random_ms(300..2500));
        daemon.restart_after_crash_with(&[("HULL_NO_TEMPLATES", "1")], || {
            stop.store(true, Ordering::Relaxed);
            let made: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
            eprintln!("round {round}: {made} containers created before the crash");
        });
        // Containers that ran are taken back in the background: wait for it.
        eventually(120, || {
            let (_, listed) = request(&daemon.socket, "GET", "/containers/json?all=1", None)?;
            let listed: Vec<serde_json::Value> =
                serde_json::from_str(&listed).map_err(|e| e.to_string())?;
            let settling = listed.iter().any(|c| c["State"] == "restarting");
            if settling {
                Err("containers are still restarting".into())
            } else {
                Ok(())
            }
        });
        check_recovered(&daemon);
    }
}
