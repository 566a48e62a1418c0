//! docker-py, the Docker SDK for Python, against hulld: run, detached
//! containers, logs, exec, commit, export, import, stop, wait and
//! remove, unchanged.

mod common;

use common::{daemon, text};

#[test]
fn docker_py_drives_containers() {
    let has_docker_py = std::process::Command::new("python3")
        .args(["-c", "import docker"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_docker_py {
        eprintln!("skipped: no docker-py (python3-docker) on this machine");
        return;
    }
    let daemon = daemon();
    let script = common::repo().join("crates/hull/tests/clients/docker_py.py");
    let output = std::process::Command::new("python3")
        .arg(script)
        .env(
            "HULL_DOCKER_HOST",
            format!("unix://{}", daemon.socket.display()),
        )
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let lines: Vec<String> = text(&output.stdout).lines().map(str::to_owned).collect();
    assert_eq!(
        lines,
        [
            "api 1.43",
            "run b'hello\\n'",
            "status running py-web docker-py",
            "logs b'started\\n'",
            "exec 4 b'in exec\\n'",
            "list ['py-web']",
            "commit b'py\\n'",
            "export True",
            "import b'py\\n'",
            "stopped exited 137",
            "wait 137",
            "removed True",
            "failed 3",
        ]
    );
}
