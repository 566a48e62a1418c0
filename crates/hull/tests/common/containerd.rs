//! A containerd of a test file's own: private socket, root and state in a
//! temporary directory, `containerd-shim-hull-v2` on its PATH, the shim's
//! VMs, cache and templates inside that directory too.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{bin_dir, kernel, remove_at_exit, repo, spawn_owned};

pub fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether containerd and ctr are here, after scripts/deps.sh (which
/// installs them with the other peers) had a chance to install them.
pub fn available() -> bool {
    if !installed("containerd") || !installed("ctr") {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/deps.sh"))
            .status();
    }
    installed("containerd") && installed("ctr")
}

/// A running containerd; it dies with the tests.
pub struct Containerd {
    pub dir: PathBuf,
    _temp: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd with the `config` that `config_for(dir)` gives
    /// (its `[grpc] address` must be `dir/containerd.sock`), in the network
    /// namespace `netns` if one is named, and waits until it answers.
    pub fn start(config_for: impl FnOnce(&Path) -> String, netns: Option<&str>) -> Containerd {
        Self::start_with_shim(config_for, netns, "")
    }

    /// As [`Containerd::start`], with `shim_settings` (TOML lines) added to
    /// the shim's configuration.
    pub fn start_with_shim(
        config_for: impl FnOnce(&Path) -> String,
        netns: Option<&str>,
        shim_settings: &str,
    ) -> Containerd {
        let shim = bin_dir().join("containerd-shim-hull-v2");
        assert!(
            shim.is_file(),
            "{} is missing: build it first (cargo build --workspace; scripts/test.sh does)",
            shim.display()
        );
        let temp = tempfile::Builder::new()
            .prefix("hull-ctr-")
            .tempdir()
            .expect("temp dir");
        remove_at_exit(temp.path());
        let dir = temp.path().to_owned();
        let shim_config = dir.join("shim.toml");
        std::fs::write(
            &shim_config,
            format!(
                "run_root = \"{d}/vms\"\ncache_dir = \"{d}/cache\"\ntemplate_dir = \"{d}/templates\"\n{shim_settings}",
                d = dir.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("config.toml"), config_for(&dir)).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let mut command = match netns {
            Some(netns) => {
                let mut nsenter = Command::new("nsenter");
                nsenter.arg(format!("--net=/var/run/netns/{netns}"));
                nsenter.arg("containerd");
                nsenter
            }
            None => Command::new("containerd"),
        };
        command
            .arg("--config")
            .arg(dir.join("config.toml"))
            // containerd finds `containerd-shim-hull-v2` on its PATH and
            // starts it with its own environment.
            .env("PATH", path_with(&bin_dir()))
            .env("HULL_KERNEL", kernel())
            .env("HULL_SHIM_CONFIG", &shim_config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        spawn_owned(command);
        let containerd = Containerd { dir, _temp: temp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// `ctr` against this containerd, with stdin from /dev/null.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("ctr runs")
    }

    /// The QEMUs of this containerd's sandboxes.
    pub fn qemus(&self) -> Vec<i32> {
        let vms = format!("{}/vms/", self.dir.display());
        pids_matching(&["qemu-system", &vms])
    }
}

/// Processes whose command line holds every one of `needles`.
pub fn pids_matching(needles: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            needles.iter().all(|n| cmdline.contains(n)).then_some(pid)
        })
        .collect()
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}
