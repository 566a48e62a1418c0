//! The QEMU `microvm` backend.
//!
//! QEMU opens no host path itself: the host hands it every file and socket
//! as a descriptor (boot files and sockets inherited, disks and migration
//! streams over QMP), starts it as a uid of its own and under QEMU's
//! seccomp sandbox.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{watch, Mutex};
use tracing::{debug, warn};

use crate::jail::{Jail, JailConfig, JailError, QemuFacts};
use crate::qmp::{Qmp, QmpError};
use crate::{Accel, GuestArtifacts, Hypervisor, Vm, VmConfig, VmExit, VmUids};

mod adopt;
mod cmdline;
mod spawn;
mod vm;
pub use adopt::qemu_of;
pub use cmdline::{Passed, SANDBOX};
pub use vm::QemuVm;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("network device slot {0} is not a spare one: spares are 1 to {max}", max = hull_proto::NIC_SLOTS - 1)]
    NicSlot(usize),
    #[error("{binary} not found: install QEMU (apt-get install qemu-system-x86) or set HULL_QEMU")]
    NotFound { binary: String },
    #[error("cannot start {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the VM's {what} socket")]
    Socket {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the QEMU log {}", .path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QEMU failed to start: {0}")]
    EarlyExit(String),
    #[error("QEMU's control connection failed")]
    Qmp(#[from] QmpError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("the VM of {} is gone: {why}", .run_dir.display())]
    Gone { run_dir: PathBuf, why: String },
    #[error("TCG translation cache size '{0}' is not a number of MiB (at least 1) or 'default'")]
    TbSize(String),
    #[error("cannot confine QEMU")]
    Jail(#[from] JailError),
    #[error("cannot open the tap {ifname} for QEMU")]
    Tap {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {} for QEMU: check that it exists and is readable", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the disk image {} for QEMU", .path.display())]
    Disk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the VM state file {}", .path.display())]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot give the VM a uid of its own")]
    Uid(#[from] crate::uids::UidError),
}

/// TCG's translation cache for a small guest, in MiB. QEMU's own default on
/// a 64-bit host is 1 GiB, reserved at once and resident as it fills with
/// translated code, which a busy guest keeps doing. Measured with an S1
/// busybox container: a cold boot fills about 26 MiB, a template clone
/// running an idle `sleep` about 23 MiB. Below that the cache is flushed and
/// code translated again: 16 MiB saved 7 MiB per idle clone but made a
/// clone's `run --rm true` about 1.5-2x slower, 8 MiB 3x, 4 MiB 5x. So the
/// cap sits above a start's needs and bounds what a busy guest can take.
pub const DEFAULT_TCG_TB_SIZE_MIB: u32 = 32;

/// Reads a TCG translation cache size: MiB, or `default` for QEMU's own.
pub fn parse_tb_size(value: &str) -> Result<Option<u32>, QemuError> {
    match value.trim() {
        "default" => Ok(None),
        number => match number.parse::<u32>() {
            Ok(mib) if mib > 0 => Ok(Some(mib)),
            _ => Err(QemuError::TbSize(value.to_string())),
        },
    }
}

/// Boots VMs with `qemu-system-x86_64 -M microvm`.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub binary: String,
    pub accel: Accel,
    pub artifacts: GuestArtifacts,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
    /// TCG's translation cache in MiB (`-accel tcg,tb-size=`); `None` keeps
    /// QEMU's default. KVM has no such cache, so it is ignored there. Device
    /// state does not depend on it: templates made with one size restore
    /// with another.
    pub tcg_tb_size_mib: Option<u32>,
    /// The cgroup and mount namespace each VM's QEMU runs in.
    pub jail: JailConfig,
    /// QEMU's version (major, minor), as `--version` told it.
    pub version: Option<(u32, u32)>,
    /// Each VM's QEMU runs as a uid of its own; `None`: as this
    /// process's own user (which is not root).
    pub confinement: Option<Confinement>,
    /// QEMU's seccomp filter ([`cmdline::SANDBOX`]).
    pub sandbox: bool,
}

/// Where VMs' uids come from.
#[derive(Debug, Clone)]
pub struct Confinement {
    pub uids: VmUids,
    /// The slot files of [`VmUids::allocate`], one directory for every
    /// starter of VMs on the host (hulld, each containerd shim), so that
    /// no two live VMs share a uid.
    pub slots: PathBuf,
}

/// The slot directory without `HULL_VM_UID_DIR`: on tmpfs, as the VMs that
/// hold the slots do not outlive a reboot.
pub const DEFAULT_UID_SLOTS: &str = "/run/hull/vm-uids";

impl Qemu {
    /// The digest of what a VM template saved by this hypervisor depends
    /// on: Hull's version, the device layout, the kernel, the initramfs,
    /// QEMU and the accelerator. Another digest means another template.
    pub fn template_key(&self) -> String {
        use sha2::Digest;
        let kernel = &self.artifacts.kernel;
        let kernel_stamp = fs::metadata(kernel)
            .and_then(|m| m.modified().map(|t| (m.len(), t)))
            .map(|(len, modified)| format!("{len}:{modified:?}"))
            .unwrap_or_default();
        let inputs = format!(
            "hull {} | devices {} | kernel {} {kernel_stamp} | initramfs {} | qemu {} {:?} {}",
            env!("CARGO_PKG_VERSION"),
            crate::DEVICE_LAYOUT,
            kernel.display(),
            self.artifacts.initramfs.display(),
            self.binary,
            self.version,
            self.accel,
        );
        hex::encode(sha2::Sha256::digest(inputs))[..16].to_string()
    }

    /// `HULL_QEMU` names the binary, `HULL_TCG_TB_SIZE` the translation
    /// cache size ([`parse_tb_size`]; [`DEFAULT_TCG_TB_SIZE_MIB`] without it).
    pub fn new(accel: Accel, artifacts: GuestArtifacts) -> Self {
        let tcg_tb_size_mib = match std::env::var("HULL_TCG_TB_SIZE") {
            Ok(value) => parse_tb_size(&value).unwrap_or_else(|err| {
                warn!(error = %err, default = DEFAULT_TCG_TB_SIZE_MIB, "ignoring HULL_TCG_TB_SIZE");
                Some(DEFAULT_TCG_TB_SIZE_MIB)
            }),
            Err(_) => Some(DEFAULT_TCG_TB_SIZE_MIB),
        };
        let binary = std::env::var("HULL_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        // SAFETY: geteuid cannot fail and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        let confinement = root.then(|| Confinement {
            uids: VmUids::DEFAULT,
            slots: std::env::var_os("HULL_VM_UID_DIR")
                .map_or_else(|| DEFAULT_UID_SLOTS.into(), PathBuf::from),
        });
        let qemu = Self {
            version: probe_version(&binary),
            binary,
            accel,
            artifacts,
            extra_cmdline: String::new(),
            tcg_tb_size_mib,
            jail: JailConfig::from_env("hull"),
            confinement,
            sandbox: true,
        };
        let off = qemu.protections_off();
        if !off.is_empty() {
            warn!("not running as root: off for VMs: {}", off.join(", "));
        }
        if !qemu.can_clone() {
            warn!(
                "QEMU {} cannot map a template read-only (8.2 or later can): VMs boot cold, no template clones",
                qemu.version.map_or("of unknown version".into(), |(major, minor)| format!("{major}.{minor}"))
            );
        }
        qemu
    }

    /// The protections that VMs go without because this process is not
    /// root, for the one line that says so at start.
    pub fn protections_off(&self) -> Vec<&'static str> {
        if self.confinement.is_some() {
            return Vec::new();
        }
        let mut off = vec!["each QEMU's own host uid (QEMU runs as this process's user)"];
        if !self.jail.cgroup {
            off.push("each QEMU's cgroup (its memory, pids and CPU limits)");
        }
        if !self.jail.mount_ns {
            off.push("each QEMU's mount namespace (it sees the host's files)");
        }
        off
    }

    /// Whether QEMU maps a clone's template memory read-only
    /// (`memory-backend-file` `readonly=on,rom=off`, QEMU 8.2 and later).
    pub fn read_only_templates(&self) -> bool {
        self.version.is_some_and(|version| version >= (8, 2))
    }

    /// Whether VMs may be template clones: a clone whose QEMU is confined
    /// must not be able to write the template every later clone loads.
    pub fn can_clone(&self) -> bool {
        self.confinement.is_none() || self.read_only_templates()
    }

    /// The range of uids VMs run as, if they run as uids of their own.
    pub fn vm_uids(&self) -> Option<VmUids> {
        self.confinement.as_ref().map(|c| c.uids)
    }
}

/// QEMU's (major, minor) version from `BINARY --version`.
fn probe_version(binary: &str) -> Option<(u32, u32)> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let mut numbers = rest.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

impl Qemu {
    /// The confinement of one VM's QEMU, made before it forks.
    fn jail_for(&self, config: &VmConfig) -> Result<Jail, QemuError> {
        let facts = QemuFacts {
            binary: Path::new(&self.binary),
            accel: self.accel,
            tb_size_mib: self.tcg_tb_size_mib,
        };
        Ok(Jail::prepare(&self.jail, &facts, config)?)
    }
}

/// The paths of a detached VM's sockets and pid file in its directory.
fn detached_paths(run_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        run_dir.join("ctl"),
        run_dir.join("qmp"),
        run_dir.join("qemu.pid"),
    )
}

/// How long a detached QEMU may take to create its sockets.
const SOCKET_WAIT: Duration = Duration::from_secs(20);

/// Connects to a socket QEMU listens on, waiting for QEMU to create it.
async fn connect_when_ready(
    path: &Path,
    what: &'static str,
    exit: &mut watch::Receiver<Option<VmExit>>,
) -> Result<UnixStream, QemuError> {
    let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return Ok(stream),
            Err(source) if tokio::time::Instant::now() >= deadline || exit.borrow().is_some() => {
                return Err(QemuError::Socket { what, source })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

impl Hypervisor for Qemu {
    type Vm = QemuVm;
    type Error = QemuError;

    async fn start(&self, config: VmConfig) -> Result<QemuVm, QemuError> {
        let (ctl_path, qmp_path, pid_path) = detached_paths(&config.run_dir);
        let slot = match &self.confinement {
            Some(confinement) => Some(confinement.uids.allocate(&confinement.slots)?),
            None => None,
        };
        let uid = slot.as_ref().map(|slot| slot.uid);
        let spawn::Inherited {
            host_ends,
            fds,
            owned,
        } = self.open_for(&config, uid)?;
        let args = self.args(&config, &fds);
        debug!(vm = %config.id, ?args, uid, "starting QEMU");
        let inherited: Vec<RawFd> = owned.iter().map(AsRawFd::as_raw_fd).collect();
        let credentials = uid.map(|uid| spawn::Credentials {
            uid,
            caps: spawn::caps_for(&config),
        });

        let log_path = config.run_dir.join("qemu.log");
        // Appended to, so that hulld can cut its start (console::cap).
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .and_then(|log| log.set_len(0).map(|()| log))
            .map_err(|source| QemuError::Log {
                path: log_path.clone(),
                source,
            })?;
        let mut command = tokio::process::Command::new(&self.binary);
        // QEMU gets none of hulld's environment (credentials, proxies,
        // paths): only PATH, to find the binary as hulld found it.
        command.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(!config.detached);
        let detached = config.detached;
        let no_huge_pages = self.accel == Accel::Tcg;
        // --- jail: the VM's cgroup and mount namespace (crate::jail) ---
        let jail = self.jail_for(&config)?;
        // SAFETY: `Jail::enter` makes only system calls on descriptors and
        // C strings that `jail`, moved into the closure, owns.
        unsafe {
            // Runs before the closure below, so before QEMU gives up root.
            command.pre_exec(move || jail.enter());
        }
        // --- end jail ---
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (fcntl, prctl, setsid, the
        // set*id and capset calls) on values captured by value; the
        // descriptors in `owned` outlive the spawn.
        unsafe {
            command.pre_exec(move || {
                spawn::inherit(&inherited)?;
                // QEMU asks for huge pages for its translation cache, so a
                // clone that translated a few hundred KiB holds a whole 2 MiB
                // page; and under TCG guest RAM gains nothing from them, as
                // every access goes through QEMU's own TLB. The setting
                // survives exec; a failure only costs memory.
                if no_huge_pages {
                    libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
                }
                // Its own session: a Ctrl-C meant for hulld spares it.
                if detached && libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(credentials) = credentials {
                    spawn::drop_privileges(credentials)?;
                }
                // If hulld dies, its VMs die with it instead of lingering.
                // After the uid change, which clears it.
                if !detached && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        // QEMU holds its copies now.
        drop(owned);
        let mut child = spawned.map_err(|source| {
            self.jail.remove_cgroup(&config.id);
            // A step before exec (the jail's) may fail first; a missing
            // binary is still the cause to name.
            if source.kind() == io::ErrorKind::NotFound || binary_missing(&self.binary) {
                QemuError::NotFound {
                    binary: self.binary.clone(),
                }
            } else {
                QemuError::Spawn {
                    binary: self.binary.clone(),
                    source,
                }
            }
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        if let Some(slot) = slot {
            // QEMU runs as the uid now, which keeps it taken; the record
            // says so before the slot's lock goes with `slot`.
            if let Err(err) = slot.record(pid) {
                warn!(error = %err, "cannot record the pid of a VM's uid");
            }
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            let exit = match status {
                Ok(status) => match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(code), _) => VmExit::Exited(code),
                    (None, Some(signal)) => VmExit::Killed(signal),
                    (None, None) => VmExit::Exited(-1),
                },
                Err(_) => VmExit::Exited(-1),
            };
            let _ = exit_tx.send(Some(exit));
        });
        self.jail.remove_cgroup_on_exit(&config.id, exit_rx.clone());

        let mut vm = QemuVm {
            id: config.id.clone(),
            pid,
            pidfd: None,
            detached,
            control: None,
            qmp: None,
            exit: exit_rx,
            run_dir: config.run_dir.clone(),
            uid,
        };
        let connected = async {
            match host_ends {
                Some((control, qmp)) => Ok((control, qmp)),
                None => {
                    let uid_path = config.run_dir.join(UID_FILE);
                    for (path, value) in [(&pid_path, Some(pid)), (&uid_path, uid)] {
                        let Some(value) = value else { continue };
                        if let Err(source) = fs::write(path, format!("{value}\n")) {
                            return Err(QemuError::Log {
                                path: path.clone(),
                                source,
                            });
                        }
                    }
                    let mut exit = vm.exit.clone();
                    let qmp = connect_when_ready(&qmp_path, "QMP", &mut exit).await?;
                    let control =
                        connect_when_ready(&ctl_path, "control channel", &mut exit).await?;
                    Ok((control, qmp))
                }
            }
        };
        let (control, qmp_stream) = match connected.await {
            Ok(streams) => streams,
            Err(err) => {
                vm.kill();
                let _ = vm.exit.wait_for(Option::is_some).await;
                return Err(err);
            }
        };
        let mut exited = vm.exit.clone();
        let qmp = tokio::select! {
            qmp = Qmp::handshake(qmp_stream, &config.id) => Some(qmp),
            _ = exited.wait_for(Option::is_some) => None,
        };
        let qmp = match qmp {
            Some(Ok(qmp)) => qmp,
            // Alive but silent: its log says nothing of why.
            Some(Err(err @ QmpError::Deadline { .. })) => {
                vm.kill();
                let _ = vm.exit.wait_for(Option::is_some).await;
                return Err(err.into());
            }
            _ => return Err(vm.early_exit().await),
        };
        vm.control = Some(control);
        vm.qmp = Some(Mutex::new(qmp));
        if let Some(state) = &config.restore_from {
            if let Err(err) = vm.restore(state).await {
                vm.kill();
                return Err(err);
            }
        }
        Ok(vm)
    }

    async fn adopt(&self, id: &str, run_dir: &Path) -> Result<QemuVm, QemuError> {
        let vm = adopt::adopt(id, run_dir).await?;
        self.jail.remove_cgroup_on_exit(id, vm.exit());
        Ok(vm)
    }
}

/// Where a detached VM's directory records the uid its QEMU runs as.
const UID_FILE: &str = "uid";

/// Whether `binary` (a path, or a name looked up in `PATH`) is nowhere.
fn binary_missing(binary: &str) -> bool {
    if binary.contains('/') {
        return !Path::new(binary).exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    !std::env::split_paths(&path).any(|dir| dir.join(binary).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A QEMU of fixed artifacts, for command lines.
    pub(super) fn qemu() -> Qemu {
        let mut qemu = Qemu::new(
            Accel::Tcg,
            GuestArtifacts {
                kernel: "/k/vmlinux".into(),
                initramfs: "/k/initramfs.cpio".into(),
            },
        );
        // Whatever HULL_TCG_TB_SIZE the test runs with.
        qemu.tcg_tb_size_mib = Some(DEFAULT_TCG_TB_SIZE_MIB);
        qemu
    }

    #[test]
    fn translation_cache_sizes_are_mib_or_default() {
        assert_eq!(parse_tb_size("32").unwrap(), Some(32));
        assert_eq!(parse_tb_size(" 8\n").unwrap(), Some(8));
        assert_eq!(parse_tb_size("default").unwrap(), None);
        for bad in ["0", "-1", "16M", ""] {
            let err = parse_tb_size(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn versions_come_from_qemu_s_banner() {
        let banner = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright";
        assert_eq!(parse_version(banner), Some((10, 0)));
        assert_eq!(parse_version("QEMU emulator version 7.2.22"), Some((7, 2)));
        assert_eq!(parse_version("no banner"), None);
        let mut qemu = qemu();
        qemu.confinement = Some(Confinement {
            uids: VmUids::DEFAULT,
            slots: "/run/slots".into(),
        });
        qemu.version = Some((8, 1));
        assert!(
            !qemu.can_clone(),
            "a confined clone needs a read-only backend"
        );
        qemu.version = Some((8, 2));
        assert!(qemu.can_clone());
        qemu.confinement = None;
        qemu.version = Some((7, 2));
        assert!(qemu.can_clone());
        assert!(!qemu.protections_off().is_empty(), "said at start");
    }
}
