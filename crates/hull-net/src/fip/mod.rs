//! Floating IPs: public addresses of the operator's pool (`--fip-pool`)
//! that a tenant allocates, names, attaches to one container at a time and
//! releases. An attached FIP is the container's address to the outside
//! both ways: connections to it reach the container's published ports (and
//! nothing else: a FIP opens no port), and the container's traffic out of
//! the uplink leaves from it. Attached to a service, it is the service's
//! public address: its port reaches the balancer, and the replicas in the
//! balancer go out from it.
//!
//! [`store`] keeps the records, [`rules`] turns them into nftables chains
//! of Hull's own table, and [`uplink`] makes the uplink answer for the
//! attached addresses.

mod active;
mod networks;
pub mod rules;
pub mod store;
pub mod uplink;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::store::Subnet;

pub use active::Fips;
pub use store::{FipRecord, FipStore, Holder, Owner};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FipError {
    #[error(
        "this host has no floating IP pool: start hulld with --fip-pool CIDR --uplink INTERFACE"
    )]
    NoPool,
    #[error("there is no interface {0:?} to be the uplink of the floating IP pool: give --uplink an interface of this host")]
    NoUplink(String),
    #[error("floating IP {0} not found")]
    NotFound(String),
    #[error("invalid floating IP {0:?}: expected an IPv4 address such as 198.51.100.17")]
    Invalid(String),
    #[error("invalid floating IP name {0:?}: 1 to 64 of [a-zA-Z0-9_.-], starting with a letter or digit")]
    InvalidName(String),
    #[error("cannot allocate {asked} floating IPs: only {free} of the pool {pool} are free")]
    Exhausted { asked: u64, free: u64, pool: String },
    #[error("invalid count {0:?}: allocate 1 to 16 floating IPs at a time")]
    Count(String),
    #[error(
        "floating IP {ip} is attached to {holder}: detach it first, or attach with -f to move it"
    )]
    Attached { ip: Ipv4Addr, holder: String },
    #[error("{holder} already has floating IP {ip}: it has one at a time; detach it first")]
    HasOne { holder: String, ip: Ipv4Addr },
    #[error("{0} has no floating IP")]
    NoneAttached(String),
    #[error("floating IP {ip} is attached to {holder}: detach it before releasing it")]
    InUse { ip: Ipv4Addr, holder: String },
    #[error("container {0} is not on a bridge network: a floating IP needs one; run the container with --network on a bridge network (user-mode and `none` containers cannot have one)")]
    NotBridged(String),
    #[error("cannot write the floating IP records to {path}: {message}")]
    Write { path: String, message: String },
    #[error("cannot read the floating IP records in {path}: {message}")]
    Read { path: String, message: String },
    #[error("{command} failed: {message}")]
    Host { command: String, message: String },
}

/// How the uplink comes to receive traffic for an attached FIP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UplinkMode {
    /// The host answers ARP for the address on the uplink (a proxy
    /// neighbour entry, with a host route to the container's bridge) but
    /// does not hold it: the FIP is never a local address of the host, so
    /// no service of the host listening on all addresses is reached at it.
    #[default]
    ProxyArp,
    /// The address is added to the uplink: for uplinks where the provider
    /// expects the host itself to hold it. Only Hull's rules keep the
    /// host's own services off it.
    Address,
}

impl FromStr for UplinkMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "proxy-arp" => Ok(Self::ProxyArp),
            "address" => Ok(Self::Address),
            other => Err(format!(
                "unknown uplink mode {other:?}: proxy-arp or address"
            )),
        }
    }
}

impl fmt::Display for UplinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ProxyArp => "proxy-arp",
            Self::Address => "address",
        })
    }
}

/// The operator's public range and the interface it is reached on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipConfig {
    pub pool: Subnet,
    pub uplink: String,
    pub mode: UplinkMode,
}

/// An attached FIP as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedFip {
    pub ip: Ipv4Addr,
    pub container_id: String,
    /// The container's address on its bridge network, and that bridge.
    pub container_ip: Ipv4Addr,
    pub bridge: String,
    /// The container ports it opens: those the container published.
    pub ports: Vec<(crate::Protocol, u16)>,
}

/// A FIP attached to a service: connections to it at the service's port
/// reach the service's balancer, as those to its address do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFip {
    pub ip: Ipv4Addr,
    pub service_id: String,
    /// The service's address and port, on the bridge of its network.
    pub vip: Ipv4Addr,
    pub port: u16,
    pub bridge: String,
    /// Carried by hulld's proxy, listening at `vip:port`, rather than
    /// translated by the service's own chains.
    pub proxied: bool,
}

/// Parses a FIP as a user gives it.
pub fn parse_ip(text: &str) -> Result<Ipv4Addr, FipError> {
    text.trim()
        .parse()
        .map_err(|_| FipError::Invalid(text.chars().take(64).collect()))
}

/// A FIP's name: what `fip name` takes (empty clears it).
pub fn check_name(name: &str) -> Result<(), FipError> {
    let ok = name.is_empty()
        || (name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    if ok {
        Ok(())
    } else {
        Err(FipError::InvalidName(name.chars().take(80).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_checked() {
        assert!(check_name("web-ip").is_ok());
        assert!(check_name("").is_ok());
        for bad in ["-x", "a b", "a/b", &"x".repeat(65), "ünï"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_ip("198.51.100.17").unwrap(),
            Ipv4Addr::new(198, 51, 100, 17)
        );
        for bad in ["", "1.2.3", "::1", "198.51.100.300", &"9".repeat(5000)] {
            let err = parse_ip(bad).unwrap_err();
            assert!(err.to_string().len() < 200);
        }
        assert_eq!(
            "address".parse::<UplinkMode>().unwrap(),
            UplinkMode::Address
        );
        assert_eq!(UplinkMode::default().to_string(), "proxy-arp");
        assert!("arp".parse::<UplinkMode>().is_err());
    }
}
