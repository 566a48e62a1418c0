//! The named volumes of containers: who uses one, removing unused ones.

use std::sync::Arc;

use hull_vm::Hypervisor;
use tracing::warn;

use hull_proto::Request;

use super::lock;
use super::{Container, ContainerConfig, ContainerError, Containers};
use crate::agent::AgentError;
use crate::volume::snapshot::{Snapshot, SnapshotError};
use crate::volume::{VolumeError, VolumeSource, Volumes};

impl<H: Hypervisor> Containers<H> {
    /// The named volumes.
    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// The containers that mount the named volume.
    pub fn volume_users(&self, name: &str) -> Vec<Arc<Container>> {
        self.list()
            .into_iter()
            .filter(|c| {
                c.config()
                    .volumes
                    .iter()
                    .any(|m| m.source.volume_name() == Some(name))
            })
            .collect()
    }

    /// Removes a volume no container mounts.
    pub fn remove_volume(&self, name: &str) -> Result<(), ContainerError> {
        let users = self.volume_users(name);
        if !users.is_empty() {
            let ids: Vec<String> = users.iter().map(|c| c.id.clone()).collect();
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                containers: ids.join(", "),
            }
            .into());
        }
        Ok(self.volumes.remove(name)?)
    }

    /// Flushes the disks of the container's volumes to stable storage once
    /// its VM is off. The guest synced its filesystems before powering off,
    /// which QEMU passes on as flushes of the file; this keeps the data
    /// durable even where a disk's cache mode drops those flushes.
    pub(super) async fn flush_volumes(&self, container: &Container) {
        let disks: Vec<_> = container
            .config()
            .volumes
            .iter()
            .filter_map(|m| m.source.volume_name())
            .filter_map(|name| self.volumes.get(name).ok())
            .map(|volume| volume.disk)
            .collect();
        if disks.is_empty() {
            return;
        }
        let flushed = tokio::task::spawn_blocking(move || {
            for disk in disks {
                if let Err(err) = crate::volume::flush_disk(&disk) {
                    warn!(error = %err, "cannot flush a volume's disk");
                }
            }
        });
        let _ = flushed.await;
    }

    /// Snapshots a volume. A running container's VM has the disk: the
    /// agent freezes the filesystem on it for the copy, so the copy holds
    /// everything written before and nothing half-written.
    pub async fn snapshot_volume(
        &self,
        volume: &str,
        name: &str,
    ) -> Result<Snapshot, ContainerError> {
        self.volume_users_gone(volume).await;
        let running = self
            .volume_users(volume)
            .into_iter()
            .find(|c| lock(&c.run).is_some());
        let Some(container) = running else {
            return Ok(self.volumes.snapshot(volume, name)?);
        };
        let index = container
            .config()
            .volumes
            .iter()
            .position(|m| m.source.volume_name() == Some(volume))
            .expect("a user of the volume mounts it");
        let serial = volume_serial(index);
        let freeze_failed = |error: AgentError| SnapshotError::Freeze {
            volume: volume.to_owned(),
            container: container.name(),
            message: error.to_string(),
        };
        let agent = container.running_agent()?;
        agent
            .request_done(&Request::FreezeDisk {
                serial: serial.clone(),
            })
            .await
            .map_err(freeze_failed)?;
        let taken = self.volumes.snapshot(volume, name);
        let thawed = agent.request_done(&Request::ThawDisk { serial }).await;
        if let Err(error) = thawed {
            warn!(volume, error = %error, "cannot thaw the volume after its snapshot");
            if taken.is_ok() {
                return Err(freeze_failed(error).into());
            }
        }
        Ok(taken?)
    }

    /// Removes the container's anonymous volumes (`rm -v`).
    pub fn remove_anonymous_volumes(&self, config: &ContainerConfig) {
        for mount in &config.volumes {
            let VolumeSource::Anonymous { name } = &mount.source else {
                continue;
            };
            if self.volume_users(name).is_empty() {
                if let Err(err) = self.volumes.remove(name) {
                    warn!(volume = %name, error = %err, "cannot remove an anonymous volume");
                }
            }
        }
    }
}

/// The SCSI serial of the container's `index`th volume's disk.
pub(super) fn volume_serial(index: usize) -> String {
    format!("hull-vol-{index}")
}
