//! `hull run` end to end: real VMs under QEMU, the real agent, real images.

mod common;

use std::io::BufRead;
use std::process::Stdio;

use common::{assert_fails, daemon, stdout_of, text};

#[test]
fn loaded_images_are_listed() {
    let output = daemon().hull(&["images"]);
    let listing = stdout_of(&output);
    let mut lines = listing.lines();
    let header = lines.next().unwrap();
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines
        .find(|l| l.starts_with("busybox "))
        .expect("busybox listed");
    assert!(row.contains("latest"), "{row}");
}

#[test]
fn echo_prints_from_inside_a_vm() {
    let output = daemon().hull(&["run", "--rm", "busybox:latest", "echo", "hello"]);
    assert_eq!(stdout_of(&output), "hello\n");
}

#[test]
fn the_exit_code_of_the_process_is_returned() {
    let output = daemon().hull(&["run", "--rm", "busybox", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7), "{}", text(&output.stderr));
}

#[test]
fn a_process_killed_by_a_signal_exits_128_plus_n() {
    // The container's PID 1 ignores signals sent from inside its namespace (as
    // in docker), but not the kernel's SIGKILL at the CPU-time hard limit.
    let output = daemon().hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "ulimit -t 1; while :; do :; done",
    ]);
    assert_eq!(output.status.code(), Some(137), "{}", text(&output.stderr));
}

#[test]
fn stdin_reaches_the_process() {
    let output = daemon().hull_with_input(&["run", "--rm", "-i", "busybox", "cat"], b"data\n");
    assert_eq!(stdout_of(&output), "data\n");
}

#[test]
fn large_input_and_output_stream_through_flow_control() {
    // More than the 256 KiB window in both directions.
    let input: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let output = daemon().hull_with_input(&["run", "--rm", "-i", "busybox", "cat"], &input);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(output.stdout.len(), input.len());
    assert!(output.stdout == input, "output differs from input");
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let output = daemon().hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(stdout_of(&output), "out\n");
    assert_eq!(text(&output.stderr), "err\n");
}

#[test]
fn env_workdir_and_user_options_apply() {
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "busybox",
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u) $(id -g)",
    ]);
    assert_eq!(stdout_of(&output), "1 /tmp 1000 1000\n");
}

#[test]
fn ulimits_hold_the_process_even_above_the_guests_own_limits() {
    // The guest's hard limit of open files is 4096: only root may raise
    // it, so the limits are set before the process becomes its user.
    let output = daemon().hull(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=5000:8000",
        "--ulimit",
        "core=0",
        "-u",
        "1000:1000",
        "busybox",
        "sh",
        "-c",
        "ulimit -n; ulimit -Hn; ulimit -c",
    ]);
    assert_eq!(stdout_of(&output), "5000\n8000\n0\n");
}

#[test]
fn a_ulimit_the_kernel_refuses_fails_the_run_and_names_it() {
    // Above fs.nr_open (1048576) no process may have that many files.
    let output = daemon().hull(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=2000000",
        "busybox",
        "true",
    ]);
    assert_fails(&output, 125, &["RLIMIT_NOFILE", "2000000"]);
    let output = daemon().hull(&["run", "--rm", "--ulimit", "files=1", "busybox", "true"]);
    assert_fails(&output, 2, &["invalid ulimit type \"files\""]);
}

#[test]
fn a_user_name_is_resolved_from_the_image_passwd() {
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-u",
        "hull",
        "busybox",
        "sh",
        "-c",
        "id -u; echo $HOME",
    ]);
    assert_eq!(stdout_of(&output), "1000\n/home/hull\n");
}

#[test]
fn the_kernel_is_the_guest_kernel_not_the_hosts() {
    let output = daemon().hull(&["run", "--rm", "busybox", "uname", "-r"]);
    let guest = stdout_of(&output);
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(guest.trim(), host.trim());
    assert!(guest.starts_with("6.1."), "{guest}");
}

#[test]
fn the_container_process_is_pid_1_of_its_own_namespace() {
    let output = daemon().hull(&["run", "--rm", "busybox", "sh", "-c", "echo $$; hostname"]);
    let out = stdout_of(&output);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"));
    assert_eq!(
        lines.next().map(str::len),
        Some(12),
        "hostname is the short id: {out}"
    );
}

#[test]
fn the_image_command_runs_when_none_is_given() {
    // busybox's Cmd is `sh`, which reads the script from stdin.
    let output = daemon().hull_with_input(&["run", "--rm", "-i", "busybox"], b"echo from-cmd\n");
    assert_eq!(stdout_of(&output), "from-cmd\n");
}

#[test]
fn entrypoint_override_replaces_the_command() {
    let output = daemon().hull(&["run", "--rm", "--entrypoint", "echo", "busybox", "a", "b"]);
    assert_eq!(stdout_of(&output), "a b\n");
}

#[test]
fn a_missing_command_exits_127_like_docker() {
    let output = daemon().hull(&["run", "--rm", "busybox", "no-such-command"]);
    common::assert_fails(
        &output,
        127,
        &["no-such-command", "executable file not found"],
    );
}

#[test]
fn an_unknown_user_is_named_like_docker_does() {
    let output = daemon().hull(&["run", "--rm", "-u", "nosuchuser", "busybox", "true"]);
    assert_eq!(output.status.code(), Some(125));
    assert_eq!(
        text(&output.stderr),
        "hull: unable to find user nosuchuser: no matching entries in passwd file\n"
    );
}

#[test]
fn a_file_that_is_not_executable_exits_126() {
    let output = daemon().hull(&["run", "--rm", "busybox", "/etc/passwd"]);
    common::assert_fails(&output, 126, &["permission denied"]);
}

#[test]
fn an_unknown_image_is_a_clear_error() {
    // Missing here, it is pulled first; no registry listens on port 1.
    let output = daemon().hull(&["run", "--rm", "127.0.0.1:1/nosuchimage", "true"]);
    common::assert_fails(
        &output,
        125,
        &[
            "Unable to find image '127.0.0.1:1/nosuchimage' locally",
            "Error response from daemon: cannot reach registry 127.0.0.1:1",
        ],
    );
}

#[test]
fn a_tty_gives_the_process_a_terminal() {
    let output = daemon().hull(&["run", "--rm", "-t", "busybox", "tty"]);
    let out = stdout_of(&output);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert!(
        out.ends_with("\r\n"),
        "a terminal translates newlines: {out:?}"
    );
}

#[test]
fn sigterm_to_hull_run_reaches_the_process() {
    let (mut child, mut stdout) = common::start_run(
        daemon(),
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done",
        "ready",
    );
    let mut line = String::new();
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn a_missing_kernel_is_named_in_the_error() {
    let daemon = common::loaded_daemon(&[("HULL_KERNEL", "/nonexistent/vmlinux")]);
    let output = daemon.hull(&["run", "--rm", "busybox", "true"]);
    common::assert_fails(&output, 125, &["/nonexistent/vmlinux"]);
}

#[test]
fn hull_starts_a_daemon_when_none_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let socket = dir.path().join("hull.sock");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hull"))
        .args(["images", "-q"])
        .env("HULL_HOST", format!("unix://{}", socket.display()))
        .env("HULL_ROOT", &root)
        .env("HULL_KERNEL", common::kernel())
        .output()
        .unwrap();
    let pid = std::fs::read_to_string(root.join("hulld.pid")).unwrap_or_default();
    if let Ok(pid) = pid.trim().parse::<i32>() {
        // SAFETY: stopping the daemon this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        pid.trim().parse::<i32>().is_ok(),
        "no hulld.pid was written"
    );
    assert!(text(&output.stdout).trim().is_empty());
    assert!(
        text(&output.stderr).contains("accelerator: "),
        "the accelerator is named once: {}",
        text(&output.stderr)
    );
}

/// An image whose config sets every field `hull run` honours.
fn configured_image() -> &'static str {
    static LOADED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    LOADED.get_or_init(|| {
        let archive = common::derived_archive("configured:v1", |config| {
            config["Entrypoint"] = serde_json::json!(["/bin/sh", "-c"]);
            config["Cmd"] = serde_json::json!(["echo $GREETING $(pwd) $(id -un) $(id -u)"]);
            config["Env"] = serde_json::json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "GREETING=from-image"
            ]);
            config["WorkingDir"] = serde_json::json!("/home/hull");
            config["User"] = serde_json::json!("hull");
        });
        stdout_of(&daemon().hull(&["load", "-i", archive.to_str().unwrap()]));
    });
    "configured:v1"
}

#[test]
fn the_image_config_is_honoured() {
    let output = daemon().hull(&["run", "--rm", configured_image()]);
    assert_eq!(stdout_of(&output), "from-image /home/hull hull 1000\n");
}

#[test]
fn a_command_replaces_the_image_cmd_and_keeps_its_entrypoint() {
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-e",
        "GREETING=overridden",
        configured_image(),
        "echo $GREETING",
    ]);
    assert_eq!(stdout_of(&output), "overridden\n");
}

#[test]
fn options_override_the_image_workdir_and_user() {
    let output = daemon().hull(&[
        "run",
        "--rm",
        "-w",
        "/tmp",
        "-u",
        "root",
        configured_image(),
    ]);
    assert_eq!(stdout_of(&output), "from-image /tmp root 0\n");
}

#[test]
fn an_interactive_tty_carries_ctrl_c_to_the_process() {
    use std::io::{Read, Write};
    // `script` gives hull a real terminal on a pty, as a user's shell would.
    let hull = env!("CARGO_BIN_EXE_hull");
    let inner = format!(
        "{hull} run --rm -it busybox sh -c 'trap \"echo caught-int; exit 5\" INT; echo ready; while true; do sleep 0.1; done'"
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .env("HULL_HOST", format!("unix://{}", daemon().socket.display()))
        .env("HULL_ROOT", &daemon().root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 1024];
    while !seen.contains("ready") {
        let n = stdout.read(&mut buffer).unwrap();
        assert!(n > 0, "the shell ended before it was ready: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    stdout.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    assert!(seen.contains("caught-int"), "{seen:?}");
    assert_eq!(status.code(), Some(5), "{seen:?}");
}

#[test]
fn loading_an_image_builds_its_rootfs_before_any_run() {
    let daemon = common::loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let erofs = daemon.root.join("images/erofs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let built = std::fs::read_dir(&erofs)
            .map(|dir| {
                dir.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "erofs"))
            })
            .unwrap_or(false);
        if built {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no erofs image was built after the load"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
