//! The nftables chains of attached FIPs, in Hull's own `ip hull` table
//! (declared again here: nft merges the declarations of one script, and the
//! script's first lines delete the whole table, so these go and come with
//! the rest of Hull's rules in one transaction).
//!
//! - `fip_prerouting`, nat prerouting at priority -110 (before `dstnat`,
//!   where Hull's published ports are translated): a new connection to an
//!   attached FIP at a port its container published goes to the container
//!   (while it is stopped, to its address, kept for it, where nothing
//!   answers);
//!   a new connection to a service's FIP at the service's port goes on to
//!   the service's own chain (-105), which balances it as it balances
//!   those to the service's address, or, for a service hulld's proxy
//!   carries, to the proxy at the service's address;
//!   any other new connection to an address of the pool is dropped, so a
//!   FIP opens no port, and in `address` mode no service of the host nor
//!   another container's host port is reached at it.
//! - `fip_postrouting`, nat postrouting at priority 90 (before `srcnat`,
//!   where Hull masquerades bridge networks; the first translation of a
//!   connection wins): the container's connections out of the uplink leave
//!   from its FIP.
//!
//! Replies never pass nat chains: conntrack translates them back.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{AttachedFip, FipConfig, ServiceFip};
use crate::firewall::TABLE;

/// Before `dstnat` (-100).
pub const PREROUTING_PRIORITY: i32 = -110;
/// Before `srcnat` (100).
pub const POSTROUTING_PRIORITY: i32 = 90;

/// The chains for FIPs `attached` to containers and to `services` on
/// `config`'s uplink.
pub fn script(config: &FipConfig, attached: &[AttachedFip], services: &[ServiceFip]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table ip {TABLE} {{");
    let _ = writeln!(
        out,
        "  chain fip_prerouting {{\n    type nat hook prerouting priority {PREROUTING_PRIORITY}; policy accept;"
    );
    for fip in attached {
        let ports: BTreeSet<(u16, String)> = fip
            .ports
            .iter()
            .map(|(protocol, port)| (*port, protocol.to_string()))
            .collect();
        for (port, protocol) in ports {
            let _ = writeln!(
                out,
                "    ip daddr {} {protocol} dport {port} dnat to {}:{port}",
                fip.ip, fip.container_ip
            );
        }
    }
    for service in services {
        let matches = format!("ip daddr {} tcp dport {}", service.ip, service.port);
        let _ = if service.proxied {
            writeln!(
                out,
                "    {matches} dnat to {}:{}",
                service.vip, service.port
            )
        } else {
            writeln!(out, "    {matches} accept")
        };
    }
    let _ = writeln!(out, "    ip daddr {} drop\n  }}", config.pool);
    let _ = writeln!(
        out,
        "  chain fip_postrouting {{\n    type nat hook postrouting priority {POSTROUTING_PRIORITY}; policy accept;"
    );
    for fip in attached {
        let _ = writeln!(
            out,
            "    oifname \"{}\" ip saddr {} snat to {}",
            config.uplink, fip.container_ip, fip.ip
        );
    }
    let _ = writeln!(out, "  }}\n}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fip::UplinkMode;
    use crate::Protocol;

    fn config() -> FipConfig {
        FipConfig {
            pool: "198.51.100.16/28".parse().unwrap(),
            uplink: "eth1".into(),
            mode: UplinkMode::ProxyArp,
        }
    }

    use crate::nft_test::chain;

    #[test]
    fn attached_fips_reach_published_ports_only_and_are_the_source_out() {
        let attached = [
            AttachedFip {
                ip: "198.51.100.17".parse().unwrap(),
                container_id: "a".repeat(64),
                container_ip: "10.128.0.2".parse().unwrap(),
                bridge: "hb-aaaa".into(),
                ports: vec![
                    (Protocol::Tcp, 80),
                    (Protocol::Udp, 53),
                    (Protocol::Tcp, 80),
                ],
            },
            // Published nothing: no port answers, but the address is its own.
            AttachedFip {
                ip: "198.51.100.18".parse().unwrap(),
                container_id: "b".repeat(64),
                container_ip: "10.128.1.2".parse().unwrap(),
                bridge: "hb-bbbb".into(),
                ports: Vec::new(),
            },
        ];
        let script = script(&config(), &attached, &[]);
        assert!(script.starts_with("table ip hull {\n"));
        assert_eq!(
            chain(&script, "fip_prerouting"),
            [
                "type nat hook prerouting priority -110; policy accept;",
                "ip daddr 198.51.100.17 udp dport 53 dnat to 10.128.0.2:53",
                "ip daddr 198.51.100.17 tcp dport 80 dnat to 10.128.0.2:80",
                "ip daddr 198.51.100.16/28 drop",
            ]
        );
        assert_eq!(
            chain(&script, "fip_postrouting"),
            [
                "type nat hook postrouting priority 90; policy accept;",
                "oifname \"eth1\" ip saddr 10.128.0.2 snat to 198.51.100.17",
                "oifname \"eth1\" ip saddr 10.128.1.2 snat to 198.51.100.18",
            ]
        );
    }

    #[test]
    fn without_attached_fips_the_pool_is_closed() {
        let script = script(&config(), &[], &[]);
        assert_eq!(
            chain(&script, "fip_prerouting")[1..],
            ["ip daddr 198.51.100.16/28 drop"]
        );
        assert_eq!(chain(&script, "fip_postrouting").len(), 1);
    }

    #[test]
    fn a_services_fip_opens_its_port_to_the_balancer_only() {
        let service = |ip: &str, vip: &str, proxied| ServiceFip {
            ip: ip.parse().unwrap(),
            service_id: "s".into(),
            vip: vip.parse().unwrap(),
            port: 80,
            bridge: "hb-aaaa".into(),
            proxied,
        };
        let services = [
            service("198.51.100.19", "10.128.0.9", false),
            service("198.51.100.20", "10.128.0.10", true),
        ];
        let script = script(&config(), &[], &services);
        assert_eq!(
            chain(&script, "fip_prerouting")[1..],
            [
                // On to the service's own translation.
                "ip daddr 198.51.100.19 tcp dport 80 accept",
                // To the proxy, listening at the service's address.
                "ip daddr 198.51.100.20 tcp dport 80 dnat to 10.128.0.10:80",
                "ip daddr 198.51.100.16/28 drop",
            ]
        );
        // A service's replicas go out from its FIP by the service's chain.
        assert_eq!(chain(&script, "fip_postrouting").len(), 1);
    }
}
