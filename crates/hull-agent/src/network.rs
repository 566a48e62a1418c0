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
    #[error("invalid route destination {0:?}: expected an IPv4 network with its prefix length, such as 10.244.0.0/16")]
    Route(String),
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
    pub routes: Vec<Route>,
}

/// A route through an interface: a network, and its next hop unless the
/// network is on the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
}

impl Interface {
    /// Whether `address` is in the interface's subnet.
    pub fn on_link(&self, address: Ipv4Addr) -> bool {
        let mask = u32::from(self.netmask);
        u32::from(address) & mask == u32::from(self.address) & mask
    }

    /// Its routes as the kernel takes them: networks on the link first,
    /// then those through a gateway, then the default route. A gateway
    /// outside the subnet (a CNI's `/32` address with a link-local
    /// gateway) gets a route on the link first, as the kernel refuses a
    /// gateway it has no route to.
    pub fn routes_in_order(&self) -> Vec<Route> {
        let host = Ipv4Addr::BROADCAST;
        let default = self.gateway.map(|gateway| Route {
            destination: Ipv4Addr::UNSPECIFIED,
            netmask: Ipv4Addr::UNSPECIFIED,
            gateway: Some(gateway),
        });
        let mut routes: Vec<Route> = self.routes.iter().chain(&default).cloned().collect();
        let gateways: Vec<Ipv4Addr> = routes.iter().filter_map(|r| r.gateway).collect();
        for gateway in gateways.into_iter().filter(|g| !self.on_link(*g)) {
            let to_gateway = Route {
                destination: gateway,
                netmask: host,
                gateway: None,
            };
            if !routes.contains(&to_gateway) {
                routes.push(to_gateway);
            }
        }
        // Stable: the order among each kind is the host's.
        routes.sort_by_key(|r| (r.gateway.is_some(), r.netmask == Ipv4Addr::UNSPECIFIED));
        routes
    }
}

/// A route the kernel has already (the same one listed twice) is no error.
fn already_there(error: std::io::Error) -> std::io::Result<()> {
    match error.raw_os_error() {
        Some(libc::EEXIST) => Ok(()),
        _ => Err(error),
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

/// An address with its prefix length (`10.0.2.15/24`), and its netmask.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (address, prefix) = text.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let netmask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    Some((address, netmask))
}

fn parse_gateway(text: &str) -> Result<Ipv4Addr, NetworkError> {
    text.parse()
        .map_err(|_| NetworkError::Gateway(text.to_owned()))
}

pub fn parse_interface(spec: &InterfaceSpec) -> Result<Interface, NetworkError> {
    let (address, netmask) =
        parse_cidr(&spec.address).ok_or_else(|| NetworkError::Address(spec.address.clone()))?;
    let gateway = spec.gateway.as_deref().map(parse_gateway).transpose()?;
    let routes = spec
        .routes
        .iter()
        .map(|route| {
            let (destination, netmask) = parse_cidr(&route.destination)
                .ok_or_else(|| NetworkError::Route(route.destination.clone()))?;
            let gateway = route.gateway.as_deref().map(parse_gateway).transpose()?;
            Ok(Route {
                destination,
                netmask,
                gateway,
            })
        })
        .collect::<Result<Vec<_>, NetworkError>>()?;
    Ok(Interface {
        mac: parse_mac(&spec.mac)?,
        address,
        netmask,
        gateway,
        mtu: spec.mtu,
        routes,
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

/// The VM's network devices as they were at boot: each interface's name
/// and the MAC its device came with, which names its slot
/// ([`hull_proto::nic_mac`]). Read before any interface takes its
/// network's MAC; a clone of a template has its template's.
#[derive(Debug, Clone, Default)]
pub struct Nics {
    /// In device order.
    boot: Vec<(String, Option<[u8; 6]>)>,
}

impl Nics {
    pub fn read(sys_class_net: &Path) -> Self {
        let boot = interfaces(sys_class_net)
            .into_iter()
            .map(|name| {
                let mac = fs::read_to_string(sys_class_net.join(&name).join("address"))
                    .ok()
                    .and_then(|text| parse_mac(text.trim()).ok());
                (name, mac)
            })
            .collect();
        Self { boot }
    }

    /// The interface of device `slot`: the one that booted with the slot's
    /// MAC, or else (a VM whose devices have no such MACs) the slot-th in
    /// device order.
    pub fn name_of(&self, slot: usize) -> Option<&str> {
        let wanted = hull_proto::nic_mac(slot);
        let by_mac = self.boot.iter().find(|(_, mac)| *mac == Some(wanted));
        let any_slot_macs = self
            .boot
            .iter()
            .any(|(_, mac)| mac.is_some_and(|m| m[..5] == wanted[..5]));
        match by_mac {
            Some((name, _)) => Some(name),
            None if any_slot_macs => None,
            None => self.boot.get(slot).map(|(name, _)| name.as_str()),
        }
    }
}

/// Configures the VM's interfaces as `spec` says: its first interface is
/// device slot 0's, and so on.
pub fn configure(spec: &NetworkSpec, nics: &Nics) -> Result<(), NetworkError> {
    let wanted = spec
        .interfaces
        .iter()
        .map(parse_interface)
        .collect::<Result<Vec<_>, _>>()?;
    let names = (0..wanted.len())
        .map(|slot| nics.name_of(slot))
        .collect::<Option<Vec<_>>>()
        .ok_or(NetworkError::Missing {
            wanted: wanted.len(),
            found: nics.boot.len(),
        })?;
    for (name, interface) in names.into_iter().zip(&wanted) {
        apply(name, interface)?;
    }
    Ok(())
}

/// Configures device `slot`'s interface as `spec` says, or with `None`
/// takes its address and link down: a network joined or left while
/// containers run.
pub fn configure_slot(
    slot: usize,
    spec: Option<&InterfaceSpec>,
    nics: &Nics,
) -> Result<(), NetworkError> {
    let interface = spec.map(parse_interface).transpose()?;
    let name = nics.name_of(slot).ok_or(NetworkError::Missing {
        wanted: slot + 1,
        found: nics.boot.len(),
    })?;
    match interface {
        Some(interface) => apply(name, &interface),
        None => {
            sys::clear_ipv4_address(name).map_err(failed(name, "remove its address"))?;
            sys::set_link_down(name).map_err(failed(name, "take it down"))
        }
    }
}

/// The error of step `what` on interface `name`.
fn failed(name: &str, what: &'static str) -> impl FnOnce(std::io::Error) -> NetworkError {
    let interface = name.to_owned();
    move |source| NetworkError::Configure {
        interface,
        what,
        source,
    }
}

fn apply(name: &str, interface: &Interface) -> Result<(), NetworkError> {
    sys::set_mac_address(name, interface.mac).map_err(failed(name, "set its MAC address"))?;
    sys::set_ipv4_address(name, interface.address, interface.netmask)
        .map_err(failed(name, "set its address"))?;
    if let Some(mtu) = interface.mtu {
        sys::set_mtu(name, mtu).map_err(failed(name, "set its MTU"))?;
    }
    sys::set_link_up(name).map_err(failed(name, "bring it up"))?;
    for route in interface.routes_in_order() {
        sys::add_route(name, route.destination, route.netmask, route.gateway)
            .or_else(already_there)
            .map_err(failed(name, "add a route"))?;
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
            routes: Vec::new(),
        }
    }

    fn sys_class_net(interfaces: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, mac) in interfaces {
            fs::create_dir(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join("address"), format!("{mac}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn slots_are_found_by_boot_mac_whatever_order_the_kernel_named_them() {
        // The kernel probed the devices last first.
        let dir = sys_class_net(&[
            ("lo", "00:00:00:00:00:00"),
            ("eth0", &hull_proto::nic_mac_text(2)),
            ("eth1", &hull_proto::nic_mac_text(1)),
            ("eth2", &hull_proto::nic_mac_text(0)),
        ]);
        let nics = Nics::read(dir.path());
        assert_eq!(nics.name_of(0), Some("eth2"));
        assert_eq!(nics.name_of(1), Some("eth1"));
        assert_eq!(nics.name_of(2), Some("eth0"));
        // A slot the VM lacks is not some other slot's interface.
        assert_eq!(nics.name_of(3), None);
        assert!(matches!(
            configure_slot(3, None, &nics),
            Err(NetworkError::Missing {
                wanted: 4,
                found: 3
            })
        ));
    }

    #[test]
    fn devices_without_slot_macs_go_by_device_order() {
        let dir = sys_class_net(&[("eth1", "52:54:00:12:34:57"), ("eth0", "52:54:00:12:34:56")]);
        let nics = Nics::read(dir.path());
        assert_eq!(nics.name_of(0), Some("eth0"));
        assert_eq!(nics.name_of(1), Some("eth1"));
        assert_eq!(nics.name_of(2), None);
    }

    #[test]
    fn routes_go_on_the_link_first_then_by_gateway_then_default() {
        let mut spec = spec("10.1.2.3/32", Some("169.254.1.1"));
        spec.routes = vec![
            hull_proto::RouteSpec {
                destination: "10.244.0.0/16".into(),
                gateway: Some("169.254.1.1".into()),
            },
            hull_proto::RouteSpec {
                destination: "192.168.5.0/24".into(),
                gateway: None,
            },
        ];
        let interface = parse_interface(&spec).unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let route = |dst: &str, mask: &str, gateway: Option<&str>| Route {
            destination: ip(dst),
            netmask: ip(mask),
            gateway: gateway.map(ip),
        };
        assert_eq!(
            interface.routes_in_order(),
            vec![
                route("192.168.5.0", "255.255.255.0", None),
                route("169.254.1.1", "255.255.255.255", None),
                route("10.244.0.0", "255.255.0.0", Some("169.254.1.1")),
                route("0.0.0.0", "0.0.0.0", Some("169.254.1.1")),
            ]
        );
        spec.routes[0].destination = "10.244.0.0".into();
        assert!(matches!(
            parse_interface(&spec),
            Err(NetworkError::Route(_))
        ));
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
