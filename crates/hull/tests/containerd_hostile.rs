//! A hostile guest cannot hold containerd-shim-hull-v2 up or fill the host's
//! disk: the `kill` of a task whose agent went silent halts its sandbox's
//! VM, and a guest that floods its serial console leaves a console log no
//! larger than its cap. The sandboxes boot hull-test-guest in place of the
//! agent, under a containerd of this file's own, driven by `ctr`.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::containerd::{self, pids_matching};
use common::{busybox_archive, eventually, finishes, stdout_of, test_guest, text, HANG};

const RUNTIME: &str = "io.containerd.hull.v2";
const IMAGE: &str = "docker.io/library/busybox:latest";
/// hull_runtime::console::MAX_CONSOLE_BYTES, and how much a guest may
/// write between two looks of the capper (every 2 s).
const CONSOLE_CAP: u64 = 1 << 20;
const CONSOLE_SLACK: u64 = 4 << 20;

/// The tests' containerd, whose shim boots hull-test-guest, cold (a
/// template would be the hostile guest's too); `None` (with the reason
/// printed) when containerd cannot be installed here.
fn containerd() -> Option<&'static containerd::Containerd> {
    static CONTAINERD: OnceLock<Option<containerd::Containerd>> = OnceLock::new();
    CONTAINERD
        .get_or_init(|| {
            if !containerd::available() {
                println!("skipping: containerd and ctr are not installed and scripts/deps.sh could not install them");
                return None;
            }
            let config = |dir: &std::path::Path| {
                format!(
                    "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                     disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                     [grpc]\n  address = \"{d}/containerd.sock\"\n",
                    d = dir.display()
                )
            };
            let shim = format!(
                "agent = \"{}\"\ntemplates = false\n",
                test_guest().display()
            );
            let ctr = containerd::Containerd::start_with_shim(config, None, &shim);
            let archive = busybox_archive();
            stdout_of(&ctr.ctr(&["image", "import", archive.to_str().unwrap()]));
            Some(ctr)
        })
        .as_ref()
}

/// `ctr run -d` of a task whose guest plays `attack`.
fn run_detached(ctr: &containerd::Containerd, id: &str, attack: &str) {
    stdout_of(&ctr.ctr(&["run", "-d", "--runtime", RUNTIME, IMAGE, id, attack]));
}

/// The status column of `ctr task ls` for `id`.
fn status(ctr: &containerd::Containerd, id: &str) -> String {
    let out = stdout_of(&ctr.ctr(&["task", "ls"]));
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&id))
        .and_then(|cols| cols.get(2).map(|s| s.to_string()))
        .unwrap_or_default()
}

fn vm_dir(ctr: &containerd::Containerd, id: &str) -> PathBuf {
    ctr.dir.join("vms").join(format!("default-{id}"))
}

fn qemus_of(ctr: &containerd::Containerd, id: &str) -> Vec<i32> {
    let run_dir = format!("{}/", vm_dir(ctr, id).display());
    pids_matching(&["qemu-system", &run_dir])
}

#[test]
fn kill_of_a_task_whose_agent_is_silent_halts_its_vm_and_the_task_stops() {
    let Some(ctr) = containerd() else { return };
    let id = "silent";
    run_detached(ctr, id, "silent");
    assert_eq!(qemus_of(ctr, id).len(), 1, "one QEMU runs the sandbox");
    let (output, took) = finishes(ctr.command(&["task", "kill", "-s", "KILL", id]));
    stdout_of(&output);
    println!("kill of a silent guest's task took {took:?}");
    eventually(30, || match status(ctr, id).as_str() {
        "STOPPED" => Ok(()),
        other => Err(format!("{id} is {other}")),
    });
    assert_eq!(qemus_of(ctr, id), Vec::<i32>::new(), "the VM was halted");
    let (deleted, took) = finishes(ctr.command(&["task", "rm", id]));
    assert!(
        text(&deleted.stderr).contains("exit code 255"),
        "{}",
        text(&deleted.stderr)
    );
    println!("delete of the halted task took {took:?}");
    stdout_of(&ctr.ctr(&["container", "rm", id]));
}

#[test]
fn a_guest_that_floods_its_console_leaves_a_console_log_under_its_cap() {
    let Some(ctr) = containerd() else { return };
    let id = "console";
    run_detached(ctr, id, "console");
    let console = vm_dir(ctr, id).join("console.log");
    let last_line = || {
        let log = std::fs::read(&console).unwrap_or_default();
        String::from_utf8_lossy(&log)
            .lines()
            .rev()
            .find_map(|l| {
                l.strip_prefix("console flood ")?
                    .get(..10)?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    // Until the guest wrote several caps' worth (lines are 1026 bytes).
    let mut largest = 0;
    let started = Instant::now();
    while last_line() * 1026 < 4 * CONSOLE_CAP {
        assert!(
            started.elapsed() < HANG,
            "the guest wrote {} lines in {HANG:?}",
            last_line()
        );
        largest = largest.max(std::fs::metadata(&console).map_or(0, |m| m.len()));
        assert!(
            largest <= CONSOLE_CAP + CONSOLE_SLACK,
            "the console log reached {largest} bytes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let written = last_line() * 1026;
    println!(
        "the guest wrote {} KiB to its console in {:?}; the log peaked at {} KiB",
        written >> 10,
        started.elapsed(),
        largest >> 10
    );
    stdout_of(&ctr.ctr(&["task", "kill", "-s", "KILL", id]));
    eventually(60, || match status(ctr, id).as_str() {
        "STOPPED" => Ok(()),
        other => Err(format!("{id} is {other}")),
    });
    stdout_of(&ctr.ctr(&["task", "rm", id]));
    stdout_of(&ctr.ctr(&["container", "rm", id]));
}
