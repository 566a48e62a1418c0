//! The stock docker CLI against hulld: containers that run, live, stop,
//! start again with their files, restart by policy, and outlive a crash of
//! hulld as records.

mod common;

use std::time::Duration;

use common::{daemon, has_docker_cli, loaded_daemon, stdout_of, text, Daemon};

/// `docker inspect -f FORMAT NAME`, trimmed.
fn inspect(daemon: &Daemon, format: &str, name: &str) -> String {
    stdout_of(&daemon.docker(&["inspect", "-f", format, name]))
        .trim()
        .to_owned()
}

/// Polls `docker inspect` until `format` renders as `expected`.
fn wait_for(daemon: &Daemon, format: &str, name: &str, expected: &str) {
    common::eventually(90, || {
        let now = inspect(daemon, format, name);
        if now == expected {
            return Ok(());
        }
        Err(format!(
            "{name}: {format} stayed {now:?}, expected {expected:?}; hulld log:\n{}",
            daemon.log()
        ))
    });
}

#[test]
fn docker_run_rm_streams_output_stdin_and_exit_codes() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let run = daemon.docker(&[
        "run",
        "--rm",
        "--name",
        "rm-me",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(run.status.code(), Some(3), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "out\n");
    assert!(text(&run.stderr).contains("err\n"), "{}", text(&run.stderr));
    // --rm: the container is gone once docker run returns.
    let gone = daemon.docker(&["inspect", "rm-me"]);
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("No such"),
        "{}",
        text(&gone.stderr)
    );

    let piped = daemon.docker_with_input(
        &[
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "read line; echo got $line; exec cat",
        ],
        b"first\nsecond\n",
    );
    assert_eq!(
        text(&piped.stdout),
        "got first\nsecond\n",
        "{}",
        text(&piped.stderr)
    );
    assert_eq!(piped.status.code(), Some(0));

    let missing = daemon.docker(&[
        "run",
        "--rm",
        "--name",
        "no-command",
        "busybox",
        "no-such-command",
    ]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );
    assert!(
        text(&missing.stderr).contains("executable file not found"),
        "{}",
        text(&missing.stderr)
    );
    // Other tests' containers come and go meanwhile: look for this one by name.
    let leftover = daemon.docker(&["inspect", "no-command"]);
    assert!(
        !leftover.status.success(),
        "a failed --rm run left its container"
    );
}

#[test]
fn docker_run_ulimit_holds_the_process_and_inspect_shows_it() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let script = "ulimit -n; ulimit -Hn; sleep 1000";
    let args = [
        "run",
        "-d",
        "--name",
        "ulimits",
        "--ulimit",
        "nofile=300:600",
    ];
    stdout_of(&daemon.docker(&[&args[..], &["busybox", "sh", "-c", script]].concat()));
    wait_for(daemon, "{{.State.Running}}", "ulimits", "true");
    common::eventually(30, || {
        match stdout_of(&daemon.docker(&["logs", "ulimits"])) {
            limits if limits == "300\n600\n" => Ok(()),
            limits => Err(format!("the limits logged are {limits:?}")),
        }
    });
    let shown = inspect(daemon, "{{json .HostConfig.Ulimits}}", "ulimits");
    assert_eq!(shown, r#"[{"Name":"nofile","Hard":600,"Soft":300}]"#);
    stdout_of(&daemon.docker(&["rm", "-f", "ulimits"]));
}

#[test]
fn docker_run_t_gives_the_process_a_terminal() {
    if !has_docker_cli() {
        return;
    }
    // `script` gives docker the terminal it needs for -t.
    let socket = format!("unix://{}", daemon().socket.display());
    let output = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("docker -H {socket} run --rm -t busybox sh -c 'tty; exit 5'"),
        ])
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script runs");
    assert_eq!(output.status.code(), Some(5), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("/dev/pts/0"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn a_detached_container_logs_execs_stops_and_keeps_its_files() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let script =
        "echo started; echo oops >&2; trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done";
    let run = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    let id = stdout_of(&run).trim().to_owned();
    assert_eq!(id.len(), 64, "docker run -d prints the id: {id:?}");

    let listed = stdout_of(&daemon.docker(&[
        "ps",
        "--format",
        "{{.ID}} {{.Names}} {{.Status}} {{.Labels}}",
    ]));
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("{} web Up", &id[..12])) && l.ends_with("tier=front")),
        "{listed}"
    );
    assert_eq!(
        inspect(
            daemon,
            "{{.State.Status}} {{.Name}} {{.Config.Image}} {{.Config.Hostname}}",
            "web"
        ),
        format!("running /web busybox {}", &id[..12])
    );
    let filtered =
        stdout_of(&daemon.docker(&["ps", "-q", "--no-trunc", "--filter", "label=tier=front"]));
    assert_eq!(filtered.trim(), id);

    // Logs keep the streams apart.
    wait_for_log(daemon, "web", "started");
    let logs = daemon.docker(&["logs", "web"]);
    assert_eq!(text(&logs.stdout), "started\n");
    assert_eq!(text(&logs.stderr), "oops\n");
    // The last line is the stderr one: tail counts both streams, as docker's does.
    let stamped = stdout_of(&daemon.docker(&["logs", "-t", "--tail", "2", "web"]));
    assert!(
        stamped.ends_with(" started\n") && stamped.starts_with("20"),
        "{stamped:?}"
    );

    // Exec: output, exit codes, stdin, the container's environment and files.
    let exec = daemon.docker(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo in $(hostname); echo hi > /root/kept; exit 3",
    ]);
    assert_eq!(exec.status.code(), Some(3), "{}", text(&exec.stderr));
    assert_eq!(text(&exec.stdout), format!("in {}\n", &id[..12]));
    let echoed = daemon.docker_with_input(&["exec", "-i", "web", "cat"], b"through stdin\n");
    assert_eq!(text(&echoed.stdout), "through stdin\n");
    let missing = daemon.docker(&["exec", "web", "no-such-command"]);
    assert_ne!(missing.status.code(), Some(0));

    // Removing a running container needs force.
    let refused = daemon.docker(&["rm", "web"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("Stop the container"),
        "{}",
        text(&refused.stderr)
    );

    // Stop: the trap runs, the exit is recorded, the log has its last word.
    let stop = daemon.docker(&["stop", "-t", "20", "web"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(
        inspect(daemon, "{{.State.Status}} {{.State.ExitCode}}", "web"),
        "exited 0"
    );
    assert!(stdout_of(&daemon.docker(&["logs", "web"])).ends_with("bye\n"));
    let exited = stdout_of(&daemon.docker(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--filter",
        "name=web",
        "--format",
        "{{.Status}}",
    ]));
    assert!(exited.starts_with("Exited (0)"), "{exited}");
    let exec_stopped = daemon.docker(&["exec", "web", "true"]);
    assert!(!exec_stopped.status.success());

    // Start again: the writable layer survived the VM.
    let start = daemon.docker(&["start", "web"]);
    assert!(start.status.success(), "{}", text(&start.stderr));
    let kept = daemon.docker(&["exec", "web", "cat", "/root/kept"]);
    assert_eq!(text(&kept.stdout), "hi\n", "{}", text(&kept.stderr));

    // kill, wait, rename, rm -f.
    let kill = daemon.docker(&["kill", "web"]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    let waited = stdout_of(&daemon.docker(&["wait", "web"]));
    assert_eq!(waited.trim(), "137");
    assert!(daemon.docker(&["rename", "web", "web2"]).status.success());
    assert_eq!(inspect(daemon, "{{.Name}}", &id), "/web2");
    assert!(daemon.docker(&["rm", "-f", "web2"]).status.success());
    assert!(!daemon.docker(&["inspect", &id]).status.success());
}

fn wait_for_log(daemon: &Daemon, name: &str, needle: &str) {
    common::eventually(60, || {
        let logged = text(&daemon.docker(&["logs", name]).stdout).contains(needle);
        logged
            .then_some(())
            .ok_or_else(|| format!("{name} never logged {needle:?}"))
    });
}

#[test]
fn logs_follow_until_the_container_exits() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let id = stdout_of(&daemon.docker(&[
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.3; done",
    ]));
    let followed = daemon.docker(&["logs", "-f", id.trim()]);
    assert_eq!(text(&followed.stdout), "line 1\nline 2\nline 3\n");
    assert_eq!(stdout_of(&daemon.docker(&["wait", id.trim()])), "0\n");
    assert!(daemon.docker(&["rm", id.trim()]).status.success());
}

#[test]
fn restart_policies_restart_failed_containers() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let run = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    wait_for(
        daemon,
        "{{.State.Status}} {{.RestartCount}}",
        "flaky",
        "exited 2",
    );
    assert_eq!(
        inspect(
            daemon,
            "{{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}",
            "flaky"
        ),
        "1 on-failure"
    );
    assert_eq!(
        stdout_of(&daemon.docker(&["logs", "flaky"])),
        "run\nrun\nrun\n"
    );
    assert!(daemon.docker(&["rm", "flaky"]).status.success());
}

#[test]
fn a_restarted_hulld_reattaches_running_containers() {
    if !has_docker_cli() {
        return;
    }
    let daemon = loaded_daemon(&[("HULL_NO_TEMPLATES", "1")]);
    let counter = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.2; done";
    let run = daemon.docker(&[
        "run", "-d", "--name", "counter", "busybox", "sh", "-c", counter,
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let victim = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "victim",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo up; sleep 1000",
    ]);
    assert!(victim.status.success(), "{}", text(&victim.stderr));
    let victim = text(&victim.stdout).trim().to_owned();
    let created = daemon.docker(&["create", "--name", "created", "busybox", "true"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    wait_for_log(&daemon, "counter", "3\n");
    wait_for_log(&daemon, "victim", "up");
    let pid = inspect(&daemon, "{{.State.Pid}}", "counter");
    let exec = daemon.docker(&["exec", "counter", "sh", "-c", "echo kept > /root/file"]);
    assert!(exec.status.success(), "{}", text(&exec.stderr));

    // hulld dies; while it is away, the victim's VM dies too.
    daemon.restart_after_crash_with(&[("HULL_NO_TEMPLATES", "1")], || {
        common::kill_processes_using(&daemon.root.join("vms").join(format!("c-{}", &victim[..16])));
    });

    // The counter's VM was taken back: same process, output still flowing
    // into the same log, exec and files as before.
    wait_for(
        &daemon,
        "{{.State.Status}} {{.State.Pid}}",
        "counter",
        &format!("running {pid}"),
    );
    let before = last_number(&daemon, "counter");
    common::eventually(60, || {
        let now = last_number(&daemon, "counter");
        (now >= before + 3)
            .then_some(())
            .ok_or_else(|| format!("the counter's output stopped at {now}:\n{}", daemon.log()))
    });
    let kept = daemon.docker(&["exec", "counter", "cat", "/root/file"]);
    assert_eq!(text(&kept.stdout), "kept\n", "{}", text(&kept.stderr));
    let stop = daemon.docker(&["stop", "-t", "1", "counter"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert_eq!(inspect(&daemon, "{{.State.Status}}", "counter"), "exited");

    // The victim lost its VM: recorded with the cause, started again by its policy.
    wait_for_log(&daemon, "victim", "up\nup\n");
    wait_for(&daemon, "{{.State.Status}}", "victim", "running");
    assert_eq!(inspect(&daemon, "{{.State.Status}}", "created"), "created");
    assert!(daemon
        .docker(&["rm", "-f", "victim", "counter", "created"])
        .status
        .success());
    assert_eq!(stdout_of(&daemon.docker(&["ps", "-aq"])), "");
}

/// The last number a counting container logged.
fn last_number(daemon: &Daemon, name: &str) -> u64 {
    let logs = text(&daemon.docker(&["logs", "--tail", "1", name]).stdout);
    logs.trim().parse().unwrap_or(0)
}

#[test]
fn docker_events_report_a_containers_life() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let run = daemon.docker(&[
        "run", "--rm", "--name", "evented", "busybox", "sh", "-c", "exit 2",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    let until = (std::time::SystemTime::now() + Duration::from_secs(1))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let events = stdout_of(&daemon.docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=evented",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}",
    ]));
    assert_eq!(
        events,
        "container create evented <no value>\ncontainer start evented <no value>\n\
         container die evented 2\ncontainer destroy evented <no value>\n"
    );
}

#[test]
fn docker_history_lists_the_steps_that_built_an_image() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let history =
        stdout_of(&daemon.docker(&["history", "--format", "{{.CreatedBy}}|{{.Size}}", "busybox"]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 1, "{history}");
    let (created_by, size) = lines[0].split_once('|').unwrap();
    assert_eq!(created_by, "scripts/busybox-image.sh (busybox-static)");
    assert!(size.ends_with("MB") || size.ends_with("kB"), "{size}");
    let missing = daemon.docker(&["history", "no-such-image"]);
    assert!(
        text(&missing.stderr).contains("no such image"),
        "{}",
        text(&missing.stderr)
    );
}
