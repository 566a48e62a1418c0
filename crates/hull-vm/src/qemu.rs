//! The QEMU `microvm` backend.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::net::UnixStream;
use tokio::sync::{watch, Mutex};
use tracing::debug;

use crate::qmp::{Qmp, QmpError};
use crate::{Accel, DiskConfig, GuestArtifacts, Hypervisor, Vm, VmConfig, VmExit};
use serde_json::json;

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
}

/// Boots VMs with `qemu-system-x86_64 -M microvm`.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub binary: String,
    pub accel: Accel,
    pub artifacts: GuestArtifacts,
    /// Appended to the kernel command line.
    pub extra_cmdline: String,
}

impl Qemu {
    pub fn new(accel: Accel, artifacts: GuestArtifacts) -> Self {
        Self {
            binary: std::env::var("HULL_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
            accel,
            artifacts,
            extra_cmdline: String::new(),
        }
    }

    /// The command line for one VM whose sockets QEMU inherits as `control_fd` and `qmp_fd`.
    pub fn args(&self, config: &VmConfig, control_fd: RawFd, qmp_fd: RawFd) -> Vec<String> {
        let console = config.run_dir.join("console.log");
        // Without ACPI there is no poweroff: the agent reboots instead, which a
        // triple fault (`reboot=t`) turns into a QEMU exit under `-no-reboot`.
        let mut cmdline = String::from("console=ttyS0 quiet panic=-1 reboot=t");
        if !self.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.extra_cmdline);
        }
        // No ACPI: the kernel learns the virtio-mmio devices from the command
        // line QEMU appends, and boots faster without the ACPI tables.
        let mut machine = String::from("microvm,x-option-roms=off,isa-serial=on,rtc=on,acpi=off");
        if config.memory_file.is_some() {
            machine.push_str(",memory-backend=mem");
        }
        let mut args: Vec<String> = [
            "-M",
            &machine,
            "-accel",
            self.accel.qemu_name(),
            "-cpu",
            self.accel.cpu_model(),
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            // A guest reboot or panic ends the VM rather than looping.
            "-no-reboot",
            // Modern virtio-mmio: fewer exits than the legacy register layout.
            "-global",
            "virtio-mmio.force-legacy=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "-smp".into(),
            config.vcpus.to_string(),
            "-m".into(),
            format!("{}M", config.memory_mib),
            "-kernel".into(),
            self.artifacts.kernel.display().to_string(),
            "-initrd".into(),
            self.artifacts.initramfs.display().to_string(),
            "-append".into(),
            cmdline,
            "-serial".into(),
            format!("file:{}", console.display()),
            "-chardev".into(),
            format!("socket,id=qmp,fd={qmp_fd}"),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!("socket,id=ctl,fd={control_fd}"),
            "-device".into(),
            format!(
                "virtserialport,chardev=ctl,name={}",
                hull_proto::CONTROL_PORT_NAME
            ),
            "-device".into(),
            "virtio-rng-device".into(),
            "-device".into(),
            "virtio-scsi-device,id=scsi0".into(),
        ]);
        if let Some(memory) = &config.memory_file {
            args.extend([
                "-object".into(),
                format!(
                    "memory-backend-file,id=mem,size={}M,mem-path={},share={}",
                    config.memory_mib,
                    memory.path.display(),
                    if memory.shared { "on" } else { "off" }
                ),
            ]);
        }
        if config.restore_from.is_some() {
            args.extend(["-incoming".into(), "defer".into()]);
        }
        for disk in &config.disks {
            args.extend([
                "-blockdev".into(),
                format!(
                    "driver=file,filename={},node-name={},read-only={},cache.direct=off",
                    disk.path.display(),
                    disk.id,
                    if disk.read_only { "on" } else { "off" }
                ),
                "-device".into(),
                format!(
                    "scsi-hd,bus=scsi0.0,drive={},serial={}",
                    disk.id, disk.serial
                ),
            ]);
        }
        args
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
        let (control, control_for_qemu) = socket_pair("control channel")?;
        let (qmp_stream, qmp_for_qemu) = socket_pair("QMP")?;
        let inherited = [control_for_qemu.as_raw_fd(), qmp_for_qemu.as_raw_fd()];
        let args = self.args(&config, inherited[0], inherited[1]);
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
            .kill_on_drop(true);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (fcntl, prctl) on integers
        // captured by value.
        unsafe {
            command.pre_exec(move || {
                for fd in inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // If hulld dies, its VMs die with it instead of lingering.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| {
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
        let pid = child.id().expect("a just-spawned child has a pid");
        drop((control_for_qemu, qmp_for_qemu));

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

        let mut vm = QemuVm {
            id: config.id.clone(),
            pid,
            control: None,
            qmp: None,
            exit: exit_rx,
            run_dir: config.run_dir.clone(),
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
}

/// A VM run by one QEMU process.
pub struct QemuVm {
    id: String,
    pid: u32,
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
        if self.exit.borrow().is_none() {
            let pid = libc::pid_t::try_from(self.pid).expect("pids fit pid_t");
            // SAFETY: kill(2) on the pid of our own child, which is not yet
            // reaped (its waiter has not reported an exit), so it cannot be reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
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
                "id": format!("dev-{}", disk.id),
            })),
        )
        .await?;
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
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn qemu() -> Qemu {
        Qemu::new(
            Accel::Tcg,
            GuestArtifacts {
                kernel: "/k/vmlinux".into(),
                initramfs: "/k/initramfs.cpio".into(),
            },
        )
    }

    #[test]
    fn command_line_wires_sockets_disks_and_accelerator() {
        let config = VmConfig {
            id: "vm1".into(),
            run_dir: "/run/vm1".into(),
            vcpus: 2,
            memory_mib: 128,
            disks: vec![DiskConfig {
                id: "rootfs".into(),
                path: "/images/a.erofs".into(),
                serial: "hull-rootfs".into(),
                read_only: true,
            }],
            memory_file: None,
            restore_from: None,
        };
        let args = qemu().args(&config, 7, 8).join(" ");
        assert!(args.contains("-accel tcg -cpu max"));
        assert!(args.contains("-smp 2 -m 128M"));
        assert!(args.contains("socket,id=ctl,fd=7 "));
        assert!(args.contains("socket,id=qmp,fd=8 "));
        assert!(args.contains("virtserialport,chardev=ctl,name=hull.ctl"));
        assert!(args.contains("filename=/images/a.erofs,node-name=rootfs,read-only=on"));
        assert!(args.contains("scsi-hd,bus=scsi0.0,drive=rootfs,serial=hull-rootfs"));
        assert!(args.contains("file:/run/vm1/console.log"));
    }

    #[test]
    fn clones_map_the_template_memory_privately_and_wait_for_state() {
        let config = VmConfig {
            id: "clone".into(),
            run_dir: "/run/clone".into(),
            vcpus: 1,
            memory_mib: 256,
            disks: vec![],
            memory_file: Some(crate::MemoryFile {
                path: "/dev/shm/t/memory".into(),
                shared: false,
            }),
            restore_from: Some("/dev/shm/t/state".into()),
        };
        let args = qemu().args(&config, 7, 8).join(" ");
        assert!(args.contains("acpi=off,memory-backend=mem"));
        assert!(args
            .contains("memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/t/memory,share=off"));
        assert!(args.contains("-incoming defer"));
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
