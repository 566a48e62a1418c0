//! Networks a container joins besides its first. Each rides one of its
//! VM's spare network devices ([`hull_proto::NIC_SLOTS`]) through a tap of
//! its own on that network's bridge, plugged while the VM runs: at its
//! start, or when `network connect` finds it running. It carries no
//! default route, published port or floating IP; those stay on the first.

use std::net::Ipv4Addr;

use hull_proto::InterfaceSpec;
use tracing::warn;

use crate::bridges::{lock, tap_name, Networks};
use crate::store::NetworkStore;
use crate::{NetworkError, TAP_PREFIX};

/// The tap of a container's VM for its network device `slot`: slot 0's is
/// [`tap_name`]; a spare's adds the slot, in the 15 bytes a name may have.
pub fn tap_name_for(container_id: &str, slot: usize) -> String {
    match slot {
        0 => tap_name(container_id),
        _ => format!("{TAP_PREFIX}{}-{slot}", &container_id[..10]),
    }
}

impl Networks {
    /// Puts the container's tap for device `slot` on `network`'s bridge and
    /// rules it; the container must have an endpoint there. Returns the tap,
    /// for the hypervisor, and the settings of the guest's interface.
    pub fn attach_secondary(
        &self,
        network: &str,
        container_id: &str,
        slot: usize,
    ) -> Result<(String, InterfaceSpec), NetworkError> {
        let record = self.store.get(network)?;
        let endpoint = record
            .endpoints
            .get(container_id)
            .cloned()
            .ok_or_else(|| NetworkError::NotConnected(record.name.clone()))?;
        let host = self.host.as_ref().map_err(|why| NetworkError::NoBridges {
            network: record.name.clone(),
            why: why.clone(),
        })?;
        self.activate(&record)?;
        let tap = tap_name_for(container_id, slot);
        host.create_tap(&tap, &record.bridge())?;
        lock(&self.secondary)
            .entry(container_id.to_owned())
            .or_default()
            .insert(slot, record.id.clone());
        // Its anti-spoofing rule is in place before the VM can send.
        if let Err(err) = self.apply_firewall() {
            self.detach_secondary(container_id, slot);
            return Err(err);
        }
        let interface = InterfaceSpec {
            mac: endpoint.mac,
            address: format!("{}/{}", endpoint.address, record.subnet.prefix()),
            gateway: None,
            mtu: None,
            routes: Vec::new(),
        };
        Ok((tap, interface))
    }

    /// Takes down the tap of device `slot`, which the VM no longer uses.
    pub fn detach_secondary(&self, container_id: &str, slot: usize) {
        if let Ok(host) = &self.host {
            if let Err(err) = host.remove_link(&tap_name_for(container_id, slot)) {
                warn!(container = %container_id, slot, error = %err, "cannot remove a tap");
            }
        }
        let had = {
            let mut secondary = lock(&self.secondary);
            let had = secondary
                .get_mut(container_id)
                .is_some_and(|slots| slots.remove(&slot).is_some());
            if secondary.get(container_id).is_some_and(|s| s.is_empty()) {
                secondary.remove(container_id);
            }
            had
        };
        if had {
            if let Err(err) = self.apply_firewall() {
                warn!(error = %err, "cannot update the firewall");
            }
        }
    }

    /// Takes down every spare device's tap of a VM that is gone.
    pub(crate) fn detach_all_secondary(&self, container_id: &str) {
        lock(&self.secondary).remove(container_id);
        if let Ok(host) = &self.host {
            for slot in 1..hull_proto::NIC_SLOTS {
                let _ = host.remove_link(&tap_name_for(container_id, slot));
            }
        }
    }

    /// The plugged spare devices: container, slot and network id.
    pub(crate) fn secondary_taps(&self) -> Vec<(String, usize, String)> {
        lock(&self.secondary)
            .iter()
            .flat_map(|(id, slots)| {
                slots
                    .iter()
                    .map(|(slot, network)| (id.clone(), *slot, network.clone()))
            })
            .collect()
    }
}

/// The address of `name` for a client at `client` on `network`: a name
/// there, else one on the client's other networks, as docker's resolver
/// answers a container on several. The client is known by its address,
/// which the firewall keeps each tap from forging.
pub(crate) fn resolve_in(
    store: &NetworkStore,
    network: &str,
    name: &str,
    client: Ipv4Addr,
) -> Option<Ipv4Addr> {
    let own = store.get(network).ok()?;
    if let Some(address) = own.resolve(name) {
        return Some(address);
    }
    let (container, _) = own.endpoints.iter().find(|(_, e)| e.address == client)?;
    store
        .list()
        .iter()
        .filter(|n| n.id != own.id && n.endpoints.contains_key(container))
        .find_map(|n| n.resolve(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tap_name_fits_and_is_the_container_s_alone() {
        let id = "0123456789abcdef0123456789abcdef";
        let names: Vec<String> = (0..hull_proto::NIC_SLOTS)
            .map(|slot| tap_name_for(id, slot))
            .collect();
        assert_eq!(
            names,
            ["ht-0123456789ab", "ht-0123456789-1", "ht-0123456789-2"]
        );
        assert!(names
            .iter()
            .all(|n| n.len() <= 15 && n.starts_with(TAP_PREFIX)));
        // A first tap, twelve hex digits, is never a spare's.
        assert!(names[1..].iter().all(|n| n.contains('-') && n.len() == 15));
    }
}
