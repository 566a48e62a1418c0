//! The pod's network. CNI (or whoever made the network namespace the spec
//! names) left an interface with the pod's address in that namespace; the
//! VM takes it over. A tap beside it in the namespace is joined to it by tc
//! redirects both ways, and the guest's NIC gets the interface's MAC,
//! address, MTU and default route. So frames pass between the pod's network
//! and the guest untouched, and nothing CNI set up is changed: the
//! interface keeps its address (the namespace's own stack no longer sees
//! its traffic), so CNI's DEL finds what its ADD made. This is Kata's
//! "tcfilter" model; it needs neither a bridge nor routes on the host.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hull_proto::{InterfaceSpec, NetworkSpec, RouteSpec};
use hull_vm::NetBackend;
use serde::Deserialize;
use tracing::{info, warn};

/// The tap the shim makes in the pod's namespace; one VM per namespace.
pub const TAP_NAME: &str = "hull0";

#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error("cannot open the network namespace {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` in the network namespace {} failed: {message}", .netns.display())]
    Command {
        command: String,
        netns: PathBuf,
        message: String,
    },
    #[error("cannot read what `{command}` printed")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// One link as `ip -j addr show` prints it.
#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<Address>,
}

#[derive(Debug, Deserialize)]
struct Address {
    family: String,
    local: String,
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

/// One route as `ip -j route show` prints it.
#[derive(Debug, Deserialize)]
struct Route {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: String,
    /// `kernel` for the route the address itself brings.
    #[serde(default)]
    protocol: String,
}

/// The pod's interface, as the guest takes it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub name: String,
    pub mac: String,
    /// IPv4 address with its prefix length.
    pub address: String,
    pub gateway: Option<String>,
    pub mtu: u32,
    /// Its other routes (not its subnet's, not the default).
    pub routes: Vec<RouteSpec>,
}

/// The interface the VM takes over: the first Ethernet link with a global
/// IPv4 address (`eth0` under CNI), with the default route through it.
/// `None` when the namespace has none (only loopback, as `ctr run` gives).
fn pod_interface(links: &[Link], routes: &[Route]) -> Option<PodInterface> {
    let (link, address) = links
        .iter()
        .filter(|l| l.link_type == "ether" && l.ifname != TAP_NAME)
        .find_map(|l| {
            l.addr_info
                .iter()
                .find(|a| a.family == "inet" && a.scope == "global")
                .map(|a| (l, a))
        })?;
    let through_link = || routes.iter().filter(|r| r.dev == link.ifname);
    let gateway = through_link()
        .find(|r| r.dst == "default")
        .and_then(|r| r.gateway.clone());
    let others = through_link()
        .filter(|r| r.dst != "default" && r.protocol != "kernel")
        .map(|r| RouteSpec {
            // `ip` prints a single address without its prefix length.
            destination: match r.dst.contains('/') {
                true => r.dst.clone(),
                false => format!("{}/32", r.dst),
            },
            gateway: r.gateway.clone(),
        })
        .collect();
    Some(PodInterface {
        name: link.ifname.clone(),
        mac: link.address.clone(),
        address: format!("{}/{}", address.local, address.prefixlen),
        gateway,
        mtu: link.mtu,
        routes: others,
    })
}

/// A network namespace, open, in which commands run.
struct Namespace {
    path: PathBuf,
    file: File,
}

/// The pod's network namespace with the tap wired to its interface.
pub struct PodNetwork {
    namespace: Namespace,
    interface: PodInterface,
}

impl PodNetwork {
    /// Finds the pod's interface in `netns` and wires a tap to it; `None`
    /// when the namespace has no interface to take over.
    pub fn attach(netns: &Path) -> Result<Option<Self>, PodNetError> {
        let namespace = Namespace::open(netns)?;
        let links: Vec<Link> = namespace.json(&["ip", "-j", "addr", "show"])?;
        let routes: Vec<Route> = namespace.json(&["ip", "-j", "-4", "route", "show"])?;
        let Some(interface) = pod_interface(&links, &routes) else {
            return Ok(None);
        };
        let network = Self {
            namespace,
            interface,
        };
        network.wire()?;
        info!(
            netns = %netns.display(),
            interface = %network.interface.name,
            address = %network.interface.address,
            "the VM takes over the pod's interface"
        );
        Ok(Some(network))
    }

    /// The tap, up, and a redirect of everything each side receives to the
    /// other. A tap left by a shim that died is replaced.
    fn wire(&self) -> Result<(), PodNetError> {
        let (ns, veth) = (&self.namespace, self.interface.name.as_str());
        let mtu = self.interface.mtu.to_string();
        if ns.run(&["ip", "link", "show", TAP_NAME]).is_ok() {
            ns.run(&["ip", "link", "del", TAP_NAME])?;
        }
        ns.run(&["ip", "tuntap", "add", "dev", TAP_NAME, "mode", "tap"])?;
        ns.run(&["ip", "link", "set", TAP_NAME, "mtu", &mtu, "up"])?;
        for (from, to) in [(veth, TAP_NAME), (TAP_NAME, veth)] {
            // A redirect an earlier shim left goes first.
            let _ = ns.run(&["tc", "qdisc", "del", "dev", from, "ingress"]);
            ns.run(&["tc", "qdisc", "add", "dev", from, "ingress"])?;
            ns.run(&[
                "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ])?;
        }
        Ok(())
    }

    /// The VM's network device: the tap, opened in the namespace for QEMU.
    pub fn backend(&self) -> NetBackend {
        NetBackend::Tap {
            ifname: TAP_NAME.into(),
            netns: Some(self.namespace.path.clone()),
        }
    }

    /// What the agent configures: the interface as the pod had it. Name
    /// servers come from the `/etc/resolv.conf` CRI binds into each
    /// container, so none are given here.
    pub fn guest_network(&self) -> NetworkSpec {
        let interface = &self.interface;
        NetworkSpec {
            interfaces: vec![InterfaceSpec {
                mac: interface.mac.clone(),
                address: interface.address.clone(),
                gateway: interface.gateway.clone(),
                mtu: (interface.mtu != 0 && interface.mtu != 1500).then_some(interface.mtu),
                routes: interface.routes.clone(),
            }],
            ..Default::default()
        }
    }

    /// Removes the tap and the veth's redirect, leaving the namespace as
    /// CNI made it. A namespace already gone took both with it.
    pub fn detach(&self) {
        let veth = self.interface.name.as_str();
        for command in [
            &["tc", "qdisc", "del", "dev", veth, "ingress"][..],
            &["ip", "link", "del", TAP_NAME][..],
        ] {
            if let Err(err) = self.namespace.run(command) {
                warn!(error = %err, "cannot undo the pod network's wiring");
            }
        }
    }
}

impl Namespace {
    fn open(path: &Path) -> Result<Self, PodNetError> {
        let file = File::open(path).map_err(|source| PodNetError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Runs `command` in the namespace and returns what it printed.
    fn run(&self, command: &[&str]) -> Result<Vec<u8>, PodNetError> {
        let failed = |message: String| PodNetError::Command {
            command: command.join(" "),
            netns: self.path.clone(),
            message,
        };
        let fd: RawFd = self.file.as_raw_fd();
        let mut process = Command::new(command[0]);
        process
            .args(&command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; `fd` stays open (owned by
        // `self.file`) until the child has exec'd.
        unsafe {
            process.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = process.output().map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        Ok(output.stdout)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, command: &[&str]) -> Result<T, PodNetError> {
        let output = self.run(command)?;
        serde_json::from_slice(&output).map_err(|source| PodNetError::Parse {
            command: command.join(" "),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: &str = r#"[
        {"ifindex":1,"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00","mtu":65536,
         "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
        {"ifindex":3,"ifname":"eth0","link_type":"ether","address":"ae:82:ad:b7:b6:42","mtu":1450,
         "addr_info":[{"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"},
                      {"family":"inet","local":"10.88.0.7","prefixlen":16,"scope":"global"}]}
    ]"#;
    const ROUTES: &str = r#"[
        {"dst":"default","gateway":"10.88.0.1","dev":"eth0","flags":[]},
        {"dst":"10.88.0.0/16","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.88.0.7","flags":[]}
    ]"#;

    fn parse(links: &str, routes: &str) -> Option<PodInterface> {
        let links: Vec<Link> = serde_json::from_str(links).unwrap();
        let routes: Vec<Route> = serde_json::from_str(routes).unwrap();
        pod_interface(&links, &routes)
    }

    #[test]
    fn the_cni_interface_is_taken_with_its_gateway_and_mtu() {
        assert_eq!(
            parse(LINKS, ROUTES),
            Some(PodInterface {
                name: "eth0".into(),
                mac: "ae:82:ad:b7:b6:42".into(),
                address: "10.88.0.7/16".into(),
                gateway: Some("10.88.0.1".into()),
                mtu: 1450,
                routes: Vec::new(),
            })
        );
    }

    #[test]
    fn a_namespace_with_loopback_only_has_no_pod_interface() {
        let lo_only = r#"[{"ifname":"lo","link_type":"loopback","addr_info":[
            {"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]}]"#;
        assert_eq!(parse(lo_only, "[]"), None);
    }

    #[test]
    fn the_tap_of_an_earlier_shim_is_not_the_pod_interface() {
        let links = r#"[
            {"ifname":"hull0","link_type":"ether","address":"02:00:00:00:00:09","mtu":1500,
             "addr_info":[{"family":"inet","local":"192.168.9.9","prefixlen":24,"scope":"global"}]},
            {"ifname":"eth0","link_type":"ether","address":"02:00:00:00:00:01","mtu":1500,
             "addr_info":[{"family":"inet","local":"10.1.2.3","prefixlen":32,"scope":"global"}]}
        ]"#;
        let routes = r#"[{"dst":"default","gateway":"169.254.1.1","dev":"eth0"},
            {"dst":"169.254.1.1","dev":"eth0","scope":"link"},
            {"dst":"10.96.0.0/12","gateway":"169.254.1.1","dev":"eth0","protocol":"static"},
            {"dst":"192.168.9.0/24","dev":"hull0","protocol":"kernel","scope":"link"}]"#;
        let interface = parse(links, routes).unwrap();
        assert_eq!(interface.name, "eth0");
        assert_eq!(interface.address, "10.1.2.3/32");
        assert_eq!(interface.gateway.as_deref(), Some("169.254.1.1"));
        let route = |destination: &str, gateway: Option<&str>| RouteSpec {
            destination: destination.into(),
            gateway: gateway.map(Into::into),
        };
        assert_eq!(
            interface.routes,
            vec![
                route("169.254.1.1/32", None),
                route("10.96.0.0/12", Some("169.254.1.1")),
            ]
        );
    }

    #[test]
    fn the_guest_gets_the_pods_mac_and_an_mtu_only_when_unusual() {
        let network = |mtu| NetworkSpec {
            interfaces: vec![InterfaceSpec {
                mac: "ae:82:ad:b7:b6:42".into(),
                address: "10.88.0.7/16".into(),
                gateway: Some("10.88.0.1".into()),
                mtu,
                routes: Vec::new(),
            }],
            ..Default::default()
        };
        let mut interface = parse(LINKS, ROUTES).unwrap();
        let guest = |interface: &PodInterface| {
            PodNetwork {
                namespace: Namespace::open(Path::new("/dev/null")).unwrap(),
                interface: interface.clone(),
            }
            .guest_network()
        };
        assert_eq!(guest(&interface), network(Some(1450)));
        interface.mtu = 1500;
        assert_eq!(guest(&interface), network(None));
    }
}
