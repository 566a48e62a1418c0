//! The nftables chains of services, in Hull's own `ip hull` table (and
//! one filter chain in `inet hull`), written with the rest of Hull's rules
//! in one transaction.
//!
//! - `service_prerouting` and `service_output`, nat at priority -105 (after
//!   the FIPs' -110, before `dstnat`'s published ports): a new TCP
//!   connection to a service's address at its port, from the bridge of the
//!   service's network or from the host, is translated to one of its
//!   healthy replicas, chosen by `numgen inc` (round robin) or by
//!   `jhash` of the client's address (a client keeps its replica while the
//!   set of healthy replicas stays the same). Only a connection's first
//!   packet passes nat chains: conntrack keeps its choice. With no healthy
//!   replica the connection is dropped.
//! - `service_postrouting`, nat postrouting at 95 (before `srcnat`): a
//!   connection to a service leaves masqueraded to the bridge's gateway.
//!   The client and the replica are most often on one bridge: without it
//!   the replica would answer the client straight over the bridge, from an
//!   address the client never asked, and the client would reset it.
//! - A proxied service (HTTP, `leastconn`, session affinity) is not
//!   translated: hulld's proxy listens on its address and port itself, and
//!   `service_input`, jumped to first from the bridges' input chain (which
//!   drops what a container sends the host), lets its network's bridge
//!   reach that port; `service_guard` keeps every other interface from
//!   it. The proxy's own connections to replicas leave from
//!   the host, as its health checks do.
//! - A service's FIP (let on by `fip_prerouting`) is translated as its
//!   address is, from anywhere; a connection to it from a bridge leaves
//!   masqueraded as above, one from the uplink keeps its client's address.
//!   The replicas in the balancer go out of the uplink from the FIP. For a
//!   proxied service `fip_prerouting` sends it to the proxy, and
//!   `service_guard` lets it by.
//! - `service_redirects`, filter output: the host routes these connections
//!   back out of the bridge they came in on, for which Linux sends the
//!   client an ICMP redirect that conntrack would turn into "reach the
//!   service's address through the replica"; they are dropped.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::Algorithm;
use crate::firewall::TABLE;

/// After the FIPs' chain (-110), before `dstnat` (-100).
pub const DNAT_PRIORITY: i32 = -105;
/// Before `srcnat` (100).
pub const SNAT_PRIORITY: i32 = 95;

/// A service as its rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// The bridge of the service's network.
    pub bridge: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub container_port: u16,
    pub algorithm: Algorithm,
    /// Carried by hulld's proxy, listening at `vip:port`.
    pub proxied: bool,
    /// The healthy replicas' addresses.
    pub backends: Vec<Ipv4Addr>,
    /// Its FIP, if one is attached.
    pub fip: Option<Ipv4Addr>,
}

/// The chains for `services`; empty for none. `bridges`: whether the
/// bridges' input chain is there to open proxied services' ports in;
/// `uplink`: the FIP pool's interface, if this host has one.
pub fn script(services: &[ServiceRules], bridges: bool, uplink: Option<&str>) -> String {
    if services.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "table ip {TABLE} {{");
    // From a bridge, only that of the service's own network: the uplink's
    // neighbours (and other networks) never reach its replicas this way.
    // From the host itself, every service.
    for hook in ["prerouting", "output"] {
        let _ = writeln!(
            out,
            "  chain service_{hook} {{\n    type nat hook {hook} priority {DNAT_PRIORITY}; policy accept;"
        );
        for service in services.iter().filter(|s| !s.proxied) {
            let from = match hook {
                "prerouting" => format!("iifname \"{}\" ", service.bridge),
                _ => String::new(),
            };
            let _ = writeln!(out, "    {from}{}", translation(service, service.vip));
            if let (Some(fip), "prerouting") = (service.fip, hook) {
                let _ = writeln!(out, "    {}", translation(service, fip));
            }
        }
        let _ = writeln!(out, "  }}");
    }
    let vips: Vec<String> = services.iter().map(|s| s.vip.to_string()).collect();
    let _ = writeln!(
        out,
        "  chain service_postrouting {{\n    type nat hook postrouting priority {SNAT_PRIORITY}; policy accept;\n    ct original ip daddr {{ {} }} masquerade",
        vips.join(", ")
    );
    let with_fip: Vec<(&ServiceRules, Ipv4Addr)> =
        services.iter().filter_map(|s| Some((s, s.fip?))).collect();
    if !with_fip.is_empty() {
        let fips: Vec<String> = with_fip.iter().map(|(_, fip)| fip.to_string()).collect();
        let _ = writeln!(
            out,
            "    iifname \"{}*\" ct original ip daddr {{ {} }} masquerade",
            crate::BRIDGE_PREFIX,
            fips.join(", ")
        );
    }
    if let Some(uplink) = uplink {
        for (service, fip) in with_fip.iter().filter(|(s, _)| !s.backends.is_empty()) {
            let backends: Vec<String> = service.backends.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "    oifname \"{uplink}\" ip saddr {{ {} }} snat to {fip}",
                backends.join(", ")
            );
        }
    }
    let _ = writeln!(out, "  }}\n}}");
    let _ = writeln!(
        out,
        "table inet {TABLE} {{\n  chain service_redirects {{\n    type filter hook output priority filter; policy accept;\n    oifname \"{}*\" icmp type redirect drop\n  }}",
        crate::BRIDGE_PREFIX
    );
    let _ = writeln!(out, "  chain service_input {{");
    for service in services.iter().filter(|s| s.proxied) {
        let _ = writeln!(
            out,
            "    iifname \"{}\" ip daddr {} tcp dport {} accept",
            service.bridge, service.vip, service.port
        );
    }
    let _ = writeln!(out, "  }}");
    // As a DNAT'd service is reached only from its bridge and the host, so
    // is the proxy: not from the uplink, nor another bridge.
    let _ = writeln!(
        out,
        "  chain service_guard {{\n    type filter hook input priority filter; policy accept;"
    );
    for service in services.iter().filter(|s| s.proxied) {
        let matches = format!("ip daddr {} tcp dport {}", service.vip, service.port);
        if let Some(fip) = service.fip {
            let _ = writeln!(out, "    {matches} ct original ip daddr {fip} accept");
        }
        let _ = writeln!(
            out,
            "    {matches} iifname != {{ \"lo\", \"{}\" }} drop",
            service.bridge
        );
    }
    let _ = writeln!(out, "  }}\n}}");
    if bridges {
        let _ = writeln!(
            out,
            "insert rule inet {TABLE} bridge_input jump service_input"
        );
    }
    out
}

/// A new connection to `address` (the service's own, or its FIP) at the
/// service's port, sent to one of its healthy replicas, or dropped when it
/// has none.
fn translation(service: &ServiceRules, address: Ipv4Addr) -> String {
    let matches = format!("ip daddr {address} tcp dport {}", service.port);
    if service.backends.is_empty() {
        return format!("{matches} drop");
    }
    let selector = match service.algorithm {
        // Leastconn is proxied, never translated.
        Algorithm::Roundrobin | Algorithm::Leastconn => "numgen inc",
        Algorithm::Source => "jhash ip saddr",
    };
    let map: Vec<String> = service
        .backends
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{i} : {address}"))
        .collect();
    format!(
        "{matches} dnat to {selector} mod {} map {{ {} }} : {}",
        service.backends.len(),
        map.join(", "),
        service.container_port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::nft_test::chain;

    fn service(vip: &str, algorithm: Algorithm, backends: &[&str]) -> ServiceRules {
        ServiceRules {
            bridge: "hb-0123456789ab".to_owned(),
            vip: vip.parse().unwrap(),
            port: 80,
            container_port: 8080,
            algorithm,
            proxied: algorithm == Algorithm::Leastconn,
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            fip: None,
        }
    }

    #[test]
    fn services_spread_over_healthy_replicas_and_leave_masqueraded() {
        let script = script(
            &[
                service(
                    "10.128.0.9",
                    Algorithm::Roundrobin,
                    &["10.128.0.2", "10.128.0.3"],
                ),
                service("10.128.1.9", Algorithm::Source, &["10.128.1.2"]),
                service("10.128.2.9", Algorithm::Roundrobin, &[]),
                service("10.128.3.9", Algorithm::Leastconn, &["10.128.3.2"]),
            ],
            true,
            None,
        );
        assert!(script.starts_with("table ip hull {\n"));
        let translations = [
            "ip daddr 10.128.0.9 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.128.0.2, 1 : 10.128.0.3 } : 8080",
            "ip daddr 10.128.1.9 tcp dport 80 dnat to jhash ip saddr mod 1 map { 0 : 10.128.1.2 } : 8080",
            "ip daddr 10.128.2.9 tcp dport 80 drop",
        ];
        let prerouting = chain(&script, "service_prerouting");
        assert_eq!(
            prerouting[0],
            "type nat hook prerouting priority -105; policy accept;"
        );
        let from_bridge: Vec<String> = translations
            .iter()
            .map(|t| format!("iifname \"hb-0123456789ab\" {t}"))
            .collect();
        assert_eq!(prerouting[1..], from_bridge);
        assert_eq!(chain(&script, "service_output")[1..], translations);
        assert_eq!(
            chain(&script, "service_postrouting")[1],
            "ct original ip daddr { 10.128.0.9, 10.128.1.9, 10.128.2.9, 10.128.3.9 } masquerade"
        );
        // The proxied one is not translated: its port is opened to its
        // bridge, where hulld listens.
        assert!(!script.contains("10.128.3.9 tcp dport 80 dnat"));
        assert_eq!(
            chain(&script, "service_input")[..],
            ["iifname \"hb-0123456789ab\" ip daddr 10.128.3.9 tcp dport 80 accept"]
        );
        assert_eq!(
            chain(&script, "service_guard")[1..],
            ["ip daddr 10.128.3.9 tcp dport 80 iifname != { \"lo\", \"hb-0123456789ab\" } drop"]
        );
        assert!(script.ends_with("insert rule inet hull bridge_input jump service_input\n"));
        assert_eq!(
            chain(&script, "service_redirects")[1],
            "oifname \"hb-*\" icmp type redirect drop"
        );
    }

    #[test]
    fn without_services_there_are_no_chains() {
        assert_eq!(script(&[], true, Some("eth1")), "");
    }

    #[test]
    fn a_services_fip_is_balanced_as_its_address_and_its_replicas_go_out_from_it() {
        let mut translated = service(
            "10.128.0.9",
            Algorithm::Roundrobin,
            &["10.128.0.2", "10.128.0.3"],
        );
        translated.fip = Some("198.51.100.19".parse().unwrap());
        let mut proxied = service("10.128.3.9", Algorithm::Leastconn, &["10.128.3.2"]);
        proxied.fip = Some("198.51.100.20".parse().unwrap());
        let mut down = service("10.128.4.9", Algorithm::Roundrobin, &[]);
        down.fip = Some("198.51.100.21".parse().unwrap());
        let script = script(&[translated, proxied, down], true, Some("eth1"));
        let prerouting = chain(&script, "service_prerouting");
        // From anywhere (fip_prerouting lets only its port on), unlike
        // the address, which only its bridge reaches.
        for wanted in [
            "ip daddr 198.51.100.19 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.128.0.2, 1 : 10.128.0.3 } : 8080",
            "ip daddr 198.51.100.21 tcp dport 80 drop",
        ] {
            assert!(prerouting.contains(&wanted), "{wanted}: {prerouting:?}");
        }
        assert!(!prerouting.iter().any(|l| l.contains("198.51.100.20")));
        assert!(!chain(&script, "service_output")
            .iter()
            .any(|l| l.contains("198.51.100.")));
        let postrouting = chain(&script, "service_postrouting");
        assert_eq!(
            postrouting[2..],
            [
                "iifname \"hb-*\" ct original ip daddr { 198.51.100.19, 198.51.100.20, 198.51.100.21 } masquerade",
                "oifname \"eth1\" ip saddr { 10.128.0.2, 10.128.0.3 } snat to 198.51.100.19",
                "oifname \"eth1\" ip saddr { 10.128.3.2 } snat to 198.51.100.20",
            ]
        );
        assert_eq!(
            chain(&script, "service_guard")[1..],
            [
                "ip daddr 10.128.3.9 tcp dport 80 ct original ip daddr 198.51.100.20 accept",
                "ip daddr 10.128.3.9 tcp dport 80 iifname != { \"lo\", \"hb-0123456789ab\" } drop",
            ]
        );
    }
}
