//! The named volumes of containers: who uses one, removing unused ones.

use std::sync::Arc;

use hull_vm::Hypervisor;
use tracing::warn;

use super::{Container, ContainerConfig, ContainerError, Containers};
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
