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
/// [`tap_name`] (twelve hex digits of the id); a spare's has eleven and a
/// letter for the slot that no hex digit is, in the 15 bytes a name may
/// have, so that it is never another container's first tap.
pub fn tap_name_for(container_id: &str, slot: usize) -> String {
    match slot {
        0 => tap_name(container_id),
        _ => {
            let letter = char::from(b'w' + u8::try_from(slot).unwrap_or(0));
            format!("{TAP_PREFIX}{}{letter}", &container_id[..11])
        }
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

    /// Takes down every spare device's tap of a VM that is gone; whether
    /// any was plugged, whose rules go too.
    pub(crate) fn detach_all_secondary(&self, container_id: &str) -> bool {
        let had = lock(&self.secondary).remove(container_id).is_some();
        if let Ok(host) = &self.host {
            for slot in 1..hull_proto::NIC_SLOTS {
                let _ = host.remove_link(&tap_name_for(container_id, slot));
            }
        }
        had
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
    store.resolve_for(network, name, client)
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
            ["ht-0123456789ab", "ht-0123456789ax", "ht-0123456789ay"]
        );
        assert!(names
            .iter()
            .all(|n| n.len() <= 15 && n.starts_with(TAP_PREFIX)));
        // A first tap, twelve hex digits, is never a spare's.
        assert!(names[1..]
            .iter()
            .all(|n| n.len() == 15 && !n.ends_with(|c: char| c.is_ascii_hexdigit())));
    }
}
