//! IPv4 subnets, and the pools that networks created without one take
//! theirs from.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::NetworkError;

/// An IPv4 subnet, `10.89.1.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    pub fn new(address: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 30).then(|| Self {
            network: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The addresses that hosts may take: neither the network's own address
    /// nor its broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        (first..self.broadcast()).map(Ipv4Addr::from)
    }

    pub(super) fn is_host(&self, address: Ipv4Addr) -> bool {
        self.contains(address) && address != self.network && u32::from(address) != self.broadcast()
    }

    fn broadcast(&self) -> u32 {
        u32::from(self.network) | !mask(self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    fn from_str(text: &str) -> Result<Self, NetworkError> {
        let invalid = || NetworkError::Subnet(text.to_owned());
        let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let subnet = Self::new(address, prefix).ok_or_else(invalid)?;
        if subnet.network != address {
            return Err(invalid());
        }
        Ok(subnet)
    }
}

impl TryFrom<String> for Subnet {
    type Error = NetworkError;
    fn try_from(text: String) -> Result<Self, NetworkError> {
        text.parse()
    }
}

impl From<Subnet> for String {
    fn from(subnet: Subnet) -> String {
        subnet.to_string()
    }
}

/// Where a network created without a subnet takes one: the first subnet of
/// `size` in `range` that overlaps nothing in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPool {
    pub range: Subnet,
    /// The prefix of each subnet handed out; at least the range's.
    pub size: u8,
}

impl Default for SubnetPool {
    /// `/24`s of `10.89.0.0/16`.
    fn default() -> Self {
        Self {
            range: Subnet::new(Ipv4Addr::new(10, 89, 0, 0), 16).expect("/16"),
            size: 24,
        }
    }
}

impl SubnetPool {
    /// The first free subnet; `used` are those of networks and the host's
    /// routes. One pass over them in address order, so that many networks
    /// cost little more than a sort.
    pub fn allocate(&self, used: &[Subnet]) -> Result<Subnet, NetworkError> {
        let size = self.size.clamp(self.range.prefix, 30);
        let step = 1u64 << (32 - u32::from(size));
        let end = u64::from(self.range.broadcast()) + 1;
        let mut taken: Vec<(u64, u64)> = used
            .iter()
            .map(|u| (u64::from(u32::from(u.network)), u64::from(u.broadcast())))
            .collect();
        taken.sort_unstable();
        let mut at = u64::from(u32::from(self.range.network));
        for (first, last) in taken {
            if last < at {
                continue;
            }
            if first >= at + step {
                break;
            }
            // Past what it hit, rounded up to a whole subnet of the pool.
            at = (last + 1).div_ceil(step) * step;
            if at >= end {
                break;
            }
        }
        if at + step <= end {
            Ok(Subnet::new(Ipv4Addr::from(at as u32), size).expect("a prefix of 30 or less"))
        } else {
            Err(NetworkError::NoSubnet {
                pool: self.range.to_string(),
                size: self.size,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnets(texts: &[&str]) -> Vec<Subnet> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    #[test]
    fn subnets_parse_and_hold_their_hosts() {
        let subnet: Subnet = "10.1.2.0/24".parse().unwrap();
        assert!(subnet.contains("10.1.2.200".parse().unwrap()));
        assert!(!subnet.contains("10.1.3.1".parse().unwrap()));
        assert_eq!(subnet.hosts().count(), 254);
        assert_eq!(subnet.hosts().next(), Some(Ipv4Addr::new(10, 1, 2, 1)));
        assert!(subnet.overlaps(&"10.1.0.0/16".parse().unwrap()));
        for bad in [
            "10.1.2.1/24",
            "10.1.2.0",
            "10.1.2.0/31",
            "x/24",
            "10.1.2.0/33",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pool_hands_out_the_first_subnet_that_overlaps_nothing() {
        let pool = SubnetPool::default();
        assert_eq!(pool.allocate(&[]).unwrap().to_string(), "10.89.0.0/24");
        let used = subnets(&["10.89.0.0/24", "10.89.2.0/23", "10.89.1.128/25"]);
        assert_eq!(pool.allocate(&used).unwrap().to_string(), "10.89.4.0/24");
        // A route wider than the pool's subnets skips all it covers.
        let used = subnets(&["10.89.0.0/20"]);
        assert_eq!(pool.allocate(&used).unwrap().to_string(), "10.89.16.0/24");
        // One that covers the whole pool leaves nothing.
        assert!(matches!(
            pool.allocate(&subnets(&["10.0.0.0/8"])),
            Err(NetworkError::NoSubnet { .. })
        ));
    }

    #[test]
    fn a_large_pool_serves_many_networks_without_overlap() {
        let pool = SubnetPool {
            range: "10.128.0.0/10".parse().unwrap(),
            size: 24,
        };
        let mut used = subnets(&["10.128.5.0/24", "10.128.0.0/30"]);
        for _ in 0..2_000 {
            let next = pool.allocate(&used).unwrap();
            assert!(used.iter().all(|u| !u.overlaps(&next)), "{next}");
            assert!(pool.range.contains(next.network));
            used.push(next);
        }
        // 2 000 handed out, one /24 spoilt by a /30, and one taken.
        assert_eq!(
            pool.allocate(&used).unwrap().to_string(),
            format!("10.135.{}.0/24", 2_002 - 7 * 256)
        );
    }

    #[test]
    fn the_last_subnet_of_the_address_space_does_not_overflow() {
        let pool = SubnetPool {
            range: "255.255.255.0/24".parse().unwrap(),
            size: 25,
        };
        let first = pool.allocate(&[]).unwrap();
        assert_eq!(first.to_string(), "255.255.255.0/25");
        let second = pool.allocate(&[first]).unwrap();
        assert_eq!(second.to_string(), "255.255.255.128/25");
        assert!(pool.allocate(&[first, second]).is_err());
    }
}
