//! Hull's nftables tables. `ip hull` translates addresses for bridge
//! networks (outbound NAT, published ports); `inet hull` filters: what
//! VMs' QEMU processes may reach from the host's own sockets (the default
//! network's traffic leaves from them), what bridge networks may reach on
//! the host, and isolation between networks. Both are rewritten in one
//! transaction from what should exist, so a crash or a restart never leaves
//! rules behind, and no other table of the host is touched.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use hull_vm::uids::VmUids;

use crate::store::Subnet;
use crate::Protocol;

pub const TABLE: &str = "hull";

/// Where an isolated network may not send: private and shared address
/// space (a LAN, a provider's metadata service at 169.254.169.254), the
/// host's loopback and what is not unicast. The internet is what is left.
pub const PRIVATE_RANGES: &str = "0.0.0.0/8, 10.0.0.0/8, 100.64.0.0/10, 127.0.0.0/8, \
169.254.0.0/16, 172.16.0.0/12, 192.168.0.0/16, 224.0.0.0/3";

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Subnet,
    /// Where the network's resolver listens.
    pub gateway: Ipv4Addr,
    pub internal: bool,
    /// Reaches only the internet, and is reached only by replies and its
    /// published ports.
    pub isolated: bool,
}

/// A published port of a container on a bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub protocol: Protocol,
    /// `None`: every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// Everything Hull's tables are made from.
#[derive(Debug, Clone)]
pub struct Ruleset<'a> {
    /// The uids that VMs' QEMU processes run as.
    pub vm_uids: VmUids,
    /// The host's name servers (`127.0.0.53`, or one on an address of the
    /// host's own), which QEMU's user-mode DNS forwards to and so must stay
    /// reachable.
    pub host_resolvers: &'a [IpAddr],
    pub bridges: &'a [BridgeRules],
    pub ports: &'a [PortRule],
}

impl Ruleset<'_> {
    /// The nft script that makes Hull's tables exactly this. Declaring a
    /// table before deleting it makes the deletion valid when it is absent.
    pub fn script(&self) -> String {
        let mut out = String::new();
        for family in ["ip", "inet"] {
            let _ = writeln!(out, "table {family} {TABLE}\ndelete table {family} {TABLE}");
        }
        if !self.bridges.is_empty() {
            self.nat(&mut out);
        }
        self.filter(&mut out);
        out
    }

    fn nat(&self, out: &mut String) {
        let _ = writeln!(out, "table ip {TABLE} {{");
        // Published ports are reached at any local address, from outside
        // (prerouting) and from the host itself (output).
        // nft names the dstnat priority only in prerouting; -100 is its value.
        for (chain, priority) in [("prerouting", "dstnat"), ("output", "-100")] {
            let _ = writeln!(
                out,
                "  chain {chain} {{\n    type nat hook {chain} priority {priority}; policy accept;\n    fib daddr type local jump published\n  }}"
            );
        }
        let _ = writeln!(out, "  chain published {{");
        for port in self.ports {
            let daddr = port
                .host_ip
                .filter(|ip| !ip.is_unspecified())
                .map(|ip| format!("ip daddr {ip} "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    {daddr}{proto} dport {} dnat to {}:{}",
                port.host_port,
                port.container_ip,
                port.container_port,
                proto = port.protocol,
            );
        }
        let _ = writeln!(out, "  }}");
        let _ = writeln!(
            out,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
        );
        for bridge in self.bridges {
            let name = &bridge.bridge;
            // Connections to a published port from the host's loopback leave
            // with a loopback source, which the container could not answer.
            let _ = writeln!(
                out,
                "    oifname \"{name}\" ip saddr 127.0.0.0/8 masquerade"
            );
            if !bridge.internal {
                let _ = writeln!(
                    out,
                    "    ip saddr {subnet} oifname != \"{name}\" masquerade",
                    subnet = bridge.subnet
                );
            }
        }
        let _ = writeln!(out, "  }}\n}}");
    }

    fn filter(&self, out: &mut String) {
        let _ = writeln!(out, "table inet {TABLE} {{");
        let uids = self.vm_uids.range();
        let _ = writeln!(
            out,
            "  chain output {{\n    type filter hook output priority filter; policy accept;\n    meta skuid {}-{} jump vm_output\n  }}",
            uids.start(),
            uids.end()
        );
        // The default network's connections are QEMU's own: this runs after
        // the nat output chain, so a published port of a bridge network has
        // its container's address here. Only Hull's own translations pass:
        // one the host's other tables make may lead to the host itself.
        let _ = writeln!(
            out,
            "  chain vm_output {{\n    ct state established,related accept"
        );
        let published: BTreeSet<_> = self
            .ports
            .iter()
            .map(|p| (p.container_ip, p.protocol.to_string(), p.container_port))
            .collect();
        for (address, protocol, port) in published {
            let _ = writeln!(
                out,
                "    ct status dnat ip daddr {address} {protocol} dport {port} accept"
            );
        }
        for resolver in self.host_resolvers {
            let family = if resolver.is_ipv4() { "ip" } else { "ip6" };
            let _ = writeln!(
                out,
                "    {family} daddr {resolver} meta l4proto {{ tcp, udp }} th dport 53 accept"
            );
        }
        let _ = writeln!(out, "    ip daddr 127.0.0.0/8 jump refuse");
        let _ = writeln!(out, "    ip6 daddr ::1 jump refuse");
        // Every other address of the host (its LAN address, a bridge's
        // gateway, a link's address) and so the services bound there.
        let _ = writeln!(out, "    fib daddr type local jump refuse");
        for bridge in self.bridges {
            let _ = writeln!(out, "    ip daddr {} jump refuse", bridge.subnet);
        }
        let _ = writeln!(out, "  }}");
        // A refused connection fails at once rather than after a timeout.
        let _ = writeln!(
            out,
            "  chain refuse {{\n    meta l4proto tcp reject with tcp reset\n    reject\n  }}"
        );
        if !self.bridges.is_empty() {
            self.bridge_filter(out);
        }
        let _ = writeln!(out, "}}");
    }

    fn bridge_filter(&self, out: &mut String) {
        let prefix = crate::BRIDGE_PREFIX;
        let _ = writeln!(
            out,
            "  chain input {{\n    type filter hook input priority filter; policy accept;\n    iifname \"{prefix}*\" jump bridge_input\n  }}"
        );
        // Published ports were translated in prerouting and are forwarded,
        // never input: what reaches the host from a bridge is its resolver,
        // asked from the network's own subnet (a source from elsewhere would
        // have the answer sent there), or nothing. What is left to come in
        // is addressed to the host (its gateway, its other addresses, and
        // loopback: bridges route 127.0.0.0/8 for published ports there) or
        // broadcast: all dropped, not refused, so that a spoofed source
        // gets nothing back either.
        let _ = writeln!(
            out,
            "  chain bridge_input {{\n    ct state established,related accept"
        );
        for bridge in self.bridges {
            let _ = writeln!(
                out,
                "    iifname \"{}\" ip saddr {} ip daddr {} udp dport 53 accept",
                bridge.bridge, bridge.subnet, bridge.gateway
            );
        }
        let _ = writeln!(out, "    drop\n  }}");

        let _ = writeln!(
            out,
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
        );
        for bridge in self.bridges {
            let name = &bridge.bridge;
            if bridge.internal {
                let _ = writeln!(out, "    iifname \"{name}\" oifname != \"{name}\" drop");
                let _ = writeln!(out, "    oifname \"{name}\" iifname != \"{name}\" drop");
            } else {
                let _ = writeln!(
                    out,
                    "    iifname \"{name}\" oifname \"{prefix}*\" oifname != \"{name}\" drop"
                );
            }
            if bridge.isolated {
                // A forged source would have replies (which come in as
                // established) sent to whoever holds that address.
                let _ = writeln!(
                    out,
                    "    iifname \"{name}\" ip saddr != {} drop",
                    bridge.subnet
                );
                // Its own subnet is switched on the bridge, never routed.
                let _ = writeln!(
                    out,
                    "    iifname \"{name}\" oifname != \"{name}\" meta nfproto ipv6 drop"
                );
                let _ = writeln!(
                    out,
                    "    iifname \"{name}\" oifname != \"{name}\" ip daddr {{ {PRIVATE_RANGES} }} jump refuse"
                );
            }
        }
        // After every drop above, so that nothing another network may not
        // send is let in by these.
        for bridge in self.bridges.iter().filter(|b| b.isolated) {
            let name = &bridge.bridge;
            let _ = writeln!(
                out,
                "    oifname \"{name}\" iifname != \"{name}\" ct state established,related accept"
            );
            let _ = writeln!(
                out,
                "    oifname \"{name}\" iifname != \"{name}\" ct status dnat accept"
            );
            let _ = writeln!(out, "    oifname \"{name}\" iifname != \"{name}\" drop");
        }
        let _ = writeln!(out, "  }}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UIDS: VmUids = VmUids {
        first: 1_900_000_000,
        count: 65_536,
    };

    fn bridges() -> [BridgeRules; 2] {
        [
            BridgeRules {
                bridge: "hb-aaaa".into(),
                subnet: "10.89.1.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 89, 1, 1),
                internal: false,
                isolated: false,
            },
            BridgeRules {
                bridge: "hb-bbbb".into(),
                subnet: "10.89.2.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 89, 2, 1),
                internal: true,
                isolated: false,
            },
        ]
    }

    /// The lines of one chain of the script, trimmed.
    use crate::nft_test::chain;

    #[test]
    fn without_networks_vms_are_still_kept_off_the_hosts_loopback() {
        let resolvers = ["127.0.0.53".parse().unwrap()];
        let script = Ruleset {
            vm_uids: UIDS,
            host_resolvers: &resolvers,
            bridges: &[],
            ports: &[],
        }
        .script();
        assert!(script.starts_with(
            "table ip hull\ndelete table ip hull\ntable inet hull\ndelete table inet hull\n"
        ));
        assert!(
            !script.contains("table ip hull {"),
            "no NAT without bridges"
        );
        assert!(script.contains("meta skuid 1900000000-1900065535 jump vm_output"));
        assert_eq!(
            chain(&script, "vm_output"),
            [
                "ct state established,related accept",
                "ip daddr 127.0.0.53 meta l4proto { tcp, udp } th dport 53 accept",
                "ip daddr 127.0.0.0/8 jump refuse",
                "ip6 daddr ::1 jump refuse",
                "fib daddr type local jump refuse",
            ]
        );
        assert!(chain(&script, "input").is_empty());
    }

    #[test]
    fn vms_reach_the_hosts_own_addresses_only_at_its_resolvers_and_hulls_ports() {
        let resolvers = ["192.168.1.5".parse().unwrap()];
        let ports = [
            PortRule {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                container_ip: Ipv4Addr::new(10, 89, 1, 2),
                container_port: 80,
            },
            // The same server published twice is let through once.
            PortRule {
                protocol: Protocol::Tcp,
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 8081,
                container_ip: Ipv4Addr::new(10, 89, 1, 2),
                container_port: 80,
            },
        ];
        let script = Ruleset {
            vm_uids: UIDS,
            host_resolvers: &resolvers,
            bridges: &bridges(),
            ports: &ports,
        }
        .script();
        let output = chain(&script, "vm_output");
        assert!(!output.contains(&"ct status dnat accept"), "{output:?}");
        let published = "ct status dnat ip daddr 10.89.1.2 tcp dport 80 accept";
        assert_eq!(output.iter().filter(|l| **l == published).count(), 1);
        let at = |line: &str| output.iter().position(|l| *l == line).unwrap();
        let local = at("fib daddr type local jump refuse");
        // A resolver on an address of the host's own still answers, and so
        // do published ports; the network behind them does not.
        assert!(at(published) < local);
        assert!(at("ip daddr 192.168.1.5 meta l4proto { tcp, udp } th dport 53 accept") < local);
        assert!(output.contains(&"ip daddr 10.89.1.0/24 jump refuse"));
    }

    #[test]
    fn vms_reach_no_bridge_network_from_their_own_sockets() {
        let bridges = bridges();
        let script = Ruleset {
            vm_uids: VmUids {
                first: 5000,
                count: 10,
            },
            host_resolvers: &["::1".parse().unwrap()],
            bridges: &bridges,
            ports: &[],
        }
        .script();
        assert!(script.contains("meta skuid 5000-5009 jump vm_output"));
        let output = chain(&script, "vm_output");
        assert!(output.contains(&"ip6 daddr ::1 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(output.contains(&"ip daddr 10.89.1.0/24 jump refuse"));
        assert!(output.contains(&"ip daddr 10.89.2.0/24 jump refuse"));
        // Resolvers are let through before loopback is refused.
        let resolver = output.iter().position(|l| l.contains("th dport 53"));
        let loopback = output.iter().position(|l| l.contains("::1 jump refuse"));
        assert!(resolver < loopback, "{output:?}");
    }

    #[test]
    fn bridges_reach_the_host_only_at_their_resolver_from_their_own_subnet() {
        let bridges = bridges();
        let script = Ruleset {
            vm_uids: UIDS,
            host_resolvers: &[],
            bridges: &bridges,
            ports: &[],
        }
        .script();
        assert!(chain(&script, "input").contains(&"iifname \"hb-*\" jump bridge_input"));
        assert_eq!(
            chain(&script, "bridge_input"),
            [
                "ct state established,related accept",
                "iifname \"hb-aaaa\" ip saddr 10.89.1.0/24 ip daddr 10.89.1.1 udp dport 53 accept",
                "iifname \"hb-bbbb\" ip saddr 10.89.2.0/24 ip daddr 10.89.2.1 udp dport 53 accept",
                "drop",
            ]
        );
    }

    #[test]
    fn networks_get_nat_isolation_and_their_ports() {
        let bridges = bridges();
        let ports = [
            PortRule {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                container_ip: Ipv4Addr::new(10, 89, 1, 2),
                container_port: 80,
            },
            PortRule {
                protocol: Protocol::Udp,
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 5353,
                container_ip: Ipv4Addr::new(10, 89, 1, 2),
                container_port: 53,
            },
        ];
        let rules = Ruleset {
            vm_uids: UIDS,
            host_resolvers: &[],
            bridges: &bridges,
            ports: &ports,
        }
        .script();
        assert!(rules.contains("    tcp dport 8080 dnat to 10.89.1.2:80\n"));
        assert!(rules.contains("    ip daddr 127.0.0.1 udp dport 5353 dnat to 10.89.1.2:53\n"));
        assert!(rules.contains("ip saddr 10.89.1.0/24 oifname != \"hb-aaaa\" masquerade"));
        let nat = chain(&rules, "postrouting");
        assert!(
            !nat.iter().any(|l| l.contains("10.89.2.0/24")),
            "internal: no NAT"
        );
        assert!(rules.contains("iifname \"hb-aaaa\" oifname \"hb-*\" oifname != \"hb-aaaa\" drop"));
        assert!(rules.contains("iifname \"hb-bbbb\" oifname != \"hb-bbbb\" drop"));
    }

    #[test]
    fn an_isolated_network_reaches_only_the_internet_and_only_replies_come_in() {
        let [open, internal] = bridges();
        let isolated = BridgeRules {
            bridge: "hb-cccc".into(),
            subnet: "10.128.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 128, 0, 1),
            internal: false,
            isolated: true,
        };
        let bridges = [isolated, open, internal];
        let script = Ruleset {
            vm_uids: UIDS,
            host_resolvers: &[],
            bridges: &bridges,
            ports: &[],
        }
        .script();
        let forward = chain(&script, "forward");
        let at = |line: &str| {
            forward
                .iter()
                .position(|l| *l == line)
                .unwrap_or_else(|| panic!("{line} in {forward:?}"))
        };
        at("iifname \"hb-cccc\" oifname \"hb-*\" oifname != \"hb-cccc\" drop");
        at("iifname \"hb-cccc\" oifname != \"hb-cccc\" meta nfproto ipv6 drop");
        let spoofed = at("iifname \"hb-cccc\" ip saddr != 10.128.0.0/24 drop");
        let private = at(&format!(
            "iifname \"hb-cccc\" oifname != \"hb-cccc\" ip daddr {{ {PRIVATE_RANGES} }} jump refuse"
        ));
        let replies =
            at("oifname \"hb-cccc\" iifname != \"hb-cccc\" ct state established,related accept");
        let inward = at("oifname \"hb-cccc\" iifname != \"hb-cccc\" drop");
        assert!(replies < inward);
        // Every other network's drops come before anything is let in.
        let last_drop = at("oifname \"hb-bbbb\" iifname != \"hb-bbbb\" drop");
        assert!(
            spoofed < replies && private < replies && last_drop < replies,
            "{forward:?}"
        );
        // Out through NAT, as any network that is not internal.
        assert!(script.contains("ip saddr 10.128.0.0/24 oifname != \"hb-cccc\" masquerade"));
        // The host: its resolver only, as for every bridge.
        assert!(chain(&script, "bridge_input").contains(
            &"iifname \"hb-cccc\" ip saddr 10.128.0.0/24 ip daddr 10.128.0.1 udp dport 53 accept"
        ));
        // Other networks' rules are as they were.
        assert!(!forward
            .iter()
            .any(|l| l.contains("oifname \"hb-aaaa\" iifname")));
        for range in [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "100.64.0.0/10",
        ] {
            assert!(PRIVATE_RANGES.contains(range), "{range}");
        }
    }
}
