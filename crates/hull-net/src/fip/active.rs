//! The FIPs of one hulld: the records, and once the operator gave a pool,
//! the pool and the uplink that answers for attached FIPs.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use super::uplink::{self, Uplink};
use super::{rules, AttachedFip, FipConfig, FipError, FipStore, Holder, ServiceFip};
use crate::service::ServiceRecord;
use crate::store::NetworkRecord;

struct Active {
    config: FipConfig,
    uplink: Box<dyn Uplink>,
}

pub struct Fips {
    pub store: FipStore,
    active: Mutex<Option<Active>>,
}

impl Fips {
    pub fn open(dir: &Path) -> Result<Self, FipError> {
        Ok(Self {
            store: FipStore::open(dir)?,
            active: Mutex::new(None),
        })
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Option<Active>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn configure(&self, config: FipConfig, uplink: Box<dyn Uplink>) {
        *self.active() = Some(Active { config, uplink });
    }

    pub fn config(&self) -> Result<FipConfig, FipError> {
        self.active()
            .as_ref()
            .map(|a| a.config.clone())
            .ok_or(FipError::NoPool)
    }

    /// The attached FIPs whose containers are on a bridge network.
    pub fn attached(&self, networks: &[NetworkRecord]) -> Vec<AttachedFip> {
        self.store
            .attached()
            .into_iter()
            .filter_map(|record| {
                let container_id = record.container?;
                let (network, endpoint) = networks
                    .iter()
                    .find_map(|n| Some((n, n.primary_endpoint(&container_id)?)))?;
                Some(AttachedFip {
                    ip: record.ip,
                    container_ip: endpoint.address,
                    bridge: network.bridge(),
                    ports: record.ports,
                    container_id,
                })
            })
            .collect()
    }

    /// The FIPs attached to the `services` there are.
    pub fn of_services(&self, services: &[ServiceRecord]) -> Vec<ServiceFip> {
        services
            .iter()
            .filter_map(|record| {
                Some(ServiceFip {
                    ip: self.store.of(Holder::Service(&record.id))?,
                    service_id: record.id.clone(),
                    vip: record.vip,
                    port: record.service_port(),
                    bridge: crate::store::bridge_name(&record.network_id),
                    proxied: record.spec.proxied(),
                })
            })
            .collect()
    }

    /// The uplink, when this host has a pool.
    pub fn uplink(&self) -> Option<String> {
        self.active().as_ref().map(|a| a.config.uplink.clone())
    }

    /// The chains for FIPs `attached` to containers and to `services`,
    /// when this host has a pool.
    pub fn script(&self, attached: &[AttachedFip], services: &[ServiceFip]) -> Option<String> {
        let active = self.active();
        Some(rules::script(&active.as_ref()?.config, attached, services))
    }

    /// Makes the uplink answer for exactly the FIPs `attached` to
    /// containers and to `services`.
    pub fn reconcile(
        &self,
        attached: &[AttachedFip],
        services: &[ServiceFip],
    ) -> Result<(), FipError> {
        let active = self.active();
        let Some(active) = active.as_ref() else {
            return Ok(());
        };
        let wanted: Vec<(Ipv4Addr, String)> = attached
            .iter()
            .map(|f| (f.ip, f.bridge.clone()))
            .chain(services.iter().map(|f| (f.ip, f.bridge.clone())))
            .collect();
        uplink::reconcile(active.uplink.as_ref(), &active.config.pool, &wanted)
    }
}
