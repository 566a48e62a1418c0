//! Containers on user-defined networks: joining and leaving them, and the
//! names docker shows for a container's networks.
//!
//! A container's first network rides its VM's first network device, with
//! the default route and the published ports. Networks it joins besides
//! (`network connect`, or a compose service on several) are secondary:
//! each is plugged into a spare device ([`hull_proto::NIC_SLOTS`]) when
//! the VM starts, or at once when the container is running.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hull_net::{NetworkError, NetworkMode, NetworkRecord, Networks};
use hull_proto::{InterfaceSpec, Request, NIC_SLOTS};
use hull_vm::{Hypervisor, Vm};
use tracing::{info, warn};

use super::supervise::{RunHandle, VmRequest};
use super::{lock, Container, ContainerError, Containers};
use crate::agent::AgentClient;
use crate::run::RunError;

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

    /// The container's first user-defined network, if it is on one.
    pub fn network_of(&self, container: &Container) -> Option<NetworkRecord> {
        match container.config().network {
            NetworkMode::Network(id) => self.networks.get(&id).ok(),
            _ => None,
        }
    }

    /// The networks the container joined besides its first, by name.
    pub fn secondary_networks(&self, container_id: &str) -> Vec<NetworkRecord> {
        let mut networks: Vec<NetworkRecord> = self
            .networks
            .list()
            .into_iter()
            .filter(|n| n.endpoints.get(container_id).is_some_and(|e| e.secondary))
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        networks
    }

    /// Puts a container on a network. A stopped container on the default
    /// network or none moves to it; otherwise it joins as a secondary
    /// network, plugged into its VM at once if it runs.
    pub async fn connect(
        &self,
        network: &str,
        container: &Arc<Container>,
        options: EndpointOptions,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let record = self.networks.get(network)?;
        if let Some(membership) = container.config().pod {
            return Err(ContainerError::PodNetwork {
                container: container.name(),
                pod: membership.pod,
            });
        }
        if record.endpoints.contains_key(&container.id) {
            return Err(NetworkError::AlreadyConnected {
                container: container.name(),
                network: record.name,
            }
            .into());
        }
        let running = container.state().running();
        let mode = container.config().network;
        let first = !running && !matches!(mode, NetworkMode::Network(_));
        if !first {
            if mode == NetworkMode::None {
                return Err(NetworkError::Unsupported("none joins no other network".into()).into());
            }
            if let Some(why) = self.networks.bridges_unavailable() {
                return Err(NetworkError::NoBridges {
                    network: record.name,
                    why: why.to_owned(),
                }
                .into());
            }
            let joined = self.secondary_networks(&container.id).len();
            if joined + 1 >= NIC_SLOTS {
                return Err(NetworkError::TooManyNetworks {
                    container: container.name(),
                    max: NIC_SLOTS,
                }
                .into());
            }
            if running {
                container.check_not_paused()?;
            }
        }
        self.networks.connect(
            &record.id,
            &container.id,
            &container.name(),
            options.aliases,
            options.address,
            !first,
        )?;
        let joined = if first {
            let mut saved = lock(&container.record);
            saved.config.network = NetworkMode::Network(record.id.clone());
            saved.save(&container.dir).map_err(ContainerError::from)
        } else if running {
            self.plug_live(container, &record).await
        } else {
            Ok(())
        };
        if let Err(err) = joined {
            let _ = self.networks.disconnect(&record.id, &container.id);
            return Err(err);
        }
        info!(container = %container.id, network = %record.name, first, running, "network connected");
        self.emit(container, "connect", &[("network", record.name)]);
        Ok(())
    }

    /// Takes a container off a network. A running container keeps its
    /// first network; a stopped one's next network, if any, becomes its
    /// first.
    pub async fn disconnect(
        &self,
        network: &str,
        container: &Arc<Container>,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let record = self.networks.get(network)?;
        let Some(endpoint) = record.endpoints.get(&container.id) else {
            return Err(NetworkError::NotConnected(record.name).into());
        };
        if container.config().pod.is_some() {
            return Err(NetworkError::NotConnected(record.name).into());
        }
        let running = container.state().running();
        if !endpoint.secondary {
            if running {
                return Err(NetworkError::FirstNetwork {
                    container: container.name(),
                    network: record.name,
                }
                .into());
            }
            let next = self.secondary_networks(&container.id).into_iter().next();
            let before = container.config().network;
            {
                let mut saved = lock(&container.record);
                saved.config.network = next
                    .as_ref()
                    .map_or(NetworkMode::None, |n| NetworkMode::Network(n.id.clone()));
                saved.save(&container.dir)?;
            }
            if let Some(next) = &next {
                if let Err(err) = self.networks.set_secondary(&next.id, &container.id, false) {
                    let mut saved = lock(&container.record);
                    saved.config.network = before;
                    let _ = saved.save(&container.dir);
                    return Err(err.into());
                }
            }
        } else if running {
            container.check_not_paused()?;
            self.unplug_live(container, &record).await?;
        }
        self.networks.disconnect(&record.id, &container.id)?;
        info!(container = %container.id, network = %record.name, running, "network disconnected");
        self.emit(container, "disconnect", &[("network", record.name)]);
        Ok(())
    }

    /// At a start, before the container's process: plugs each secondary
    /// network into a spare device of the new VM. Returns what went where.
    pub(super) async fn plug_secondary<V: Vm>(
        &self,
        vm: &V,
        agent: &AgentClient,
        container_id: &str,
    ) -> Result<std::collections::BTreeMap<usize, String>, ContainerError> {
        let mut plugged = std::collections::BTreeMap::new();
        for (slot, network) in (1..NIC_SLOTS).zip(self.secondary_networks(container_id)) {
            let (tap, interface) =
                self.networks
                    .attach_secondary(&network.id, container_id, slot)?;
            vm.plug_nic(slot, &tap)
                .await
                .map_err(|e| RunError::Nic(Box::new(e)))?;
            configure_slot(agent, slot, Some(interface)).await?;
            plugged.insert(slot, network.id);
        }
        Ok(plugged)
    }

    /// Plugs a network into a running container's VM: the tap, the device,
    /// then the guest's interface.
    async fn plug_live(
        &self,
        container: &Container,
        record: &NetworkRecord,
    ) -> Result<(), ContainerError> {
        let handle = run_handle(container)?;
        let used = container.state().plugged;
        let slot = (1..NIC_SLOTS)
            .find(|slot| !used.contains_key(slot))
            .ok_or_else(|| NetworkError::TooManyNetworks {
                container: container.name(),
                max: NIC_SLOTS,
            })?;
        let (tap, interface) = self
            .networks
            .attach_secondary(&record.id, &container.id, slot)?;
        let plugged = async {
            handle.nic(slot, Some(tap)).await?;
            configure_slot(&handle.agent, slot, Some(interface)).await
        }
        .await;
        if let Err(err) = plugged {
            let _ = handle.nic(slot, None).await;
            self.networks.detach_secondary(&container.id, slot);
            return Err(err);
        }
        container.update(|s| {
            s.plugged.insert(slot, record.id.clone());
        });
        Ok(())
    }

    /// Unplugs a network from a running container's VM: the guest's
    /// interface goes down first, then the device's tap.
    async fn unplug_live(
        &self,
        container: &Container,
        record: &NetworkRecord,
    ) -> Result<(), ContainerError> {
        let plugged = container.state().plugged;
        let Some((&slot, _)) = plugged.iter().find(|(_, id)| **id == record.id) else {
            return Ok(());
        };
        let handle = run_handle(container)?;
        // A guest that does not answer still loses the device.
        if let Err(err) = configure_slot(&handle.agent, slot, None).await {
            warn!(container = %container.id, slot, error = %err, "the guest did not take its interface down");
        }
        // The tap goes even if QEMU failed to let go of it: without it the
        // device reaches no network, whatever the guest does.
        let unplugged = handle.nic(slot, None).await;
        self.networks.detach_secondary(&container.id, slot);
        container.update(|s| {
            s.plugged.remove(&slot);
        });
        unplugged
    }
}

fn run_handle(container: &Container) -> Result<RunHandle, ContainerError> {
    lock(&container.run)
        .clone()
        .ok_or_else(|| ContainerError::NotRunning(container.id.clone()))
}

async fn configure_slot(
    agent: &AgentClient,
    slot: usize,
    interface: Option<InterfaceSpec>,
) -> Result<(), ContainerError> {
    let slot = u32::try_from(slot).expect("slots are few");
    agent
        .request_done(&Request::ConfigureInterface { slot, interface })
        .await?;
    Ok(())
}

impl RunHandle {
    /// Has the run's supervisor plug the tap `tap` into spare device
    /// `slot`, or with `None` unplug it.
    async fn nic(&self, slot: usize, tap: Option<String>) -> Result<(), ContainerError> {
        let Some(vm_requests) = &self.vm_requests else {
            return Err(RunError::Nic("a pod's VM is the pod's".into()).into());
        };
        let (done, result) = tokio::sync::oneshot::channel();
        if vm_requests
            .send(VmRequest::Nic { slot, tap, done })
            .await
            .is_err()
        {
            return Err(RunError::Nic("the container stopped".into()).into());
        }
        result
            .await
            .unwrap_or_else(|_| Err(RunError::Nic("the container stopped".into())))
            .map_err(ContainerError::from)
    }
}
