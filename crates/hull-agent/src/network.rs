//! The VM's network as the host describes it: interface addresses, the
//! default route, and what containers find in `/etc/resolv.conf` and
//! `/etc/hosts`.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use hull_proto::{InterfaceSpec, NetworkSpec};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("invalid MAC address {0:?}")]
    Mac(String),
    #[error("invalid address {0:?}: expected IPv4 with a prefix length, such as 10.0.2.15/24")]
    Address(String),
    #[error("invalid gateway {0:?}")]
    Gateway(String),
    #[error("the host described {wanted} interfaces; the VM has {found}")]
    Missing { wanted: usize, found: usize },
    #[error("cannot configure {interface}: cannot {what}")]
    Configure {
        interface: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// An interface's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
}

impl Interface {
    /// Whether `address` is in the interface's subnet.
    pub fn on_link(&self, address: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        u32::from(address) & mask == u32::from(self.address) & mask
    }
}

pub fn parse_mac(text: &str) -> Result<[u8; 6], NetworkError> {
    let invalid = || NetworkError::Mac(text.to_owned());
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(invalid)?;
        if part.len() != 2 {
            return Err(invalid());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(mac)
}

pub fn parse_interface(spec: &InterfaceSpec) -> Result<Interface, NetworkError> {
    let invalid = || NetworkError::Address(spec.address.clone());
    let (address, prefix) = spec.address.split_once('/').ok_or_else(invalid)?;
    let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid())?;
    if prefix > 32 {
        return Err(invalid());
    }
    let netmask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    let gateway = spec
        .gateway
        .as_deref()
        .map(|g| g.parse().map_err(|_| NetworkError::Gateway(g.to_owned())))
        .transpose()?;
    Ok(Interface {
        mac: parse_mac(&spec.mac)?,
        address,
        netmask,
        gateway,
        mtu: spec.mtu,
    })
}

/// The VM's interfaces other than loopback, in device order (`eth0`, …).
fn interfaces(sys_class_net: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sys_class_net)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name != "lo")
        .collect();
    names.sort_by_key(|name| {
        let digits: String = name.chars().filter(char::is_ascii_digit).collect();
        (digits.parse::<u32>().unwrap_or(u32::MAX), name.clone())
    });
    names
}

/// Configures the VM's interfaces as `spec` says.
pub fn configure(spec: &NetworkSpec) -> Result<(), NetworkError> {
    let wanted = spec
        .interfaces
        .iter()
        .map(parse_interface)
        .collect::<Result<Vec<_>, _>>()?;
    let names = interfaces(Path::new("/sys/class/net"));
    if names.len() < wanted.len() {
        return Err(NetworkError::Missing {
            wanted: wanted.len(),
            found: names.len(),
        });
    }
    for (name, interface) in names.iter().zip(&wanted) {
        let fail = |what| {
            let interface = name.clone();
            move |source| NetworkError::Configure {
                interface,
                what,
                source,
            }
        };
        sys::set_mac_address(name, interface.mac).map_err(fail("set its MAC address"))?;
        sys::set_ipv4_address(name, interface.address, interface.netmask)
            .map_err(fail("set its address"))?;
        if let Some(mtu) = interface.mtu {
            sys::set_mtu(name, mtu).map_err(fail("set its MTU"))?;
        }
        sys::set_link_up(name).map_err(fail("bring it up"))?;
        if let Some(gateway) = interface.gateway {
            if !interface.on_link(gateway) {
                // The kernel refuses a gateway it has no route to.
                sys::add_link_route(name, gateway).map_err(fail("add the route to its gateway"))?;
            }
            sys::add_default_route(gateway).map_err(fail("add the default route"))?;
        }
    }
    Ok(())
}

/// `/etc/resolv.conf` for containers; `None` without name servers, which
/// leaves the image's own.
pub fn resolv_conf(spec: &NetworkSpec) -> Option<String> {
    if spec.dns.is_empty() {
        return None;
    }
    let mut text = String::new();
    for server in &spec.dns {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !spec.search.is_empty() {
        text.push_str(&format!("search {}\n", spec.search.join(" ")));
    }
    Some(text)
}

/// `/etc/hosts` for a container named `hostname`: localhost, the container
/// at its own address (or 127.0.1.1 without one), then the host's entries.
pub fn hosts_file(hostname: &str, spec: &NetworkSpec) -> String {
    let own = spec
        .interfaces
        .first()
        .and_then(|i| i.address.split_once('/'))
        .map_or("127.0.1.1", |(address, _)| address);
    let mut text = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{own}\t{hostname}\n"
    );
    for (address, names) in &spec.hosts {
        text.push_str(&format!("{address}\t{}\n", names.join(" ")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(address: &str, gateway: Option<&str>) -> InterfaceSpec {
        InterfaceSpec {
            mac: "02:42:ac:11:00:02".into(),
            address: address.into(),
            gateway: gateway.map(Into::into),
            mtu: None,
        }
    }

    #[test]
    fn interfaces_parse_with_their_netmask() {
        let parsed = parse_interface(&spec("10.0.2.15/24", Some("10.0.2.2"))).unwrap();
        assert_eq!(parsed.mac, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(parsed.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(parsed.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(parsed.gateway, Some(Ipv4Addr::new(10, 0, 2, 2)));
        let wide = parse_interface(&spec("172.30.0.9/16", None)).unwrap();
        assert_eq!(wide.netmask, Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(
            parse_interface(&spec("1.2.3.4/0", None)).unwrap().netmask,
            Ipv4Addr::UNSPECIFIED
        );
        for bad in ["10.0.2.15", "10.0.2.15/33", "x/24", "10.0.2/24"] {
            assert!(parse_interface(&spec(bad, None)).is_err(), "{bad}");
        }
        assert!(parse_interface(&spec("10.0.2.15/24", Some("gw"))).is_err());
        assert!(parsed.on_link(Ipv4Addr::new(10, 0, 2, 200)));
        let pinned = parse_interface(&spec("10.1.2.3/32", Some("169.254.1.1"))).unwrap();
        assert!(!pinned.on_link(Ipv4Addr::new(169, 254, 1, 1)));
        for bad in [
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "zz:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn containers_get_the_hosts_resolvers_and_names() {
        let network = NetworkSpec {
            interfaces: vec![spec("10.0.2.15/24", Some("10.0.2.2"))],
            dns: vec!["10.0.2.3".into()],
            search: vec!["hull.local".into()],
            hosts: vec![(
                "10.0.2.16".into(),
                vec!["db".into(), "db.hull.local".into()],
            )],
        };
        assert_eq!(
            resolv_conf(&network).unwrap(),
            "nameserver 10.0.2.3\nsearch hull.local\n"
        );
        let hosts = hosts_file("web", &network);
        assert!(hosts.contains("10.0.2.15\tweb\n"), "{hosts}");
        assert!(hosts.ends_with("10.0.2.16\tdb db.hull.local\n"), "{hosts}");
        let none = NetworkSpec::default();
        assert_eq!(resolv_conf(&none), None);
        assert!(hosts_file("web", &none).ends_with("127.0.1.1\tweb\n"));
    }

    #[test]
    fn interfaces_are_taken_in_device_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["lo", "eth10", "eth2", "eth0"] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(interfaces(dir.path()), ["eth0", "eth2", "eth10"]);
    }
}
