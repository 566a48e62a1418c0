//! Security groups as nftables rules, in a table of the bridge family of
//! Hull's own (`bridge hull`): its chains see every frame a VM's tap sends
//! or receives, between two containers of one bridge (hook `forward`), from
//! a container to the host and beyond (hook `input`) and from the host to a
//! container (hook `output`), each at priority `filter` (-200).
//!
//! The bridge family has no connection tracking on a kernel without
//! `nf_conntrack_bridge`, so replies are let through by rules of their own:
//! every rule that lets a connection start one way has a mirror that lets
//! its answers back (for TCP, anything but a bare SYN: a peer on the allowed
//! port can answer but never open a connection the rules do not allow).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::model::{Direction, Rule, SecurityGroup};

pub const TABLE: &str = "hull";

/// A running container's VM interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub tap: String,
    pub address: Ipv4Addr,
}

/// A running container in at least one group.
#[derive(Debug, Clone)]
pub struct Guarded<'a> {
    pub port: Port,
    /// Its network's resolver, which it may always ask for names.
    pub gateway: Ipv4Addr,
    pub owner: &'a str,
    pub groups: Vec<&'a SecurityGroup>,
}

/// Everything the table is made from.
#[derive(Debug, Clone)]
pub struct SgRuleset<'a> {
    /// Every running container on a bridge, guarded or not: none may send
    /// from an address that is not its own, which groups are made of.
    pub ports: &'a [Port],
    pub guarded: &'a [Guarded<'a>],
    /// The addresses of each group's containers, by owner and group name.
    pub members: &'a BTreeMap<(String, String), BTreeSet<Ipv4Addr>>,
}

/// Which side of a rule a chain is on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Frames to the container: the remote end is their source.
    In,
    /// Frames from the container: the remote end is their destination.
    Out,
}

impl SgRuleset<'_> {
    /// The nft script that makes the table exactly this (absent when no
    /// container runs on a bridge; only the taps' anti-spoofing rules when
    /// none is in a group). Declaring the table before deleting it makes
    /// the deletion valid when it is absent.
    pub fn script(&self) -> String {
        let mut out = format!("table bridge {TABLE}\ndelete table bridge {TABLE}\n");
        if self.ports.is_empty() && self.guarded.is_empty() {
            return out;
        }
        let sets = self.sets();
        let _ = writeln!(out, "table bridge {TABLE} {{");
        for ((owner, name), index) in &sets {
            let members = self.members.get(&(owner.clone(), name.clone()));
            let elements: Vec<String> = members
                .into_iter()
                .flatten()
                .map(Ipv4Addr::to_string)
                .collect();
            let _ = writeln!(out, "  set g{index} {{\n    type ipv4_addr");
            if !elements.is_empty() {
                let _ = writeln!(out, "    elements = {{ {} }}", elements.join(", "));
            }
            let _ = writeln!(out, "  }}");
        }
        for hook in ["forward", "input", "output"] {
            self.base_chain(&mut out, hook);
        }
        for guarded in self.guarded {
            for side in [Side::In, Side::Out] {
                chain_of(&mut out, guarded, side, &sets);
            }
        }
        let _ = writeln!(out, "}}");
        out
    }

    /// The groups that rules name, each numbered for its set's name.
    fn sets(&self) -> BTreeMap<(String, String), usize> {
        let named: BTreeSet<(String, String)> = self
            .guarded
            .iter()
            .flat_map(|g| {
                g.groups
                    .iter()
                    .flat_map(|group| group.remote_groups())
                    .map(|name| (g.owner.to_owned(), name.to_owned()))
            })
            .collect();
        named.into_iter().enumerate().map(|(i, k)| (k, i)).collect()
    }

    fn base_chain(&self, out: &mut String, hook: &str) {
        let _ = writeln!(
            out,
            "  chain {hook} {{\n    type filter hook {hook} priority filter; policy accept;\n    ether type arp accept"
        );
        // Frames from a tap: `forward` and `input`; to a tap: `forward`
        // and `output`.
        if hook != "output" {
            for port in self.ports {
                let _ = writeln!(
                    out,
                    "    iifname \"{}\" ether type ip ip saddr != {} drop",
                    port.tap, port.address
                );
            }
            for guarded in self.guarded {
                let _ = writeln!(
                    out,
                    "    iifname \"{}\" jump {}",
                    guarded.port.tap,
                    chain_name(&guarded.port, Side::Out)
                );
            }
        }
        if hook != "input" {
            for guarded in self.guarded {
                let _ = writeln!(
                    out,
                    "    oifname \"{}\" jump {}",
                    guarded.port.tap,
                    chain_name(&guarded.port, Side::In)
                );
            }
        }
        let _ = writeln!(out, "  }}");
    }
}

fn chain_name(port: &Port, side: Side) -> String {
    let id: String = port
        .tap
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    match side {
        Side::In => format!("in_{id}"),
        Side::Out => format!("out_{id}"),
    }
}

/// One container's chain for one side: what its groups allow returns to
/// the base chain (the other end's chain may still refuse), the rest is
/// dropped.
fn chain_of(
    out: &mut String,
    guarded: &Guarded<'_>,
    side: Side,
    sets: &BTreeMap<(String, String), usize>,
) {
    let _ = writeln!(out, "  chain {} {{", chain_name(&guarded.port, side));
    let gateway = guarded.gateway;
    let _ = match side {
        Side::Out => writeln!(out, "    ip daddr {gateway} udp dport 53 return"),
        Side::In => writeln!(out, "    ip saddr {gateway} udp sport 53 return"),
    };
    let mut lines = BTreeSet::new();
    for group in &guarded.groups {
        for rule in &group.rules {
            // A rule of this side lets connections start; one of the other
            // side lets the answers to connections it let start come back.
            let starts = matches!(
                (rule.direction, side),
                (Direction::Ingress, Side::In) | (Direction::Egress, Side::Out)
            );
            let remote = remote_match(rule, side, guarded.owner, sets);
            for proto in protocol_matches(rule, starts) {
                let line = format!("ether type ip {remote}{proto}return");
                if lines.insert(line.clone()) {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
    }
    let _ = writeln!(out, "    drop\n  }}");
}

fn remote_match(
    rule: &Rule,
    side: Side,
    owner: &str,
    sets: &BTreeMap<(String, String), usize>,
) -> String {
    let field = match side {
        Side::In => "saddr",
        Side::Out => "daddr",
    };
    if let Some(prefix) = rule.prefix().filter(|p| !p.is_everything()) {
        return format!("ip {field} {prefix} ");
    }
    if let Some(group) = &rule.remote_group_name {
        let index = sets[&(owner.to_owned(), group.clone())];
        return format!("ip {field} @g{index} ");
    }
    String::new()
}

/// The protocol part of a rule's lines: the connection's own (`starts`),
/// or its answers'.
fn protocol_matches(rule: &Rule, starts: bool) -> Vec<String> {
    const ANSWER: &str = "tcp flags & (syn | ack) != syn ";
    let (min, max) = rule.ports();
    let range = match (min, max) {
        (0, 0) => None,
        (a, b) if a == b => Some(a.to_string()),
        (a, b) => Some(format!("{a}-{b}")),
    };
    let port = if starts { "dport" } else { "sport" };
    match (rule.protocol.as_str(), range) {
        ("tcp", Some(range)) if starts => vec![format!("tcp {port} {range} ")],
        ("tcp", Some(range)) => vec![format!("tcp {port} {range} {ANSWER}")],
        ("tcp", None) if starts => vec!["meta l4proto tcp ".into()],
        ("tcp", None) => vec![ANSWER.into()],
        ("udp", Some(range)) => vec![format!("udp {port} {range} ")],
        ("udp", None) => vec!["meta l4proto udp ".into()],
        ("icmp", _) if starts => vec!["meta l4proto icmp ".into()],
        ("icmp", _) => {
            vec!["icmp type { echo-reply, destination-unreachable, time-exceeded } ".into()]
        }
        (_, _) if starts => vec![String::new()],
        (_, _) => vec!["meta l4proto != tcp ".into(), ANSWER.into()],
    }
}

#[cfg(test)]
#[path = "nft_tests.rs"]
mod tests;
