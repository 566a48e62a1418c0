//! User-defined networks at work: each is a Linux bridge with the gateway's
//! address, a resolver on that address, and rules in Hull's nftables
//! table; each container on one gets a tap on the bridge for its VM.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hull_proto::{InterfaceSpec, NetworkSpec};
use hull_vm::NetBackend;
use tracing::{info, warn};

use hull_vm::uids::VmUids;

use crate::firewall::{BridgeRules, PortRule, Ruleset};
use crate::host::{self, Firewall, HostNetwork};
use crate::store::{NetworkOptions, NetworkRecord, NetworkStore};
use crate::{dns, resolver, NetworkError, PortBinding, TAP_PREFIX};

/// How a container's VM joins its network.
pub struct Attachment {
    pub backend: NetBackend,
    pub spec: NetworkSpec,
    /// Whether this is QEMU's user-mode network standing in for a bridge.
    pub fallback: bool,
}

pub struct Networks {
    pub(crate) store: Arc<NetworkStore>,
    /// `Err`: why bridges cannot be made here, and containers on bridge
    /// networks use the user-mode network instead.
    pub(crate) host: Result<HostNetwork, String>,
    resolvers: Mutex<BTreeMap<String, tokio::task::AbortHandle>>,
    /// The published ports of running containers on bridge networks.
    pub(crate) published: Mutex<BTreeMap<String, Vec<PortRule>>>,
    /// The networks plugged into running VMs' spare devices: container,
    /// then slot, to network id.
    pub(crate) secondary: Mutex<BTreeMap<String, BTreeMap<usize, String>>>,
    /// Security groups and their containers.
    pub(crate) groups: crate::sg::GroupStore,
    /// `Err`: why Hull's nftables tables cannot be written here.
    firewall: Result<Firewall, String>,
    /// The uids of VMs' QEMU processes, which the firewall rules.
    vm_uids: VmUids,
    /// Held from reading the state to writing the tables, so that tables
    /// written from older state never replace newer ones.
    writing: Mutex<()>,
    /// Floating IPs: their records, the pool and the uplink.
    pub(crate) fips: crate::fip::Fips,
    /// Services: their records and healthy replicas.
    pub(crate) services: crate::service::Services,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tap of a container's VM.
pub fn tap_name(container_id: &str) -> String {
    format!("{TAP_PREFIX}{}", &container_id[..12])
}

impl Networks {
    /// The networks recorded in `dir`; `vm_uids` are the uids that VMs'
    /// QEMU processes run as. Hull's tables are written at once, so that
    /// VMs are ruled from the start.
    pub fn open(dir: &Path, vm_uids: VmUids) -> Result<Self, NetworkError> {
        let firewall = host::detect_firewall();
        if let Err(why) = &firewall {
            warn!("Hull's firewall is off ({why}): containers on the default network reach the host's loopback services and every bridge network");
        }
        let host = host::detect();
        if let Err(why) = &host {
            warn!("bridge networks are not available ({why}): containers on them use QEMU's user-mode network, without names or reachability between containers");
        }
        let networks = Self {
            store: Arc::new(NetworkStore::open(dir)?),
            groups: crate::sg::GroupStore::open(&dir.join("security-groups")).map_err(|e| {
                NetworkError::Host {
                    command: "open the security group records".into(),
                    message: e.to_string(),
                }
            })?,
            host,
            resolvers: Mutex::default(),
            published: Mutex::default(),
            secondary: Mutex::default(),
            firewall,
            vm_uids,
            writing: Mutex::default(),
            fips: crate::fip::Fips::open(&dir.join("fips"))?,
            services: crate::service::Services::open(&dir.join("services")).map_err(|e| {
                NetworkError::Host {
                    command: "open the service records".into(),
                    message: e.to_string(),
                }
            })?,
        };
        networks.apply_firewall()?;
        Ok(networks)
    }

    pub fn get(&self, reference: &str) -> Result<NetworkRecord, NetworkError> {
        self.store.get(reference)
    }

    pub fn list(&self) -> Vec<NetworkRecord> {
        self.store.list()
    }

    /// Why bridges cannot be made here, if they cannot: containers on
    /// bridge networks then use QEMU's user-mode network instead.
    pub fn bridges_unavailable(&self) -> Option<&str> {
        self.host.as_ref().err().map(String::as_str)
    }

    /// Subnets the host routes now, which automatic subnets avoid.
    fn routed(&self) -> Vec<crate::Subnet> {
        match &self.host {
            Ok(host) => host.routed_subnets(),
            Err(_) => Vec::new(),
        }
    }

    pub fn create(&self, options: NetworkOptions) -> Result<NetworkRecord, NetworkError> {
        let record = self.store.create(options, &self.routed())?;
        self.bring_up(record)
    }

    /// The network of a reserved name (`<owner>:<name>`, which `create`
    /// refuses), made with `options` unless it exists. Concurrent calls get
    /// the same network; the caller checks that an existing one is what it
    /// asked for.
    pub fn ensure(&self, options: NetworkOptions) -> Result<NetworkRecord, NetworkError> {
        match self.store.ensure(options, &self.routed())? {
            (record, true) => self.bring_up(record),
            (record, false) => Ok(record),
        }
    }

    /// A new network's bridge, resolver and rules; the record goes if they
    /// cannot be made.
    fn bring_up(&self, record: NetworkRecord) -> Result<NetworkRecord, NetworkError> {
        if let Err(err) = self.activate(&record) {
            let _ = self.store.remove(&record.id);
            if let Ok(host) = &self.host {
                let _ = host.remove_link(&record.bridge());
            }
            return Err(err);
        }
        self.apply_firewall()?;
        info!(network = %record.name, subnet = %record.subnet, isolated = record.isolated, "network created");
        Ok(record)
    }

    /// The network's bridge and resolver, made if missing.
    pub(crate) fn activate(&self, record: &NetworkRecord) -> Result<(), NetworkError> {
        let Ok(host) = &self.host else {
            return Ok(());
        };
        // Held throughout, so that two starts do not race to make the bridge.
        let mut resolvers = lock(&self.resolvers);
        host.ensure_bridge(&record.bridge(), record.gateway, record.subnet)?;
        if resolvers
            .get(&record.id)
            .is_some_and(|task| !task.is_finished())
        {
            return Ok(());
        }
        let socket = std::net::UdpSocket::bind((record.gateway, 53))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(tokio::net::UdpSocket::from_std)
            .map_err(|e| NetworkError::Host {
                command: format!("bind the resolver to {}:53", record.gateway),
                message: e.to_string(),
            })?;
        let (store, id) = (self.store.clone(), record.id.clone());
        let lookup: dns::Lookup = Arc::new(move |name: &str, client| {
            crate::secondary::resolve_in(&store, &id, name, client)
        });
        // An internal network has no way out, not even for names.
        let upstreams = if record.internal {
            Vec::new()
        } else {
            dns::host_name_servers()
                .into_iter()
                .filter(|a| a.ip() != std::net::IpAddr::V4(record.gateway))
                .collect()
        };
        let task = tokio::spawn(resolver::serve(socket, record.subnet, lookup, upstreams));
        resolvers.insert(record.id.clone(), task.abort_handle());
        Ok(())
    }

    pub fn remove(&self, reference: &str) -> Result<NetworkRecord, NetworkError> {
        let record = self.store.remove(reference)?;
        if let Some(task) = lock(&self.resolvers).remove(&record.id) {
            task.abort();
        }
        if let Ok(host) = &self.host {
            host.remove_link(&record.bridge())?;
        }
        self.apply_firewall()?;
        info!(network = %record.name, "network removed");
        Ok(record)
    }

    /// Gives a container an address on a network, its first or a
    /// `secondary` one.
    pub fn connect(
        &self,
        reference: &str,
        container_id: &str,
        container_name: &str,
        aliases: Vec<String>,
        address: Option<Ipv4Addr>,
        secondary: bool,
    ) -> Result<NetworkRecord, NetworkError> {
        self.store
            .connect_as(
                reference,
                container_id,
                container_name,
                aliases,
                address,
                secondary,
            )
            .map(|(record, _)| record)
    }

    /// Makes the container's endpoint on `reference` its first network's,
    /// or a secondary one's.
    pub fn set_secondary(
        &self,
        reference: &str,
        container_id: &str,
        secondary: bool,
    ) -> Result<bool, NetworkError> {
        self.store.set_secondary(reference, container_id, secondary)
    }

    pub fn disconnect(&self, reference: &str, container_id: &str) -> Result<bool, NetworkError> {
        self.store.disconnect(reference, container_id)
    }

    /// Releases a removed container's addresses on every network.
    pub fn forget(&self, container_id: &str) {
        if self.forget_groups(container_id) {
            if let Err(err) = self.apply_firewall() {
                warn!(error = %err, "cannot update the firewall");
            }
        }
        self.forget_fip(crate::fip::Holder::Container(container_id));
        for network in self.list() {
            if network.endpoints.contains_key(container_id) {
                if let Err(err) = self.store.disconnect(&network.id, container_id) {
                    warn!(network = %network.name, error = %err, "cannot release an address");
                }
            }
        }
    }

    pub fn rename(&self, container_id: &str, name: &str) {
        if let Err(err) = self.store.rename(container_id, name) {
            warn!(container = %container_id, error = %err, "cannot rename the container's endpoints");
        }
    }

    /// The tap and the guest's settings for a container starting on
    /// `network`, with `ports` published; the ports' rules are in place
    /// once this returns.
    pub fn attach(
        &self,
        network: &str,
        container_id: &str,
        ports: &[PortBinding],
    ) -> Result<Attachment, NetworkError> {
        let record = self.store.get(network)?;
        let endpoint = record
            .primary_endpoint(container_id)
            .cloned()
            .ok_or_else(|| NetworkError::NotConnected(record.name.clone()))?;
        let Ok(host) = &self.host else {
            let (backend, spec) = crate::user_network(ports);
            return Ok(Attachment {
                backend,
                spec,
                fallback: true,
            });
        };
        self.activate(&record)?;
        let rules = port_rules(ports, endpoint.address);
        {
            let mut published = lock(&self.published);
            let clash = rules.iter().find(|rule| {
                published
                    .iter()
                    .filter(|(id, _)| *id != container_id)
                    .flat_map(|(_, theirs)| theirs)
                    .any(|other| {
                        other.protocol == rule.protocol
                            && other.host_port == rule.host_port
                            && (other.host_ip.is_none()
                                || rule.host_ip.is_none()
                                || other.host_ip == rule.host_ip)
                    })
            });
            if let Some(rule) = clash {
                let ip = rule.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                return Err(NetworkError::PortAllocated(format!(
                    "{ip}:{}",
                    rule.host_port
                )));
            }
            published.insert(container_id.to_owned(), rules);
        }
        let tap = tap_name(container_id);
        if let Err(err) = host.create_tap(&tap, &record.bridge()) {
            lock(&self.published).remove(container_id);
            return Err(err);
        }
        if let Err(err) = self.apply_firewall() {
            self.detach(container_id);
            return Err(err);
        }
        let gateway = record.gateway.to_string();
        Ok(Attachment {
            backend: NetBackend::Tap {
                ifname: tap,
                netns: None,
            },
            spec: NetworkSpec {
                interfaces: vec![InterfaceSpec {
                    mac: endpoint.mac,
                    address: format!("{}/{}", endpoint.address, record.subnet.prefix()),
                    gateway: (!record.internal).then(|| gateway.clone()),
                    mtu: None,
                    routes: Vec::new(),
                }],
                dns: vec![gateway],
                search: Vec::new(),
                hosts: Vec::new(),
            },
            fallback: false,
        })
    }

    /// Takes down what `attach` and `attach_secondary` set up for a
    /// container whose VM is gone.
    pub fn detach(&self, container_id: &str) {
        let Ok(host) = &self.host else {
            return;
        };
        let secondary = self.detach_all_secondary(container_id);
        if let Err(err) = host.remove_link(&tap_name(container_id)) {
            warn!(container = %container_id, error = %err, "cannot remove the container's tap");
        }
        let published = lock(&self.published).remove(container_id).is_some();
        if published || secondary {
            if let Err(err) = self.apply_firewall() {
                warn!(error = %err, "cannot update the firewall");
            }
        }
    }

    /// Brings the host in line with the records after hulld starts: every
    /// network's bridge and resolver, taps only for VMs that still run
    /// (`running`: container id and its published ports, by network;
    /// `plugged`: container id, spare device slot and network), and Hull's
    /// tables rebuilt from scratch.
    pub fn restore(
        &self,
        running: &[(String, String, Vec<PortBinding>)],
        plugged: &[(String, usize, String)],
    ) {
        let Ok(host) = &self.host else {
            return;
        };
        {
            let mut secondary = lock(&self.secondary);
            secondary.clear();
            for (container_id, slot, network) in plugged {
                secondary
                    .entry(container_id.clone())
                    .or_default()
                    .insert(*slot, network.clone());
            }
        }
        for network in self.list() {
            if let Err(err) = self.activate(&network) {
                warn!(network = %network.name, error = %err, "cannot bring the network up");
            }
        }
        let mut published = lock(&self.published);
        published.clear();
        for (container_id, network, ports) in running {
            let Ok(record) = self.store.get(network) else {
                continue;
            };
            if let Some(endpoint) = record.primary_endpoint(container_id) {
                published.insert(container_id.clone(), port_rules(ports, endpoint.address));
            }
        }
        let spares = self.secondary_taps();
        for tap in host.links_named(TAP_PREFIX) {
            let owned = published.keys().any(|id| tap_name(id) == tap)
                || spares
                    .iter()
                    .any(|(id, slot, _)| crate::tap_name_for(id, *slot) == tap);
            if !owned {
                info!(tap = %tap, "removing the tap of a VM that is gone");
                let _ = host.remove_link(&tap);
            }
        }
        drop(published);
        self.restore_services();
        if let Err(err) = self.apply_firewall() {
            warn!(error = %err, "cannot restore the firewall");
        }
    }

    pub(crate) fn apply_firewall(&self) -> Result<(), NetworkError> {
        let Ok(firewall) = &self.firewall else {
            return Ok(());
        };
        let _writing = lock(&self.writing);
        // Without a host that makes bridges, no network has one to rule.
        let bridges: Vec<BridgeRules> = match &self.host {
            Ok(_) => self
                .list()
                .iter()
                .map(|n| BridgeRules {
                    bridge: n.bridge(),
                    subnet: n.subnet,
                    gateway: n.gateway,
                    internal: n.internal,
                    isolated: n.isolated,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let ports: Vec<PortRule> = lock(&self.published).values().flatten().cloned().collect();
        let (fips, service_fips) = match &self.host {
            Ok(_) => (
                self.fips.attached(&self.list()),
                self.fips.of_services(&self.services.store.list()),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        };
        // Read each time: the host's resolver may move.
        let host_resolvers: Vec<std::net::IpAddr> =
            dns::host_name_servers().iter().map(|a| a.ip()).collect();
        let ruleset = Ruleset {
            vm_uids: self.vm_uids,
            host_resolvers: &host_resolvers,
            bridges: &bridges,
            ports: &ports,
        };
        let mut script = ruleset.script();
        script.push_str(&self.security_script());
        script.extend(self.fips.script(&fips, &service_fips));
        let uplink = self.fips.uplink();
        script.push_str(&self.services.script(
            !bridges.is_empty(),
            &service_fips,
            uplink.as_deref(),
        ));
        firewall.apply(&script)?;
        // Answered for on the uplink only once the rules are in place.
        Ok(self.fips.reconcile(&fips, &service_fips)?)
    }
}

fn port_rules(ports: &[PortBinding], container_ip: Ipv4Addr) -> Vec<PortRule> {
    ports
        .iter()
        .filter_map(|port| {
            let host_ip = if port.host_ip.is_empty() {
                None
            } else {
                match port.host_ip.parse::<Ipv4Addr>() {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        warn!(port = %port.key(), host_ip = %port.host_ip, "only IPv4 host addresses are published on bridge networks");
                        return None;
                    }
                }
            };
            Some(PortRule {
                protocol: port.protocol,
                host_ip,
                host_port: port.host_port,
                container_ip,
                container_port: port.container_port,
            })
        })
        .collect()
}
