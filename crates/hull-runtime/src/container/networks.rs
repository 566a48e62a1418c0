//! Containers on user-defined networks: joining and leaving one, and the
//! names docker shows for a container's network.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hull_net::{NetworkError, NetworkMode, NetworkRecord, Networks};
use hull_vm::Hypervisor;

use super::{lock, Container, ContainerError, Containers};

/// How a container joins a network, besides which one.
#[derive(Debug, Clone, Default)]
pub struct EndpointOptions {
    /// Other names it answers to on the network.
    pub aliases: Vec<String>,
    /// The address it asks for; otherwise the next free one.
    pub address: Option<Ipv4Addr>,
}

impl<H: Hypervisor> Containers<H> {
    pub fn networks(&self) -> &Networks {
        &self.networks
    }

    /// Docker's name for the container's network: `bridge` for the
    /// default one, the network's name for a user-defined one.
    pub fn network_name(&self, mode: &NetworkMode) -> String {
        match mode {
            NetworkMode::User => "bridge".into(),
            NetworkMode::None => "none".into(),
            NetworkMode::Network(id) => self
                .networks
                .get(id)
                .map_or_else(|_| id.clone(), |n| n.name),
        }
    }

    /// The container's user-defined network, if it is on one.
    pub fn network_of(&self, container: &Container) -> Option<NetworkRecord> {
        match container.config().network {
            NetworkMode::Network(id) => self.networks.get(&id).ok(),
            _ => None,
        }
    }

    /// Puts a stopped container on a network. A VM has one network
    /// interface, so this moves it from the default network or from none;
    /// a container on another user-defined network must leave it first.
    pub async fn connect(
        &self,
        network: &str,
        container: &Arc<Container>,
        options: EndpointOptions,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let record = self.networks.get(network)?;
        let current = container.config().network;
        if let NetworkMode::Network(id) = &current {
            let on = self.network_name(&current);
            return Err(if *id == record.id {
                ContainerError::Network(NetworkError::AlreadyConnected {
                    container: container.name(),
                    network: on,
                })
            } else {
                ContainerError::Network(NetworkError::OneNetwork {
                    container: container.name(),
                    network: on,
                })
            });
        }
        if container.state().running() {
            return Err(NetworkError::Running(container.name()).into());
        }
        self.networks.connect(
            &record.id,
            &container.id,
            &container.name(),
            options.aliases,
            options.address,
        )?;
        let saved = {
            let mut saved = lock(&container.record);
            saved.config.network = NetworkMode::Network(record.id.clone());
            saved.save(&container.dir)
        };
        if let Err(err) = saved {
            let _ = self.networks.disconnect(&record.id, &container.id);
            return Err(err.into());
        }
        self.emit(container, "connect", &[("network", record.name)]);
        Ok(())
    }

    /// Takes a stopped container off its network; it has none after.
    pub async fn disconnect(
        &self,
        network: &str,
        container: &Arc<Container>,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let record = self.networks.get(network)?;
        if container.config().network != NetworkMode::Network(record.id.clone()) {
            return Err(NetworkError::NotConnected(record.name).into());
        }
        if container.state().running() {
            return Err(NetworkError::Running(container.name()).into());
        }
        {
            let mut saved = lock(&container.record);
            saved.config.network = NetworkMode::None;
            saved.save(&container.dir)?;
        }
        self.networks.disconnect(&record.id, &container.id)?;
        self.emit(container, "disconnect", &[("network", record.name)]);
        Ok(())
    }
}
