//! Services: a stable address and DNS name on a bridge network that
//! balances TCP connections over the healthy replicas of one image.
//!
//! The address is reserved from the network's IPAM (an endpoint keyed
//! [`ENDPOINT_PREFIX`] and the service's id, named after the service, so
//! the network's resolver answers for the name) and added to the bridge as
//! a /32, so that the host answers ARP for it and routes what clients send
//! there. [`nft`] translates those connections to a replica in Hull's own
//! table; the records ([`store`]) and the healthy replicas the caller
//! reports ([`Networks::set_backends`]) are all the rules are made from, so
//! they are made again whenever anything changes and at every start.
//! Replicas themselves (containers) and their health are the API's: this
//! crate knows addresses only.

pub mod nft;
pub mod spec;
pub mod store;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{info, warn};

pub use spec::{Algorithm, HealthCheck, Protocol, ServiceSpec, MAX_REPLICAS};
pub use store::{ServiceRecord, ServiceStore};

use crate::bridges::{lock, Networks};
use crate::NetworkError;

/// The key of a service's address among its network's endpoints.
pub const ENDPOINT_PREFIX: &str = "service-";
/// The label that marks a replica with its service's id.
pub const LABEL: &str = "sh.hull.service";
/// The label that marks a replica with the image it was made from.
pub const IMAGE_LABEL: &str = "sh.hull.service.image";
/// Services of one owner.
pub const MAX_PER_OWNER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("service {0} not found")]
    NotFound(String),
    #[error("service {0} already exists")]
    Exists(String),
    #[error("service {0} is being updated already: wait for its rolling update to end")]
    Busy(String),
    #[error("invalid service name {0:?}: 1 to 48 of [a-z0-9-], starting with a letter or digit and not ending with '-' (it is a DNS name)")]
    InvalidName(String),
    #[error("invalid replicas {0}: a service has 1 to {MAX_REPLICAS} replicas")]
    Replicas(u64),
    #[error("invalid {what} port {value}: ports are 1 to 65535")]
    Port { what: &'static str, value: u64 },
    #[error("invalid algorithm {0:?}: roundrobin, leastconn or source")]
    Algorithm(String),
    #[error("invalid protocol {0:?}: tcp or http")]
    Protocol(String),
    #[error("invalid health check {0:?}: interval=200ms..60s, fall=1..10, rise=1..10, path=/ and at most 256 printable bytes, as interval=3s,fall=3,rise=2,path=/healthz")]
    HealthCheck(String),
    #[error("invalid service: {0}")]
    Invalid(String),
    #[error("no more services: an owner has at most {MAX_PER_OWNER}")]
    Quota,
    #[error("services need a bridge network, which this host cannot make: {0}")]
    NoBridges(String),
    #[error("service {0} cannot be made")]
    Network(String, #[source] NetworkError),
    #[error("the service records in {} are unreadable: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a network endpoint is a service's address, not a container's.
pub fn is_service_endpoint(key: &str) -> bool {
    key.starts_with(ENDPOINT_PREFIX)
}

/// The services' records and, by service id, their healthy replicas.
pub struct Services {
    pub store: ServiceStore,
    /// What the rules are to hold: what the next firewall write uses.
    backends: Mutex<BTreeMap<String, Vec<Ipv4Addr>>>,
    /// What the rules in the kernel hold, shown once written: a replica
    /// shown out of the balancer no longer takes connections.
    applied: Mutex<BTreeMap<String, Vec<Ipv4Addr>>>,
}

impl Services {
    pub fn open(dir: &Path) -> Result<Self, ServiceError> {
        Ok(Self {
            store: ServiceStore::open(dir)?,
            backends: Mutex::default(),
            applied: Mutex::default(),
        })
    }

    /// The chains for every service, with the replicas known healthy and
    /// the FIPs attached. `bridges`: whether the host's rules have the
    /// bridges' input chain, which a proxied service's port is opened in.
    pub(crate) fn script(
        &self,
        bridges: bool,
        fips: &[crate::fip::ServiceFip],
        uplink: Option<&str>,
    ) -> String {
        let backends = lock(&self.backends);
        let rules: Vec<nft::ServiceRules> = self
            .store
            .list()
            .into_iter()
            .map(|record| nft::ServiceRules {
                bridge: crate::store::bridge_name(&record.network_id),
                vip: record.vip,
                port: record.service_port(),
                container_port: record.container_port(),
                algorithm: record.spec.algorithm,
                proxied: record.spec.proxied(),
                backends: backends.get(&record.id).cloned().unwrap_or_default(),
                fip: fips
                    .iter()
                    .find(|f| f.service_id == record.id)
                    .map(|f| f.ip),
            })
            .collect();
        nft::script(&rules, bridges, uplink)
    }
}

fn endpoint_key(id: &str) -> String {
    format!("{ENDPOINT_PREFIX}{id}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Networks {
    pub fn services(&self) -> &ServiceStore {
        &self.services.store
    }

    /// A new service of `owner` on `spec.network` (a network name or id,
    /// already chosen for the owner): its address reserved and held by
    /// the host. It has no healthy replica yet.
    pub fn create_service(
        &self,
        owner: Option<&str>,
        mut spec: ServiceSpec,
    ) -> Result<ServiceRecord, ServiceError> {
        spec.validate()?;
        if let Some(why) = self.bridges_unavailable() {
            return Err(ServiceError::NoBridges(why.to_owned()));
        }
        let store = &self.services.store;
        // Checked again when recorded, under the store's lock: this only
        // spares a taken name an address.
        if store.get(owner, &spec.name).is_ok() {
            return Err(ServiceError::Exists(spec.name));
        }
        let name = spec.name.clone();
        let failed = |e: NetworkError| ServiceError::Network(name.clone(), e);
        let network = self.get(&spec.network).map_err(failed)?;
        let id = crate::records::new_id();
        let key = endpoint_key(&id);
        let connected = self
            .connect(&network.id, &key, &spec.name, Vec::new(), None, false)
            .map_err(failed)?;
        let endpoint = connected
            .endpoints
            .get(&key)
            .cloned()
            .ok_or_else(|| failed(NetworkError::NotConnected(network.name.clone())))?;
        spec.network = network.name.clone();
        let record = ServiceRecord {
            id: id.clone(),
            owner: owner.map(str::to_owned),
            spec,
            network_id: network.id.clone(),
            vip: endpoint.address,
            created: unix_now(),
            rollback: None,
        };
        let made = store
            .insert(record.clone(), MAX_PER_OWNER)
            .and_then(|()| self.hold_vip(&record).map_err(failed))
            .and_then(|()| self.apply_firewall().map_err(failed));
        if let Err(err) = made {
            let _ = store.remove(&id);
            self.release_vip(&record);
            return Err(err);
        }
        info!(service = %record.spec.name, vip = %record.vip, network = %network.name, "service created");
        Ok(record)
    }

    /// Removes the service's address and rules (its replicas are the
    /// caller's to remove).
    pub fn remove_service(
        &self,
        owner: Option<&str>,
        name: &str,
    ) -> Result<ServiceRecord, ServiceError> {
        let record = self.services.store.get(owner, name)?;
        self.forget_fip(crate::fip::Holder::Service(&record.id));
        self.services.store.remove(&record.id)?;
        lock(&self.services.backends).remove(&record.id);
        lock(&self.services.applied).remove(&record.id);
        self.release_vip(&record);
        if let Err(err) = self.apply_firewall() {
            warn!(error = %err, "cannot update the firewall");
        }
        info!(service = %record.spec.name, "service removed");
        Ok(record)
    }

    /// The replicas of service `id` that now take connections; the rules
    /// are rewritten only when they change.
    pub fn set_backends(&self, id: &str, mut backends: Vec<Ipv4Addr>) -> Result<(), NetworkError> {
        backends.sort();
        backends.dedup();
        {
            let mut table = lock(&self.services.backends);
            if table.get(id) == Some(&backends) {
                return Ok(());
            }
            table.insert(id.to_owned(), backends.clone());
        }
        self.apply_firewall()?;
        lock(&self.services.applied).insert(id.to_owned(), backends);
        Ok(())
    }

    /// The healthy replicas the rules in the kernel hold for service `id`.
    pub fn backends(&self, id: &str) -> Vec<Ipv4Addr> {
        lock(&self.services.applied)
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Every service's address on its bridge again, after hulld starts.
    pub fn restore_services(&self) {
        for record in self.services.store.list() {
            if let Err(err) = self.hold_vip(&record) {
                warn!(service = %record.spec.name, error = %err, "cannot hold the service's address");
            }
        }
    }

    fn hold_vip(&self, record: &ServiceRecord) -> Result<(), NetworkError> {
        let Ok(network) = self.get(&record.network_id) else {
            return Ok(());
        };
        let address = format!("{}/32", record.vip);
        match crate::host::run(
            "ip",
            &["addr", "add", &address, "dev", &network.bridge()],
            None,
        ) {
            Err(NetworkError::Host { message, .. }) if message.contains("File exists") => Ok(()),
            other => other,
        }
    }

    fn release_vip(&self, record: &ServiceRecord) {
        if let Ok(network) = self.get(&record.network_id) {
            let address = format!("{}/32", record.vip);
            let _ = crate::host::run(
                "ip",
                &["addr", "del", &address, "dev", &network.bridge()],
                None,
            );
        }
        if let Err(err) = self.disconnect(&record.network_id, &endpoint_key(&record.id)) {
            warn!(service = %record.spec.name, error = %err, "cannot release the service's address");
        }
    }
}
