//! Shared set-up of the end-to-end tests: one hulld per test binary with its
//! own state directory, the guest kernel, and the busybox test image loaded once.

#![allow(dead_code)]

pub mod archives;
pub mod as_qemu;
mod cleanup;
pub mod cloud;
pub mod compose;
pub mod containerd;
pub mod netns;

// Each test binary uses its own part of these.
#[allow(unused_imports)]
pub use cleanup::{kill_processes_using, remove_at_exit};

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository's top directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo put `hull` and `hulld`.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_hull"))
        .parent()
        .expect("binaries live in a directory")
        .to_owned()
}

/// The guest kernel: `HULL_KERNEL`, or the cached build of guest/kernel/build.sh.
pub fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| {
            if let Ok(path) = std::env::var("HULL_KERNEL") {
                return PathBuf::from(path);
            }
            let output = Command::new("bash")
                .arg(repo().join("guest/kernel/build.sh"))
                .stderr(Stdio::inherit())
                .output()
                .expect("guest/kernel/build.sh runs");
            assert!(output.status.success(), "building the guest kernel failed");
            let dir = String::from_utf8(output.stdout).unwrap();
            PathBuf::from(dir.trim()).join("vmlinux")
        })
        .clone()
}

/// A daemon owned by the tests, killed when the test process exits.
pub struct Daemon {
    pub root: PathBuf,
    pub socket: PathBuf,
    /// The network namespace hulld runs in, if not the host's.
    netns: Option<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts hulld with extra environment; waits until it answers.
    pub fn start(env: &[(&str, &str)]) -> Daemon {
        Self::start_in(None, env)
    }

    /// Starts hulld in the network namespace `netns` (made with `ip netns`),
    /// whose bridges, taps and firewall are its own.
    pub fn start_in(netns: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("hull-e2e-")
            .tempdir()
            .expect("temp dir");
        remove_at_exit(dir.path());
        let daemon = Daemon {
            root: dir.path().join("root"),
            socket: dir.path().join("hull.sock"),
            netns: netns.map(str::to_owned),
            _dir: dir,
        };
        daemon.spawn(env);
        daemon
    }

    /// Kills hulld with SIGKILL, as a crash would, and starts a new one on
    /// the same state; its log is appended to.
    pub fn restart_after_crash(&self, env: &[(&str, &str)]) {
        self.restart_after_crash_with(env, || {});
    }

    /// As `restart_after_crash`, doing `meanwhile` while no hulld runs.
    pub fn restart_after_crash_with(&self, env: &[(&str, &str)], meanwhile: impl FnOnce()) {
        let pid = self.pid().expect("hulld wrote its pid");
        // SAFETY: signalling the daemon this harness started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks that the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(Instant::now() < deadline, "hulld {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
        meanwhile();
        self.spawn(env);
    }

    fn spawn(&self, env: &[(&str, &str)]) {
        let dir = self.root.parent().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("hulld.log"))
            .unwrap();
        let hulld = bin_dir().join("hulld");
        assert!(
            hulld.is_file(),
            "{} is missing: build it first (cargo build --workspace; scripts/test.sh does)",
            hulld.display()
        );
        let _ = std::fs::remove_file(&self.socket);
        let mut command = match &self.netns {
            // `ip netns exec` also mounts the namespace's own /sys.
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&hulld);
                // That /sys has no cgroup hierarchy to put QEMU in.
                command.env("HULL_JAIL", "mountns");
                command
            }
            None => Command::new(&hulld),
        };
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--host")
            .arg(format!("unix://{}", self.socket.display()))
            .env("HULL_KERNEL", kernel())
            .env("HULL_TEMPLATE_DIR", dir.join("templates"))
            .env("HULL_SECRETS_KEY", dir.join("secrets.key"))
            .env("HULL_LOG", "info,hull_runtime=debug")
            // No image templates unless a test asks: their builds are VMs,
            // uids and memory that tests counting those did not start.
            .env("HULL_IMAGE_TEMPLATE_MEMORY", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        spawn_owned(command);
        // Poll the socket itself: `hull` would start a daemon of its own.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "hulld did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The VM template's state as `hull info` reports it.
    pub fn template_status(&self) -> String {
        let info = stdout_of(&self.hull(&["info"]));
        info.lines()
            .find_map(|line| line.strip_prefix("VM Template: "))
            .unwrap_or("not started")
            .to_string()
    }

    /// Runs a first container (which starts the template's build) and waits
    /// until the template is ready.
    pub fn wait_for_template(&self) {
        stdout_of(&self.hull(&["run", "--rm", "busybox", "true"]));
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.template_status() != "ready" {
            assert!(
                Instant::now() < deadline,
                "the VM template was not built: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.root.join("hulld.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.parent().unwrap().join("hulld.log")).unwrap_or_default()
    }

    /// A `hull` command aimed at this daemon.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hull"));
        command
            .args(args)
            .env("HULL_HOST", format!("unix://{}", self.socket.display()))
            .env("HULL_ROOT", &self.root)
            .stdin(Stdio::null());
        command
    }

    pub fn hull(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("hull runs")
    }

    /// A command of the stock docker CLI aimed at this daemon.
    pub fn docker_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The stock docker CLI aimed at this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_command(args).output().expect("docker runs")
    }

    /// The docker CLI with `input` on its stdin.
    pub fn docker_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        with_input(self.docker_command(args), input)
    }

    /// The full id of the image `name`, as `hull image inspect` reports it.
    pub fn image_id(&self, name: &str) -> String {
        let output = stdout_of(&self.hull(&["image", "inspect", name]));
        let inspected: serde_json::Value = serde_json::from_str(&output).unwrap();
        inspected[0]["Id"].as_str().unwrap().to_owned()
    }

    /// Runs hull with `input` on its stdin.
    pub fn hull_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        with_input(self.command(args), input)
    }
}

fn with_input(mut command: Command, input: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Whether the docker CLI is installed; tests of it are skipped, saying so, when not.
pub fn has_docker_cli() -> bool {
    let present = Command::new("docker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("skipped: no docker CLI on this machine");
    }
    present
}

/// Spawns a peer that must not outlive the tests and returns its pid.
/// PR_SET_PDEATHSIG follows the spawning thread, so the peer is spawned from
/// a thread that lives as long as it does (and reaps it).
pub fn spawn_owned(mut command: Command) -> u32 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("the peer starts");
        tx.send(child.id()).unwrap();
        let _ = child.wait();
    });
    rx.recv().unwrap()
}

/// A process spawned with [`spawn_owned`], killed when this is dropped:
/// at the end of its test, or when the test panics.
pub struct Owned(pub u32);

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal; the pid is the peer's, reaped by its own thread.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
    }
}

/// A port free on the host's loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Drop for Daemon {
    /// A test's own daemon ends with the test (its VMs die with it).
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling the daemon this harness started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        cleanup::release(self.root.parent().unwrap());
    }
}

/// The daemon shared by the tests of one test binary, with busybox loaded
/// and its VM template ready, so its runs are clones.
pub fn daemon() -> &'static Daemon {
    static DAEMON: OnceLock<Daemon> = OnceLock::new();
    DAEMON.get_or_init(|| {
        let daemon = loaded_daemon(&[]);
        daemon.wait_for_template();
        daemon
    })
}

/// A daemon of the caller's own, with busybox loaded.
pub fn loaded_daemon(env: &[(&str, &str)]) -> Daemon {
    let daemon = Daemon::start(env);
    let archive = busybox_archive();
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    daemon
}

/// Starts `sh -c script` in a busybox container and returns once its first
/// line of output is `first_line`, with the rest of its output to read.
pub fn start_run(
    daemon: &Daemon,
    script: &str,
    first_line: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = daemon
        .command(&["run", "--rm", "busybox", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    if line.trim_end() != first_line {
        // The run ended first: what it said is the cause.
        let _ = child.kill();
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        panic!(
            "the run printed {line:?} before {first_line:?}; its stderr: {stderr}\n{}",
            daemon.log()
        );
    }
    (child, stdout)
}

/// Starts a run that lasts, and returns once its process is running.
pub fn start_long_run(daemon: &Daemon) -> std::process::Child {
    start_run(daemon, "echo started; sleep 600", "started").0
}

/// hull-test-guest (a hostile guest, see its crate), built static as the
/// agent is: what `HULL_AGENT` names in place of the agent.
pub fn test_guest() -> PathBuf {
    static GUEST: OnceLock<PathBuf> = OnceLock::new();
    GUEST
        .get_or_init(|| {
            let output = Command::new("bash")
                .arg(repo().join("scripts/build-agent.sh"))
                .env("HULL_GUEST_PACKAGE", "hull-test-guest")
                .stderr(Stdio::inherit())
                .output()
                .expect("scripts/build-agent.sh runs");
            assert!(output.status.success(), "building hull-test-guest failed");
            PathBuf::from(text(&output.stdout).trim())
        })
        .clone()
}

/// The busybox docker-archive built by scripts/busybox-image.sh.
pub fn busybox_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("hull-e2e-images-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            remove_at_exit(&dir);
            let archive = dir.join("busybox.tar");
            let output = Command::new("sh")
                .arg(repo().join("scripts/busybox-image.sh"))
                .arg(&archive)
                .output()
                .expect("scripts/busybox-image.sh runs");
            assert!(
                output.status.success(),
                "building the busybox image failed: {}",
                text(&output.stderr)
            );
            archive
        })
        .clone()
}

/// The body of `GET /` from `address:port`, once the server answers 200.
pub fn http_get(address: &str, port: u16) -> String {
    let mut body = String::new();
    eventually(60, || {
        let stream = std::net::TcpStream::connect((address, port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let (head, rest) = http_exchange(stream, "GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
        if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
            return Err(format!("not a 200 answer: {head}"));
        }
        body = rest;
        Ok(())
    });
    body
}

/// Sends `request`, a whole HTTP/1.0 request, over `stream` and reads the
/// answer to its end: its head (status line and headers) and its body.
pub fn http_exchange(
    mut stream: impl std::io::Read + Write,
    request: &str,
) -> Result<(String, String), String> {
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {answer:?}"))?;
    Ok((head.to_owned(), body.to_owned()))
}

/// Polls `check` until it passes; after `seconds`, fails with what it last said.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        match check() {
            Ok(()) => return,
            Err(why) => assert!(Instant::now() < deadline, "timed out: {why}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the image store's `tmp/` to be empty, and fails if it stays
/// full: a background rootfs build removes its scratch directory a moment
/// after the image turns ready, and nothing else may be left there.
pub fn store_scratch_empties(daemon: &Daemon) {
    let scratch = daemon.root.join("images/tmp");
    eventually(60, || {
        let left: Vec<_> = std::fs::read_dir(&scratch)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        match left.is_empty() {
            true => Ok(()),
            false => Err(format!("{} still holds {left:?}", scratch.display())),
        }
    });
}

/// The field `name` (`MemTotal`, `VmRSS`) of a `/proc` file that counts
/// in kB (`meminfo`, `status`), in MiB.
pub fn proc_field_mib(text: &str, name: &str) -> u64 {
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text:?}"));
    kib / 1024
}

/// `MemTotal` of a guest's `/proc/meminfo` (or of its `MemTotal` line), in MiB.
pub fn mem_total_mib(meminfo: &str) -> u64 {
    proc_field_mib(meminfo, "MemTotal")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `output` exited with `code` and that its stderr names every
/// one of `needles`; returns the stderr.
pub fn assert_fails(output: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    stderr
}

/// Asserts success and returns stdout.
pub fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use archives::{derived_archive, layered_archive, write_tar};

pub mod registry;

/// A field of `/proc/PID/status`, its tabs made spaces.
pub fn status_field(pid: i32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in the status of {pid}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long a lifecycle command may run before a test calls it hung: far
/// past the agent's deadline plus QMP's grace, under TCG.
pub const HANG: Duration = Duration::from_secs(180);

/// Runs `command`, failing the test if it has not finished within [`HANG`].
pub fn finishes(mut command: Command) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HANG {
            let _ = child.kill();
            panic!("{command:?} still runs after {HANG:?}: it hangs on the guest");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}
