//! Hull's nftables table: outbound NAT for each bridge network, published
//! ports, and isolation between networks. The whole table is rewritten in
//! one transaction from what should exist, so a crash or a restart never
//! leaves rules behind, and no other table of the host is touched.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::store::Subnet;
use super::Protocol;

pub const TABLE: &str = "hull";

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Subnet,
    pub internal: bool,
}

/// A host port forwarded to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub protocol: Protocol,
    /// `None`: every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

/// The nft script that makes Hull's table exactly this. Declaring the
/// table before deleting it makes the deletion valid when it is absent.
pub fn ruleset(bridges: &[BridgeRules], ports: &[PortRule]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table ip {TABLE}\ndelete table ip {TABLE}");
    if bridges.is_empty() {
        return out;
    }
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
    for port in ports {
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
    for bridge in bridges {
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
    let _ = writeln!(out, "  }}");

    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
    );
    for bridge in bridges {
        let name = &bridge.bridge;
        if bridge.internal {
            let _ = writeln!(out, "    iifname \"{name}\" oifname != \"{name}\" drop");
            let _ = writeln!(out, "    oifname \"{name}\" iifname != \"{name}\" drop");
        } else {
            let _ = writeln!(
                out,
                "    iifname \"{name}\" oifname \"{prefix}*\" oifname != \"{name}\" drop",
                prefix = super::BRIDGE_PREFIX
            );
        }
    }
    let _ = writeln!(out, "  }}\n}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_networks_the_table_is_only_removed() {
        assert_eq!(ruleset(&[], &[]), "table ip hull\ndelete table ip hull\n");
    }

    #[test]
    fn networks_get_nat_isolation_and_their_ports() {
        let bridges = [
            BridgeRules {
                bridge: "hb-aaaa".into(),
                subnet: "10.89.1.0/24".parse().unwrap(),
                internal: false,
            },
            BridgeRules {
                bridge: "hb-bbbb".into(),
                subnet: "10.89.2.0/24".parse().unwrap(),
                internal: true,
            },
        ];
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
        let rules = ruleset(&bridges, &ports);
        assert!(rules.starts_with("table ip hull\ndelete table ip hull\n"));
        assert!(rules.contains("    tcp dport 8080 dnat to 10.89.1.2:80\n"));
        assert!(rules.contains("    ip daddr 127.0.0.1 udp dport 5353 dnat to 10.89.1.2:53\n"));
        assert!(rules.contains("ip saddr 10.89.1.0/24 oifname != \"hb-aaaa\" masquerade"));
        assert!(!rules.contains("ip saddr 10.89.2.0/24"), "internal: no NAT");
        assert!(rules.contains("iifname \"hb-aaaa\" oifname \"hb-*\" oifname != \"hb-aaaa\" drop"));
        assert!(rules.contains("iifname \"hb-bbbb\" oifname != \"hb-bbbb\" drop"));
    }
}
