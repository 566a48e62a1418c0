//! User-defined networks on disk: each one's subnet, gateway and the
//! addresses it has handed to containers (its IPAM), kept in one JSON
//! record per network so that addresses survive hulld restarts.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use crate::subnet::{Subnet, SubnetPool};
use crate::NetworkError;

/// Names docker gives its predefined networks.
pub const RESERVED_NAMES: [&str; 4] = ["bridge", "default", "host", "none"];
/// Parts a reserved name's: `<owner>:<name>`. No name that `create` takes
/// has it, so only [`NetworkStore::ensure`] makes such networks.
pub const RESERVED_SEPARATOR: char = ':';

/// A container's place on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: String,
    pub container_name: String,
    /// Other names the container answers to on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub address: Ipv4Addr,
    pub mac: String,
    /// A network the container joined besides its first one: its VM's
    /// spare network device carries it, without the default route, the
    /// published ports or a floating IP.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secondary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub created: SystemTime,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// No way out of the network: no NAT, no forwarding.
    #[serde(default)]
    pub internal: bool,
    /// Out only to the internet: no way to the host (but its resolver),
    /// to other networks or to private addresses, and no way in but
    /// replies and published ports.
    #[serde(default)]
    pub isolated: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// By container id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Endpoint>,
}

impl NetworkRecord {
    /// The host's bridge for this network; at most 15 characters, as
    /// interface names must be.
    pub fn bridge(&self) -> String {
        bridge_name(&self.id)
    }

    /// The container's endpoint here, if this is its first network.
    pub fn primary_endpoint(&self, container_id: &str) -> Option<&Endpoint> {
        self.endpoints.get(container_id).filter(|e| !e.secondary)
    }

    /// The address a name on this network stands for: a container's name,
    /// one of its aliases, or the start of its id.
    pub fn resolve(&self, name: &str) -> Option<Ipv4Addr> {
        let name = name.trim_end_matches('.');
        self.endpoints
            .iter()
            .find(|(container_id, endpoint)| {
                endpoint.container_name.eq_ignore_ascii_case(name)
                    || endpoint
                        .aliases
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case(name))
                    || (name.len() == 12 && container_id.starts_with(name))
            })
            .map(|(_, endpoint)| endpoint.address)
    }
}

/// What `network create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    pub name: String,
    pub subnet: Option<Subnet>,
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub isolated: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
    /// Where the subnet comes from when none is given.
    pub pool: SubnetPool,
}

pub struct NetworkStore {
    dir: PathBuf,
    table: Mutex<BTreeMap<String, NetworkRecord>>,
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    if !docker_name(name) {
        return Err(NetworkError::InvalidName(name.to_owned()));
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(NetworkError::Reserved(name.to_owned()));
    }
    Ok(())
}

/// `<owner>:<name>`, each part a name docker takes.
fn check_reserved_name(name: &str) -> Result<(), NetworkError> {
    match name.split_once(RESERVED_SEPARATOR) {
        Some((owner, rest)) if docker_name(owner) && docker_name(rest) => Ok(()),
        _ => Err(NetworkError::InvalidReservedName(name.to_owned())),
    }
}

impl NetworkStore {
    pub fn open(dir: &Path) -> Result<Self, NetworkError> {
        let io = |source| NetworkError::Io {
            what: "create",
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut table = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io)?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A write a crash cut short: the record it was to replace stands.
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<NetworkRecord>(&b).map_err(|e| e.to_string())
            }) {
                Ok(record) => {
                    table.insert(record.id.clone(), record);
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "skipping an unreadable network record")
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            table: Mutex::new(table),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NetworkRecord>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, record: &NetworkRecord) -> Result<(), NetworkError> {
        let path = self.dir.join(format!("{}.json", record.id));
        crate::records::write_json(&path, record).map_err(|source| NetworkError::Io {
            what: "write",
            path,
            source,
        })
    }

    pub fn get(&self, reference: &str) -> Result<NetworkRecord, NetworkError> {
        crate::records::find(&self.table(), reference, |n: &NetworkRecord| n.name.clone())
            .cloned()
            .ok_or_else(|| NetworkError::UnknownNetwork(reference.to_owned()))
    }

    pub fn list(&self) -> Vec<NetworkRecord> {
        let mut networks: Vec<_> = self.table().values().cloned().collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        networks
    }

    /// Creates a network; `taken` are subnets the host already routes,
    /// which an automatic subnet avoids.
    pub fn create(
        &self,
        options: NetworkOptions,
        taken: &[Subnet],
    ) -> Result<NetworkRecord, NetworkError> {
        check_name(&options.name)?;
        let mut table = self.table();
        if table.values().any(|n| n.name == options.name) {
            return Err(NetworkError::Exists(options.name));
        }
        self.insert(&mut table, options, taken)
    }

    /// The network of a reserved name (`<owner>:<name>`), created with
    /// `options` unless it exists; `true` with one just created. One lock
    /// covers the look-up and the creation, so concurrent callers get the
    /// same network. The caller checks that an existing one is what it
    /// asked for.
    pub fn ensure(
        &self,
        options: NetworkOptions,
        taken: &[Subnet],
    ) -> Result<(NetworkRecord, bool), NetworkError> {
        check_reserved_name(&options.name)?;
        let mut table = self.table();
        if let Some(existing) = table.values().find(|n| n.name == options.name) {
            return Ok((existing.clone(), false));
        }
        self.insert(&mut table, options, taken)
            .map(|record| (record, true))
    }

    fn insert(
        &self,
        table: &mut BTreeMap<String, NetworkRecord>,
        options: NetworkOptions,
        taken: &[Subnet],
    ) -> Result<NetworkRecord, NetworkError> {
        let ours: Vec<Subnet> = table.values().map(|n| n.subnet).collect();
        let subnet = match options.subnet {
            Some(subnet) => {
                if let Some(other) = table.values().find(|n| n.subnet.overlaps(&subnet)) {
                    return Err(NetworkError::Overlap {
                        subnet: subnet.to_string(),
                        network: other.name.clone(),
                    });
                }
                subnet
            }
            None => {
                let used: Vec<Subnet> = ours.iter().chain(taken).copied().collect();
                options.pool.allocate(&used)?
            }
        };
        let gateway = match options.gateway {
            Some(gateway) if subnet.is_host(gateway) => gateway,
            Some(gateway) => {
                return Err(NetworkError::Gateway {
                    gateway: gateway.to_string(),
                    subnet: subnet.to_string(),
                })
            }
            None => subnet.hosts().next().expect("a /30 or larger has hosts"),
        };
        let record = NetworkRecord {
            id: crate::records::new_id(),
            name: options.name,
            created: SystemTime::now(),
            subnet,
            gateway,
            internal: options.internal,
            isolated: options.isolated,
            labels: options.labels,
            options: options.options,
            endpoints: BTreeMap::new(),
        };
        self.save(&record)?;
        table.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    /// Removes a network that no container is on.
    pub fn remove(&self, reference: &str) -> Result<NetworkRecord, NetworkError> {
        let mut table = self.table();
        let record = crate::records::find(&table, reference, |n: &NetworkRecord| n.name.clone())
            .cloned()
            .ok_or_else(|| NetworkError::UnknownNetwork(reference.to_owned()))?;
        if !record.endpoints.is_empty() {
            let containers: Vec<_> = record
                .endpoints
                .values()
                .map(|e| e.container_name.as_str())
                .collect();
            return Err(NetworkError::InUse {
                network: record.name,
                containers: containers.join(", "),
            });
        }
        let path = self.dir.join(format!("{}.json", record.id));
        fs::remove_file(&path).map_err(|source| NetworkError::Io {
            what: "remove",
            path,
            source,
        })?;
        table.remove(&record.id);
        Ok(record)
    }

    /// Gives a container an address on a network, `requested` if it asks
    /// for one, or keeps the one it already has.
    pub fn connect(
        &self,
        reference: &str,
        container_id: &str,
        container_name: &str,
        aliases: Vec<String>,
        requested: Option<Ipv4Addr>,
    ) -> Result<(NetworkRecord, Endpoint), NetworkError> {
        self.connect_as(
            reference,
            container_id,
            container_name,
            aliases,
            requested,
            false,
        )
    }

    /// As [`NetworkStore::connect`], as the container's `secondary`
    /// network or its first.
    pub fn connect_as(
        &self,
        reference: &str,
        container_id: &str,
        container_name: &str,
        aliases: Vec<String>,
        requested: Option<Ipv4Addr>,
        secondary: bool,
    ) -> Result<(NetworkRecord, Endpoint), NetworkError> {
        let mut table = self.table();
        let network_id =
            crate::records::find(&table, reference, |n: &NetworkRecord| n.name.clone())
                .map(|n| n.id.clone())
                .ok_or_else(|| NetworkError::UnknownNetwork(reference.to_owned()))?;
        let mut record = table[&network_id].clone();
        if let Some(endpoint) = record.endpoints.get(container_id) {
            return Ok((record.clone(), endpoint.clone()));
        }
        let used = |address: Ipv4Addr| {
            address == record.gateway || record.endpoints.values().any(|e| e.address == address)
        };
        let address = match requested {
            Some(address) if !record.subnet.is_host(address) => {
                return Err(NetworkError::AddressOutside {
                    address: address.to_string(),
                    network: record.name,
                    subnet: record.subnet.to_string(),
                })
            }
            Some(address) if used(address) => {
                return Err(NetworkError::AddressInUse {
                    address: address.to_string(),
                    network: record.name,
                })
            }
            Some(address) => address,
            None => record
                .subnet
                .hosts()
                .find(|a| !used(*a))
                .ok_or_else(|| NetworkError::Exhausted(record.name.clone()))?,
        };
        let endpoint = Endpoint {
            id: crate::records::new_id(),
            container_name: container_name.trim_start_matches('/').to_owned(),
            aliases,
            address,
            mac: mac_for(address),
            secondary,
        };
        record
            .endpoints
            .insert(container_id.to_owned(), endpoint.clone());
        self.save(&record)?;
        table.insert(network_id, record.clone());
        Ok((record, endpoint))
    }

    /// Releases a container's address on a network; `false` if it had none.
    pub fn disconnect(&self, reference: &str, container_id: &str) -> Result<bool, NetworkError> {
        let mut table = self.table();
        let mut record =
            crate::records::find(&table, reference, |n: &NetworkRecord| n.name.clone())
                .cloned()
                .ok_or_else(|| NetworkError::UnknownNetwork(reference.to_owned()))?;
        if record.endpoints.remove(container_id).is_none() {
            return Ok(false);
        }
        self.save(&record)?;
        table.insert(record.id.clone(), record);
        Ok(true)
    }

    /// The address of `name` for a client at `client` on network `id`: a
    /// name there, else one on the client's other networks. Read under the
    /// lock, without a copy: a guest may ask as often as it likes.
    pub fn resolve_for(&self, id: &str, name: &str, client: Ipv4Addr) -> Option<Ipv4Addr> {
        let table = self.table();
        let own = table.get(id)?;
        if let Some(address) = own.resolve(name) {
            return Some(address);
        }
        let (container, _) = own.endpoints.iter().find(|(_, e)| e.address == client)?;
        table
            .values()
            .filter(|n| n.id != own.id && n.endpoints.contains_key(container))
            .find_map(|n| n.resolve(name))
    }

    /// Makes the container's endpoint on a network its first network's
    /// (`secondary` false) or a secondary one's; `false` if it has none.
    pub fn set_secondary(
        &self,
        reference: &str,
        container_id: &str,
        secondary: bool,
    ) -> Result<bool, NetworkError> {
        let mut table = self.table();
        let mut record =
            crate::records::find(&table, reference, |n: &NetworkRecord| n.name.clone())
                .cloned()
                .ok_or_else(|| NetworkError::UnknownNetwork(reference.to_owned()))?;
        let Some(endpoint) = record.endpoints.get_mut(container_id) else {
            return Ok(false);
        };
        if endpoint.secondary != secondary {
            endpoint.secondary = secondary;
            self.save(&record)?;
            table.insert(record.id.clone(), record);
        }
        Ok(true)
    }

    /// Follows a container's rename on every network it is on.
    pub fn rename(&self, container_id: &str, name: &str) -> Result<(), NetworkError> {
        let mut table = self.table();
        let renamed: Vec<NetworkRecord> = table
            .values()
            .filter(|n| n.endpoints.contains_key(container_id))
            .cloned()
            .map(|mut n| {
                if let Some(e) = n.endpoints.get_mut(container_id) {
                    e.container_name = name.trim_start_matches('/').to_owned();
                }
                n
            })
            .collect();
        for record in renamed {
            self.save(&record)?;
            table.insert(record.id.clone(), record);
        }
        Ok(())
    }
}

/// Docker's MAC for an address: `02:42` and the address's four bytes, so
/// that a container keeps its MAC with its address.
pub(crate) fn mac_for(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The name of the bridge of the network whose id is `id`.
pub(crate) fn bridge_name(id: &str) -> String {
    format!("{}{}", crate::BRIDGE_PREFIX, id.get(..12).unwrap_or(id))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
