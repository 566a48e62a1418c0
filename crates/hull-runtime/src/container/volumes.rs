//! The volumes of containers: how they reach a VM, who uses one, removing
//! unused ones.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_vm::{DiskConfig, Hypervisor};
use tracing::warn;

use hull_proto::{MountSource, MountSpec, Request};

use super::lock;
use super::{Container, ContainerConfig, ContainerError, Containers};
use crate::agent::AgentError;
use crate::share::Share;
use crate::volume::snapshot::{Snapshot, SnapshotError};
use crate::volume::{VolumeError, VolumeKind, VolumeSource, Volumes};

/// A host directory (a dir volume's, or `-v /host:/path`) that goes into
/// the VM's share once the VM is there.
pub(super) struct ShareBind {
    index: usize,
    source: PathBuf,
    read_only: bool,
}

/// Binds the container's directories into the share of the VM whose
/// directory is `run_dir`; the VM's end takes them out (`remove_vm_dir`).
pub(super) fn bind_into_share(
    run_dir: &Path,
    container: &str,
    binds: &[ShareBind],
) -> Result<(), ContainerError> {
    let share = Share::of(run_dir);
    for bind in binds {
        share
            .mount(container, bind.index, &bind.source, bind.read_only)
            .map_err(crate::run::RunError::from)?;
    }
    Ok(())
}

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

    /// The disks (added to `disks`), directories for the share and mounts
    /// of the container's volumes. A block volume's disk goes to one VM at
    /// a time; directories go to any number.
    pub(super) fn volume_mounts(
        &self,
        container: &Container,
        disks: &mut Vec<DiskConfig>,
    ) -> Result<(Vec<MountSpec>, Vec<ShareBind>), ContainerError> {
        let config = container.config();
        let (mut mounts, mut binds) = (Vec::new(), Vec::new());
        for (index, mount) in config.volumes.iter().enumerate() {
            let mut share = |source: PathBuf| {
                binds.push(ShareBind {
                    index,
                    source,
                    read_only: mount.read_only,
                });
                MountSource::HostSubdir {
                    tag: crate::share::TAG.into(),
                    path: crate::share::relative(&container.id, index),
                }
            };
            let source = match &mount.source {
                VolumeSource::Volume { name } | VolumeSource::Anonymous { name } => {
                    let volume = self.volumes.get(name)?;
                    match volume.kind() {
                        VolumeKind::Dir => share(volume.path),
                        VolumeKind::Block => {
                            self.check_disk_free(container, name)?;
                            let serial = volume_serial(index);
                            disks.push(DiskConfig {
                                id: format!("volume{index}"),
                                path: volume.path,
                                serial: serial.clone(),
                                read_only: false,
                            });
                            MountSource::Disk {
                                serial,
                                fs_type: "ext4".into(),
                            }
                        }
                    }
                }
                VolumeSource::Bind { path } => {
                    // As `docker run -v` does, a missing host directory is made.
                    std::fs::create_dir_all(path).map_err(|source| ContainerError::Io {
                        what: "create the bind-mounted directory",
                        path: path.clone(),
                        source,
                    })?;
                    share(path.clone())
                }
            };
            // A new volume starts with the image's files at its target, as
            // docker's do; a host directory is shown as it is.
            let copy_up = !matches!(mount.source, VolumeSource::Bind { .. });
            mounts.push(MountSpec {
                source,
                target: mount.target.clone(),
                read_only: mount.read_only,
                copy_up,
            });
        }
        Ok((mounts, binds))
    }

    /// Refuses a block volume whose disk another running container has.
    fn check_disk_free(&self, container: &Container, volume: &str) -> Result<(), ContainerError> {
        let busy = self
            .volume_users(volume)
            .into_iter()
            .find(|other| other.id != container.id && lock(&other.run).is_some());
        match busy {
            Some(other) => Err(ContainerError::VolumeBusy {
                volume: volume.to_owned(),
                container: other.name(),
            }),
            None => Ok(()),
        }
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
            .filter(|volume| volume.kind() == VolumeKind::Block)
            .map(|volume| volume.path)
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
