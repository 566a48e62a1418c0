//! A running QEMU: its QMP commands, disks plugged and unplugged, state
//! saved and restored, all through descriptors the host opened.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use serde_json::json;
use tokio::net::UnixStream;
use tokio::sync::{watch, Mutex};

use super::{spawn, QemuError};
use crate::qmp::{Qmp, QmpError};
use crate::{DiskConfig, Vm, VmExit};

/// A VM run by one QEMU process.
pub struct QemuVm {
    pub(super) id: String,
    pub(super) pid: u32,
    /// Set for an adopted VM, which is not our child: signals go through it.
    pub(super) pidfd: Option<OwnedFd>,
    pub(super) detached: bool,
    pub(super) control: Option<UnixStream>,
    pub(super) qmp: Option<Mutex<Qmp>>,
    pub(super) exit: watch::Receiver<Option<VmExit>>,
    pub(super) run_dir: PathBuf,
    /// The host uid QEMU runs as; `None` when it runs as its starter's.
    pub(super) uid: Option<u32>,
}

impl QemuVm {
    /// The host uid this VM's QEMU runs as, if one of its own.
    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The QEMU process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Runs a QMP command that takes a descriptor, which QEMU gets a copy of.
    async fn qmp_with_fd(
        &self,
        command: &str,
        arguments: serde_json::Value,
        fd: BorrowedFd<'_>,
    ) -> Result<serde_json::Value, QmpError> {
        let qmp = self.qmp.as_ref().ok_or(QmpError::Closed)?;
        qmp.lock()
            .await
            .execute_with_fd(command, Some(arguments), fd)
            .await
    }

    /// Hands QEMU a descriptor for a `fd:NAME` migration URI. QEMU runs no
    /// program (its sandbox forbids it) and opens no path of its own:
    /// the host opens the state file.
    async fn migration_fd(&self, fd: BorrowedFd<'_>) -> Result<String, QmpError> {
        self.qmp_with_fd("getfd", json!({ "fdname": MIGRATION_FD }), fd)
            .await?;
        Ok(format!("fd:{MIGRATION_FD}"))
    }
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
    pub(super) async fn restore(&self, state: &std::path::Path) -> Result<(), QemuError> {
        self.qmp("migrate-set-capabilities", Some(ignore_shared()))
            .await?;
        let file = spawn::open_read(state).map_err(|source| QemuError::State {
            path: state.to_owned(),
            source,
        })?;
        let uri = self.migration_fd(file.as_fd()).await?;
        drop(file);
        self.qmp("migrate-incoming", Some(json!({ "uri": uri })))
            .await?;
        let restored = async {
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
        };
        within_migration_deadline(restored, || format!("restoring {}", state.display())).await
    }

    /// QEMU quit before it was usable: wait for it, then report what it said.
    pub(super) async fn early_exit(&mut self) -> QemuError {
        self.kill();
        let _ = self.exit.wait_for(Option::is_some).await;
        let log = fs::read_to_string(self.run_dir.join("qemu.log")).unwrap_or_default();
        QemuError::EarlyExit(last_lines(&log, 5))
    }
}

/// The ids of the tap plugged into spare device `slot` and of its port on
/// the slot's hub.
fn plugged_netdevs(slot: usize) -> (String, String) {
    (format!("tap{slot}"), format!("port{slot}"))
}

/// How long an unplugged disk's device may take to go.
const UNPLUG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The QMP id of the `scsi-hd` of the disk whose block node is `disk_id`.
fn disk_device(disk_id: &str) -> String {
    format!("dev-{disk_id}")
}

/// How often migration progress is polled.
const POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// How long a save or restore may take in all. Each QMP command has its
/// own deadline; this one catches a QEMU that answers every poll with
/// "still migrating". Device state is small (guest memory is left out),
/// so a live QEMU is done in seconds even under TCG.
const MIGRATION_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs a migration's polling `work`, failing it past [`MIGRATION_DEADLINE`].
async fn within_migration_deadline(
    work: impl std::future::Future<Output = Result<(), QemuError>>,
    what: impl FnOnce() -> String,
) -> Result<(), QemuError> {
    tokio::time::timeout(MIGRATION_DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            Err(QemuError::Migration(format!(
                "{} did not finish within {}s",
                what(),
                MIGRATION_DEADLINE.as_secs()
            )))
        })
}

/// Guest RAM lives in a file the clone maps itself, so migration leaves it out.
fn ignore_shared() -> serde_json::Value {
    json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": true }] })
}

/// The name under which QEMU holds a migration's descriptor.
const MIGRATION_FD: &str = "migration";

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

    async fn quit(&self) -> Result<(), QemuError> {
        self.qmp("quit", None).await?;
        Ok(())
    }

    async fn attach_disk(&self, disk: &DiskConfig) -> Result<(), QemuError> {
        let file =
            spawn::open_disk(&disk.path, disk.read_only).map_err(|source| QemuError::Disk {
                path: disk.path.clone(),
                source,
            })?;
        let added = self
            .qmp_with_fd("add-fd", json!({ "opaque": disk.id }), file.as_fd())
            .await?;
        drop(file);
        let set = added["fdset-id"].clone();
        let node = self
            .qmp(
                "blockdev-add",
                Some(json!({
                    "driver": "file",
                    "filename": format!("/dev/fdset/{set}"),
                    "node-name": disk.id,
                    "read-only": disk.read_only,
                })),
            )
            .await;
        // The block node holds a duplicate of its own; the fdset's copy
        // goes, so QEMU holds the image once, until the unplug.
        let _ = self
            .qmp("remove-fd", Some(json!({ "fdset-id": set })))
            .await;
        node?;
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

    async fn plug_nic(&self, slot: usize, ifname: &str) -> Result<(), QemuError> {
        if slot == 0 || slot >= hull_proto::NIC_SLOTS {
            return Err(QemuError::NicSlot(slot));
        }
        let tap = spawn::open_tap(ifname, None).map_err(|source| QemuError::Tap {
            ifname: ifname.to_owned(),
            source,
        })?;
        let (tap_id, port) = plugged_netdevs(slot);
        // A tap left from a plug that failed half-way goes first.
        let _ = self.unplug_nic(slot).await;
        self.qmp_with_fd("getfd", json!({ "fdname": tap_id }), tap.as_fd())
            .await?;
        drop(tap);
        let added = self
            .qmp(
                "netdev_add",
                Some(json!({ "type": "tap", "id": tap_id, "fd": tap_id })),
            )
            .await;
        if let Err(err) = added {
            let _ = self.qmp("closefd", Some(json!({ "fdname": tap_id }))).await;
            return Err(err.into());
        }
        // The tap joins the slot's hub, on which the device sits alone.
        let joined = self
            .qmp(
                "netdev_add",
                Some(json!({ "type": "hubport", "id": port, "hubid": slot, "netdev": tap_id })),
            )
            .await;
        if let Err(err) = joined {
            let _ = self.qmp("netdev_del", Some(json!({ "id": tap_id }))).await;
            return Err(err.into());
        }
        Ok(())
    }

    async fn unplug_nic(&self, slot: usize) -> Result<(), QemuError> {
        let (tap_id, port) = plugged_netdevs(slot);
        let mut gone = 0;
        for id in [port, tap_id] {
            match self.qmp("netdev_del", Some(json!({ "id": id }))).await {
                Ok(_) => gone += 1,
                // Not there: never plugged, or already out.
                Err(QmpError::Command { class, .. }) if class == "DeviceNotFound" => {}
                Err(err) => return Err(err.into()),
            }
        }
        tracing::debug!(vm = %self.id, slot, gone, "network device unplugged");
        Ok(())
    }

    async fn set_guest_memory(&self, bytes: u64) -> Result<(), QemuError> {
        self.qmp("balloon", Some(json!({ "value": bytes }))).await?;
        Ok(())
    }

    async fn set_running(&self, running: bool) -> Result<(), QemuError> {
        self.qmp(if running { "cont" } else { "stop" }, None)
            .await?;
        Ok(())
    }

    async fn save_state(&self, path: &std::path::Path) -> Result<(), QemuError> {
        self.qmp("stop", None).await?;
        self.qmp("migrate-set-capabilities", Some(ignore_shared()))
            .await?;
        let file = spawn::create_for(path, None).map_err(|source| QemuError::State {
            path: path.to_owned(),
            source,
        })?;
        let uri = self.migration_fd(file.as_fd()).await?;
        drop(file);
        self.qmp("migrate", Some(json!({ "uri": uri }))).await?;
        let saved = async {
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
        };
        within_migration_deadline(saved, || format!("saving {}", path.display())).await
    }

    fn console_tail(&self) -> String {
        // The end is enough for 20 lines: a guest's console may be large.
        const TAIL: u64 = 16 * 1024;
        let mut console = Vec::new();
        if let Ok(mut file) = fs::File::open(self.run_dir.join("console.log")) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let start = len.saturating_sub(TAIL);
            let _ = io::Seek::seek(&mut file, io::SeekFrom::Start(start)).and_then(|_| {
                io::Read::read_to_end(&mut io::Read::take(&mut file, TAIL), &mut console)
            });
        }
        last_lines(&String::from_utf8_lossy(&console), 20)
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

    #[test]
    fn last_lines_skips_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("", 3), "");
    }
}
