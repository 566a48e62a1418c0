//! Hull's networking, below the runtime: which network a container joins,
//! and the host ports it publishes. The default, user-mode network needs no
//! privileges: the guest sits behind QEMU's NAT at 10.0.2.15, reaches out
//! through it, and its published ports are forwarded from the host by QEMU.
//! User-defined networks are bridges on the host (see [`bridges`]), with
//! their addresses (IPAM), a resolver and nftables rules.

mod bridges;
pub mod dns;
pub mod fip;
pub mod firewall;
mod host;
pub mod records;
pub mod resolver;
mod secondary;
pub mod service;
pub mod sg;
pub mod store;
mod subnet;

use std::fmt;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::PathBuf;

pub use bridges::{tap_name, Attachment, Networks};
pub use secondary::tap_name_for;
pub use store::{Endpoint, NetworkOptions, NetworkRecord, Subnet, SubnetPool};

use hull_proto::{InterfaceSpec, NetworkSpec};
use hull_vm::{HostForward, NetBackend};
use serde::{Deserialize, Serialize};

/// The guest's address and gateway on QEMU's user-mode network.
pub const USER_ADDRESS: &str = "10.0.2.15";
const USER_PREFIX: u8 = 24;
const USER_GATEWAY: &str = "10.0.2.2";
/// QEMU's user-mode stack answers DNS here, with the host's resolvers.
const USER_DNS: &str = "10.0.2.3";

/// Names of the bridges and taps Hull makes, so that its firewall rules
/// and its clean-up find them and nothing else.
pub const BRIDGE_PREFIX: &str = "hb-";
pub const TAP_PREFIX: &str = "ht-";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid port specification {0:?}: expected [ip:][hostPort:]containerPort[/tcp|/udp]")]
    Publish(String),
    #[error("invalid port {0:?}: ports are 1 to 65535")]
    Port(String),
    #[error("invalid protocol {0:?}: tcp or udp")]
    Protocol(String),
    #[error("invalid host address {0:?}")]
    HostIp(String),
    #[error("network {0} not found")]
    UnknownNetwork(String),
    #[error("network mode {0}")]
    Unsupported(String),
    #[error("no free host port for {0}: {1}")]
    NoFreePort(String, String),
    #[error("invalid network name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("network name {0:?} is one of docker's predefined networks; pick another")]
    Reserved(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid subnet {0:?}: expected an IPv4 network address and a prefix of 30 or less, like 10.90.0.0/24")]
    Subnet(String),
    #[error("subnet {subnet} overlaps with network {network}")]
    Overlap { subnet: String, network: String },
    #[error("gateway {gateway} is not a host address of subnet {subnet}")]
    Gateway { gateway: String, subnet: String },
    #[error("no free /{size} is left in {pool} for a new network; give one with --subnet")]
    NoSubnet { pool: String, size: u8 },
    #[error("invalid reserved network name {0:?}: expected <owner>:<name>, each part [a-zA-Z0-9][a-zA-Z0-9_.-]")]
    InvalidReservedName(String),
    #[error("error while removing network: network {network} has active endpoints ({containers})")]
    InUse { network: String, containers: String },
    #[error("address {address} is not in network {network}'s subnet {subnet}")]
    AddressOutside {
        address: String,
        network: String,
        subnet: String,
    },
    #[error("address {address} is already in use on network {network}")]
    AddressInUse { address: String, network: String },
    #[error("network {0} has no free address left")]
    Exhausted(String),
    #[error("the container is not connected to network {0}")]
    NotConnected(String),
    #[error("container {container} is already connected to network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is on {max} networks, as many as its VM has network devices: disconnect it from one first")]
    TooManyNetworks { container: String, max: usize },
    #[error("network {network} is container {container}'s first network, which its VM keeps while it runs: stop the container to disconnect it")]
    FirstNetwork { container: String, network: String },
    #[error("a second network ({network}) needs bridge networks, which this host lacks: {why}")]
    NoBridges { network: String, why: String },
    #[error("Bind for {0} failed: port is already allocated")]
    PortAllocated(String),
    #[error("{command} failed: {message}")]
    Host { command: String, message: String },
    #[error(transparent)]
    Fip(#[from] fip::FipError),
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

impl Protocol {
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        match text.to_ascii_lowercase().as_str() {
            "" | "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(NetworkError::Protocol(text.to_owned())),
        }
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub protocol: Protocol,
    /// Empty: every host address.
    pub host_ip: String,
    /// 0: a free port, chosen at each start.
    pub host_port: u16,
    pub container_port: u16,
}

impl PortBinding {
    /// Docker's key of the container port: `80/tcp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.protocol)
    }
}

/// Which network a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// QEMU's user-mode network: outbound NAT and published ports.
    #[default]
    User,
    /// Loopback only.
    None,
    /// A user-defined network, by id once the container is created (by
    /// the name or id it was asked for until then).
    Network(String),
}

impl NetworkMode {
    /// Docker's `NetworkMode`: empty, `default` and `bridge` mean the
    /// default network; `host` and `container:` are not for VMs.
    pub fn parse(text: &str) -> Result<Self, NetworkError> {
        match text {
            "" | "default" | "bridge" => Ok(Self::User),
            "none" => Ok(Self::None),
            "host" => Err(NetworkError::Unsupported(
                "host: a VM has its own network stack; publish ports with -p instead".into(),
            )),
            other if other.starts_with("container:") => Err(NetworkError::Unsupported(format!(
                "{other}: containers share a network by running in one pod"
            ))),
            other => Ok(Self::Network(other.to_owned())),
        }
    }
}

fn port(text: &str) -> Result<u16, NetworkError> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| NetworkError::Port(text.to_owned()))
}

/// `-p [ip:][hostPort:]containerPort[/proto]`, where either port may be a
/// range (`8000-8001:80-81`).
pub fn parse_publish(text: &str) -> Result<Vec<PortBinding>, NetworkError> {
    let invalid = || NetworkError::Publish(text.to_owned());
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, Protocol::parse(protocol)?),
        None => (text, Protocol::Tcp),
    };
    // An IPv6 host address is bracketed: `[::1]:80:80`.
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, rest) = bracketed.split_once("]:").ok_or_else(invalid)?;
            (ip.to_owned(), rest)
        }
        None => {
            let parts: Vec<&str> = spec.split(':').collect();
            match parts.len() {
                1 | 2 => (String::new(), spec),
                3 => (parts[0].to_owned(), &spec[parts[0].len() + 1..]),
                _ => return Err(invalid()),
            }
        }
    };
    if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(NetworkError::HostIp(host_ip));
    }
    let (host, container) = match rest.split_once(':') {
        Some((host, container)) => (host, container),
        None => ("", rest),
    };
    let range = |text: &str| -> Result<(u16, u16), NetworkError> {
        match text.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (port(first)?, port(last)?);
                if last < first {
                    return Err(invalid());
                }
                Ok((first, last))
            }
            None => port(text).map(|p| (p, p)),
        }
    };
    let (first, last) = range(container)?;
    let hosts = if host.is_empty() {
        None
    } else {
        let (host_first, host_last) = range(host)?;
        if host_last - host_first != last - first {
            return Err(invalid());
        }
        Some(host_first)
    };
    Ok((first..=last)
        .map(|container_port| PortBinding {
            protocol,
            host_ip: host_ip.clone(),
            host_port: hosts.map_or(0, |h| h + (container_port - first)),
            container_port,
        })
        .collect())
}

/// The bindings with a free host port chosen for each one that has none.
pub fn assign_host_ports(bindings: &[PortBinding]) -> Result<Vec<PortBinding>, NetworkError> {
    bindings
        .iter()
        .map(|binding| {
            if binding.host_port != 0 {
                return Ok(binding.clone());
            }
            let address = if binding.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                binding.host_ip.as_str()
            };
            let no_port =
                |e: std::io::Error| NetworkError::NoFreePort(binding.key(), e.to_string());
            // The port is free now; QEMU binds it moments later.
            let host_port = match binding.protocol {
                Protocol::Tcp => TcpListener::bind((address, 0))
                    .and_then(|l| l.local_addr())
                    .map_err(no_port)?
                    .port(),
                Protocol::Udp => UdpSocket::bind((address, 0))
                    .and_then(|s| s.local_addr())
                    .map_err(no_port)?
                    .port(),
            };
            Ok(PortBinding {
                host_port,
                ..binding.clone()
            })
        })
        .collect()
}

/// A locally administered, unicast MAC address.
pub fn random_mac() -> String {
    let bytes = crate::records::random_bytes::<5>();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4]
    )
}

/// The VM's backend and the guest's settings on the user-mode network,
/// publishing `ports` (whose host ports are assigned).
pub fn user_network(ports: &[PortBinding]) -> (NetBackend, NetworkSpec) {
    let forwards = ports
        .iter()
        .map(|p| HostForward {
            udp: p.protocol == Protocol::Udp,
            host_ip: p.host_ip.clone(),
            host_port: p.host_port,
            guest_port: p.container_port,
        })
        .collect();
    let spec = NetworkSpec {
        interfaces: vec![InterfaceSpec {
            mac: random_mac(),
            address: format!("{USER_ADDRESS}/{USER_PREFIX}"),
            gateway: Some(USER_GATEWAY.to_owned()),
            mtu: None,
            routes: Vec::new(),
        }],
        dns: vec![USER_DNS.to_owned()],
        search: Vec::new(),
        hosts: Vec::new(),
    };
    (NetBackend::User { forwards }, spec)
}

/// The gateway of the user-mode network, for inspect.
pub fn user_gateway() -> Ipv4Addr {
    USER_GATEWAY.parse().expect("a valid address")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(host_ip: &str, host_port: u16, container_port: u16) -> PortBinding {
        PortBinding {
            protocol: Protocol::Tcp,
            host_ip: host_ip.into(),
            host_port,
            container_port,
        }
    }

    #[test]
    fn publish_specs_parse_as_docker_reads_them() {
        assert_eq!(parse_publish("80").unwrap(), [binding("", 0, 80)]);
        assert_eq!(parse_publish("8080:80").unwrap(), [binding("", 8080, 80)]);
        assert_eq!(
            parse_publish("127.0.0.1:8080:80").unwrap(),
            [binding("127.0.0.1", 8080, 80)]
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            [binding("127.0.0.1", 0, 80)]
        );
        let udp = parse_publish("5353:53/udp").unwrap();
        assert_eq!(udp[0].protocol, Protocol::Udp);
        assert_eq!(udp[0].key(), "53/udp");
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            [binding("", 8000, 80), binding("", 8001, 81)]
        );
        assert_eq!(
            parse_publish("[::1]:8080:80").unwrap(),
            [binding("::1", 8080, 80)]
        );
        for bad in [
            "",
            "0",
            "70000",
            "a:b",
            "1:2:3:4",
            "8000-8002:80-81",
            "81-80",
            "x.y:1:2",
            "80/sctp",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unassigned_host_ports_get_free_ones() {
        let assigned =
            assign_host_ports(&[binding("127.0.0.1", 0, 80), binding("", 9, 90)]).unwrap();
        assert_ne!(assigned[0].host_port, 0);
        assert_eq!(assigned[1].host_port, 9);
    }

    #[test]
    fn the_user_network_forwards_published_ports() {
        let (backend, spec) = user_network(&[binding("127.0.0.1", 8080, 80)]);
        let NetBackend::User { forwards } = backend else {
            panic!("user-mode backend");
        };
        assert_eq!(forwards[0].host_port, 8080);
        assert_eq!(forwards[0].guest_port, 80);
        assert_eq!(spec.interfaces[0].address, "10.0.2.15/24");
        assert!(spec.interfaces[0].mac.starts_with("02:"));
        assert_eq!(spec.dns, ["10.0.2.3"]);
        assert_ne!(random_mac(), random_mac());
    }

    #[test]
    fn network_modes_take_dockers_names() {
        assert_eq!(NetworkMode::parse("").unwrap(), NetworkMode::User);
        assert_eq!(NetworkMode::parse("bridge").unwrap(), NetworkMode::User);
        assert_eq!(NetworkMode::parse("none").unwrap(), NetworkMode::None);
        assert_eq!(
            NetworkMode::parse("backend").unwrap(),
            NetworkMode::Network("backend".into())
        );
        assert!(matches!(
            NetworkMode::parse("host"),
            Err(NetworkError::Unsupported(_))
        ));
        // Records written before user-defined networks still read.
        let old: NetworkMode = serde_json::from_str("\"user\"").unwrap();
        assert_eq!(old, NetworkMode::User);
    }
}

#[cfg(test)]
mod nft_test;
