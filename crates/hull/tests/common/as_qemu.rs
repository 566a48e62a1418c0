//! Acting as a confined QEMU would: in its mount namespace, as its uid and
//! with its capabilities, to show what a compromised QEMU could not do.

use std::process::Command;

use super::status_field;

/// The capabilities Hull leaves QEMU, by number, as setpriv names them.
const CAPS: [(u32, &str); 5] = [
    (0, "chown"),
    (1, "dac_override"),
    (3, "fowner"),
    (4, "fsetid"),
    (10, "net_bind_service"),
];

/// What `sh -c script` prints (stdout and stderr) when it runs in the mount
/// namespace of the process `pid`, as its real uid and gid with no
/// supplementary groups, and with its effective capabilities (ambient, so
/// that they hold in the shell).
pub fn run_as(pid: i32, script: &str) -> String {
    let uid = status_field(pid, "Uid");
    let uid = uid.split_whitespace().next().unwrap();
    let mask = u64::from_str_radix(&status_field(pid, "CapEff"), 16).unwrap();
    let caps: Vec<String> = CAPS
        .iter()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| format!("+{name}"))
        .collect();
    assert_eq!(
        caps.len() as u32,
        mask.count_ones(),
        "QEMU has capabilities this test does not know: {mask:#x}"
    );
    let caps = if caps.is_empty() {
        "-all".to_owned()
    } else {
        caps.join(",")
    };
    let output = Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg("-m")
        .args(["--", "/usr/bin/setpriv", "--reuid", uid, "--regid", uid])
        .args([
            "--clear-groups",
            "--inh-caps",
            &caps,
            "--ambient-caps",
            &caps,
        ])
        .args(["--", "/usr/bin/sh", "-c", script])
        .output()
        .expect("nsenter runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
