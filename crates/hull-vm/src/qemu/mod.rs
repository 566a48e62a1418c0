//! The QEMU `microvm` backend.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{watch, Mutex};
use tracing::{debug, warn};

use crate::jail::{Jail, JailConfig, JailError, QemuFacts};
use crate::qmp::{Qmp, QmpError};
use crate::{Accel, DiskConfig, GuestArtifacts, Hypervisor, NetBackend, Vm, VmConfig, VmExit};
use serde_json::json;

mod cmdline;
pub use cmdline::Sockets;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
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
    #[error("cannot open the network namespace {}", .path.display())]
    Netns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
}

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
            "hull {} | devices {} | kernel {} {kernel_stamp} | initramfs {} | qemu {} {}",
            env!("CARGO_PKG_VERSION"),
            crate::DEVICE_LAYOUT,
            kernel.display(),
            self.artifacts.initramfs.display(),
            self.binary,
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
        Self {
            binary: std::env::var("HULL_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
            accel,
            artifacts,
            extra_cmdline: String::new(),
            tcg_tb_size_mib,
            jail: JailConfig::from_env("hull"),
        }
    }
}

impl Qemu {
    /// The confinement of one VM's QEMU, made before it forks.
    fn jail_for(&self, config: &VmConfig) -> Result<Jail, QemuError> {
        let facts = QemuFacts {
            binary: Path::new(&self.binary),
            kernel: &self.artifacts.kernel,
            initramfs: &self.artifacts.initramfs,
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

/// A connected socket pair: QEMU inherits one end, the host keeps the other.
/// No path on disk, so nothing to race for, clean up or outgrow `sun_path`.
fn socket_pair(what: &'static str) -> Result<(UnixStream, StdUnixStream), QemuError> {
    let (host, guest) =
        StdUnixStream::pair().map_err(|source| QemuError::Socket { what, source })?;
    host.set_nonblocking(true)
        .map_err(|source| QemuError::Socket { what, source })?;
    let host = UnixStream::from_std(host).map_err(|source| QemuError::Socket { what, source })?;
    Ok((host, guest))
}

impl Hypervisor for Qemu {
    type Vm = QemuVm;
    type Error = QemuError;

    async fn start(&self, config: VmConfig) -> Result<QemuVm, QemuError> {
        let (ctl_path, qmp_path, pid_path) = detached_paths(&config.run_dir);
        let mut pairs = None;
        let sockets = if config.detached {
            for path in [&ctl_path, &qmp_path] {
                let _ = fs::remove_file(path);
            }
            Sockets::Listening {
                control: ctl_path.clone(),
                qmp: qmp_path.clone(),
            }
        } else {
            let (control, control_for_qemu) = socket_pair("control channel")?;
            let (qmp, qmp_for_qemu) = socket_pair("QMP")?;
            let sockets = Sockets::Inherited {
                control: control_for_qemu.as_raw_fd(),
                qmp: qmp_for_qemu.as_raw_fd(),
            };
            pairs = Some(((control, qmp), (control_for_qemu, qmp_for_qemu)));
            sockets
        };
        let inherited: Vec<RawFd> = match &sockets {
            Sockets::Inherited { control, qmp } => vec![*control, *qmp],
            Sockets::Listening { .. } => Vec::new(),
        };
        let args = self.args(&config, &sockets);
        debug!(vm = %config.id, ?args, "starting QEMU");

        let log_path = config.run_dir.join("qemu.log");
        let log = fs::File::create(&log_path).map_err(|source| QemuError::Log {
            path: log_path.clone(),
            source,
        })?;
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(!config.detached);
        let detached = config.detached;
        let no_huge_pages = self.accel == Accel::Tcg;
        let netns = match &config.network {
            NetBackend::Tap {
                netns: Some(path), ..
            } => Some(fs::File::open(path).map_err(|source| QemuError::Netns {
                path: path.clone(),
                source,
            })?),
            _ => None,
        };
        let netns_fd = netns.as_ref().map(AsRawFd::as_raw_fd);
        // --- jail: the VM's cgroup and mount namespace (crate::jail) ---
        let jail = self.jail_for(&config)?;
        // SAFETY: `Jail::enter` makes only system calls on descriptors and
        // C strings that `jail`, moved into the closure, owns.
        unsafe {
            // Runs before the closure below and before QEMU gives up root.
            command.pre_exec(move || jail.enter());
        }
        // --- end jail ---
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (fcntl, prctl, setns, setsid)
        // on integers captured by value; `netns` outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = netns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for &fd in &inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // QEMU asks for huge pages for its translation cache, so a
                // clone that translated a few hundred KiB holds a whole 2 MiB
                // page; and under TCG guest RAM gains nothing from them, as
                // every access goes through QEMU's own TLB. The setting
                // survives exec; a failure only costs memory.
                if no_huge_pages {
                    libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
                }
                if detached {
                    // Its own session: a Ctrl-C meant for hulld spares it.
                    if libc::setsid() == -1 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    // If hulld dies, its VMs die with it instead of lingering.
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| {
            self.jail.remove_cgroup(&config.id);
            if source.kind() == io::ErrorKind::NotFound {
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
        // The child joined the namespace; the host needs it no longer.
        drop(netns);
        let pid = child.id().expect("a just-spawned child has a pid");
        let (host_ends, qemu_ends) = match pairs {
            Some((host, qemu)) => (Some(host), Some(qemu)),
            None => (None, None),
        };
        drop(qemu_ends);

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
        };
        let connected = async {
            match host_ends {
                Some((control, qmp)) => Ok((control, qmp)),
                None => {
                    if let Err(source) = fs::write(&pid_path, format!("{pid}\n")) {
                        return Err(QemuError::Log {
                            path: pid_path.clone(),
                            source,
                        });
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
            qmp = Qmp::handshake(qmp_stream) => qmp.ok(),
            _ = exited.wait_for(Option::is_some) => None,
        };
        let Some(qmp) = qmp else {
            return Err(vm.early_exit().await);
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
        let (ctl_path, qmp_path, pid_path) = detached_paths(run_dir);
        let gone = |why: String| QemuError::Gone {
            run_dir: run_dir.to_owned(),
            why,
        };
        let pid: u32 = fs::read_to_string(&pid_path)
            .map_err(|e| gone(format!("its pid file is unreadable ({e})")))?
            .trim()
            .parse()
            .map_err(|_| gone("its pid file is malformed".into()))?;
        let pidfd =
            pidfd_open(pid).map_err(|e| gone(format!("QEMU (pid {pid}) is not running ({e})")))?;
        // The pid may have been reused: it must be the QEMU serving this directory.
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = ctl_path.display().to_string();
        if !String::from_utf8_lossy(&cmdline).contains(&needle) {
            return Err(gone(format!("pid {pid} is no longer its QEMU")));
        }
        let exit = watch_pidfd(&pidfd).map_err(|e| gone(format!("cannot watch QEMU: {e}")))?;
        self.jail.remove_cgroup_on_exit(id, exit.clone());
        let mut vm = QemuVm {
            id: id.to_owned(),
            pid,
            pidfd: Some(pidfd),
            detached: true,
            control: None,
            qmp: None,
            exit,
            run_dir: run_dir.to_owned(),
        };
        let mut exit = vm.exit.clone();
        let qmp = connect_when_ready(&qmp_path, "QMP", &mut exit).await?;
        vm.qmp = Some(Mutex::new(Qmp::handshake(qmp).await?));
        vm.control = Some(connect_when_ready(&ctl_path, "control channel", &mut exit).await?);
        Ok(vm)
    }
}

/// A pidfd for `pid`: signals and exit notification without pid reuse races.
fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reports the exit of a process that is not our child: its pidfd becomes
/// readable. Its exit status cannot be known, so it is reported as -1.
fn watch_pidfd(pidfd: &OwnedFd) -> io::Result<watch::Receiver<Option<VmExit>>> {
    let owned = pidfd.try_clone()?;
    // SAFETY: the AsyncFd owns this duplicate descriptor, which stays open
    // and unchanged until the AsyncFd is dropped.
    let watched = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)?;
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let _ = watched.readable().await;
        let _ = tx.send(Some(VmExit::Exited(-1)));
    });
    Ok(rx)
}

/// A VM run by one QEMU process.
pub struct QemuVm {
    id: String,
    pid: u32,
    /// Set for an adopted VM, which is not our child: signals go through it.
    pidfd: Option<OwnedFd>,
    detached: bool,
    control: Option<UnixStream>,
    qmp: Option<Mutex<Qmp>>,
    exit: watch::Receiver<Option<VmExit>>,
    run_dir: PathBuf,
}

impl QemuVm {
    /// Runs a QMP command against this VM.
    pub async fn qmp(
        &self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, QmpError> {
        let qmp = self.qmp.as_ref().ok_or(QmpError::Closed)?;
        qmp.lock().await.execute(command, arguments).await
    }

    /// Loads device state saved by [`Vm::save_state`] and runs the VM. Memory
    /// comes from the memory file, which migration skips (`x-ignore-shared`).
    async fn restore(&self, state: &std::path::Path) -> Result<(), QemuError> {
        self.qmp("migrate-set-capabilities", Some(ignore_shared()))
            .await?;
        let uri = format!("exec:cat {}", shell_quote(state));
        self.qmp("migrate-incoming", Some(json!({ "uri": uri })))
            .await?;
        loop {
            let status = self.qmp("query-status", None).await?;
            match status["status"].as_str() {
                Some("inmigrate") => tokio::time::sleep(POLL).await,
                Some("running") => return Ok(()),
                Some("paused" | "prelaunch" | "postmigrate") => {
                    self.qmp("cont", None).await?;
                    return Ok(());
                }
                other => {
                    return Err(QemuError::Migration(format!(
                        "restoring {} left the VM {}",
                        state.display(),
                        other.unwrap_or("in an unknown state")
                    )))
                }
            }
        }
    }

    /// QEMU quit before it was usable: wait for it, then report what it said.
    async fn early_exit(&mut self) -> QemuError {
        self.kill();
        let _ = self.exit.wait_for(Option::is_some).await;
        let log = fs::read_to_string(self.run_dir.join("qemu.log")).unwrap_or_default();
        QemuError::EarlyExit(last_lines(&log, 5))
    }
}

/// How long an unplugged disk's device may take to go.
const UNPLUG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The QMP id of the `scsi-hd` of the disk whose block node is `disk_id`.
fn disk_device(disk_id: &str) -> String {
    format!("dev-{disk_id}")
}

/// How often migration progress is polled.
const POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Guest RAM lives in a file the clone maps itself, so migration leaves it out.
fn ignore_shared() -> serde_json::Value {
    json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })
}

/// QEMU runs `exec:` migration URIs through `/bin/sh -c`.
fn shell_quote(path: &std::path::Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

impl Vm for QemuVm {
    type Error = QemuError;

    fn id(&self) -> &str {
        &self.id
    }

    fn take_control_channel(&mut self) -> Option<UnixStream> {
        self.control.take()
    }

    fn exit(&self) -> watch::Receiver<Option<VmExit>> {
        self.exit.clone()
    }

    fn kill(&self) {
        if self.exit.borrow().is_some() {
            return;
        }
        match &self.pidfd {
            Some(pidfd) => {
                // SAFETY: pidfd_send_signal on a descriptor we own, with no
                // siginfo; the pidfd names this very process even if its pid
                // were reused.
                unsafe {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        pidfd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    )
                };
            }
            None => {
                let pid = libc::pid_t::try_from(self.pid).expect("pids fit pid_t");
                // SAFETY: kill(2) on the pid of our own child, which is not yet
                // reaped (its waiter has not reported an exit), so it cannot be reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    fn is_detached(&self) -> bool {
        self.detached
    }

    async fn attach_disk(&self, disk: &DiskConfig) -> Result<(), QemuError> {
        self.qmp(
            "blockdev-add",
            Some(json!({
                "driver": "file",
                "filename": disk.path,
                "node-name": disk.id,
                "read-only": disk.read_only,
            })),
        )
        .await?;
        self.qmp(
            "device_add",
            Some(json!({
                "driver": "scsi-hd",
                "bus": "scsi0.0",
                "drive": disk.id,
                "serial": disk.serial,
                "id": disk_device(&disk.id),
            })),
        )
        .await?;
        Ok(())
    }

    async fn detach_disk(&self, id: &str) -> Result<(), QemuError> {
        let device = disk_device(id);
        // One lock for the three steps: the wait reads QMP's messages,
        // so no other command may run until the event came.
        let mut qmp = self.qmp.as_ref().ok_or(QmpError::Closed)?.lock().await;
        qmp.execute("device_del", Some(json!({ "id": device })))
            .await?;
        // The guest learns of the unplug, and QEMU drops the device, which
        // must be gone before its block node can be.
        qmp.wait_event("DEVICE_DELETED", UNPLUG_TIMEOUT, |data| {
            data["device"] == device.as_str()
        })
        .await?;
        qmp.execute("blockdev-del", Some(json!({ "node-name": id })))
            .await?;
        Ok(())
    }

    async fn set_guest_memory(&self, bytes: u64) -> Result<(), QemuError> {
        self.qmp("balloon", Some(json!({ "value": bytes }))).await?;
        Ok(())
    }

    async fn save_state(&self, path: &std::path::Path) -> Result<(), QemuError> {
        self.qmp("stop", None).await?;
        self.qmp("migrate-set-capabilities", Some(ignore_shared()))
            .await?;
        let uri = format!("exec:cat > {}", shell_quote(path));
        self.qmp("migrate", Some(json!({ "uri": uri }))).await?;
        loop {
            let migration = self.qmp("query-migrate", None).await?;
            match migration["status"].as_str() {
                Some("completed") => return Ok(()),
                Some("failed" | "cancelled") => {
                    let reason = migration["error-desc"]
                        .as_str()
                        .unwrap_or("no reason given");
                    return Err(QemuError::Migration(format!(
                        "saving {} failed: {reason}",
                        path.display()
                    )));
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn console_tail(&self) -> String {
        let console = fs::read_to_string(self.run_dir.join("console.log")).unwrap_or_default();
        last_lines(&console, 20)
    }
}

impl Drop for QemuVm {
    /// A detached VM outlives its handle, as it outlives hulld.
    fn drop(&mut self) {
        if !self.detached {
            self.kill();
        }
    }
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
    fn migration_paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/state")), "'/a b/state'");
        assert_eq!(shell_quote(Path::new("/it's")), r"'/it'\''s'");
    }

    #[test]
    fn last_lines_skips_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("", 3), "");
    }
}
