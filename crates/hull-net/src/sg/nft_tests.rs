use super::*;

fn group(yaml: &str) -> SecurityGroup {
    SecurityGroup::parse(yaml.as_bytes()).unwrap()
}

fn port(tap: &str, last: u8) -> Port {
    Port {
        tap: tap.into(),
        address: Ipv4Addr::new(10, 128, 0, last),
    }
}

/// The lines of one chain of the script, trimmed.
use crate::nft_test::chain;

const WEB: &str = "
name: web
rules:
  - {direction: ingress, protocol: tcp, port_range_min: 80, port_range_max: 80, remote_ip_prefix: 0.0.0.0/0}
  - {direction: ingress, protocol: icmp, remote_ip_prefix: 198.51.100.0/24}
  - {direction: egress, protocol: tcp, port_range_min: 5432, remote_group_name: db}
";
const DB: &str = "
name: db
rules:
  - {direction: ingress, protocol: tcp, port_range_min: 5432, remote_group_name: web}
  - {direction: egress, protocol: udp, port_range_min: 1000, port_range_max: 2000}
";
const OPEN: &str = "
name: open
rules:
  - {direction: egress, protocol: ''}
";

#[test]
fn no_tap_no_table() {
    let script = SgRuleset {
        ports: &[],
        guarded: &[],
        members: &BTreeMap::new(),
    }
    .script();
    assert_eq!(script, "table bridge hull\ndelete table bridge hull\n");
}

#[test]
fn without_groups_every_tap_still_sends_from_its_own_address_only() {
    let script = SgRuleset {
        ports: &[port("ht-aaaaaaaaaaaa", 2), port("ht-aaaaaaaaaaax", 3)],
        guarded: &[],
        members: &BTreeMap::new(),
    }
    .script();
    for hook in ["forward", "input"] {
        let chain = script
            .split(&format!("chain {hook} {{"))
            .nth(1)
            .and_then(|rest| rest.split("  }").next())
            .unwrap_or_default();
        assert!(
            chain.contains("iifname \"ht-aaaaaaaaaaaa\" ether type ip ip saddr != 10.128.0.2 drop")
                && chain.contains(
                    "iifname \"ht-aaaaaaaaaaax\" ether type ip ip saddr != 10.128.0.3 drop"
                ),
            "{script}"
        );
    }
    assert!(!script.contains("jump"), "{script}");
}

#[test]
fn groups_become_chains_on_each_tap_and_sets_of_members() {
    let (web, db) = (group(WEB), group(DB));
    let ports = [
        port("ht-aaaaaaaaaaaa", 2),
        port("ht-bbbbbbbbbbbb", 3),
        port("ht-cccccccccccc", 4),
    ];
    let gateway = Ipv4Addr::new(10, 128, 0, 1);
    let guarded = [
        Guarded {
            port: ports[0].clone(),
            gateway,
            owner: "acme",
            groups: vec![&web],
        },
        Guarded {
            port: ports[1].clone(),
            gateway,
            owner: "acme",
            groups: vec![&db],
        },
    ];
    let members = BTreeMap::from([
        (
            ("acme".to_owned(), "db".to_owned()),
            BTreeSet::from([Ipv4Addr::new(10, 128, 0, 3)]),
        ),
        (
            ("acme".to_owned(), "web".to_owned()),
            BTreeSet::from([Ipv4Addr::new(10, 128, 0, 2)]),
        ),
        // Another tenant's group of the same name is not this one.
        (
            ("zeta".to_owned(), "web".to_owned()),
            BTreeSet::from([Ipv4Addr::new(10, 129, 0, 9)]),
        ),
    ]);
    let script = SgRuleset {
        ports: &ports,
        guarded: &guarded,
        members: &members,
    }
    .script();
    assert!(script.starts_with(
        "table bridge hull\ndelete table bridge hull\ntable bridge hull {\n  set g0 {\n    type ipv4_addr\n    elements = { 10.128.0.3 }\n  }\n  set g1 {\n    type ipv4_addr\n    elements = { 10.128.0.2 }\n  }\n"
    ), "{script}");
    assert!(!script.contains("10.129.0.9"));
    let forward = chain(&script, "forward");
    assert_eq!(
        forward,
        [
            "type filter hook forward priority filter; policy accept;",
            "ether type arp accept",
            "iifname \"ht-aaaaaaaaaaaa\" ether type ip ip saddr != 10.128.0.2 drop",
            "iifname \"ht-bbbbbbbbbbbb\" ether type ip ip saddr != 10.128.0.3 drop",
            "iifname \"ht-cccccccccccc\" ether type ip ip saddr != 10.128.0.4 drop",
            "iifname \"ht-aaaaaaaaaaaa\" jump out_htaaaaaaaaaaaa",
            "iifname \"ht-bbbbbbbbbbbb\" jump out_htbbbbbbbbbbbb",
            "oifname \"ht-aaaaaaaaaaaa\" jump in_htaaaaaaaaaaaa",
            "oifname \"ht-bbbbbbbbbbbb\" jump in_htbbbbbbbbbbbb",
        ]
    );
    // Frames up to the host come from taps only; frames from it go to them.
    let input = chain(&script, "input");
    assert!(input.contains(&"iifname \"ht-aaaaaaaaaaaa\" jump out_htaaaaaaaaaaaa"));
    assert!(!input.iter().any(|l| l.starts_with("oifname")));
    let output = chain(&script, "output");
    assert!(output.contains(&"oifname \"ht-bbbbbbbbbbbb\" jump in_htbbbbbbbbbbbb"));
    assert!(!output.iter().any(|l| l.starts_with("iifname")));

    assert_eq!(
        chain(&script, "in_htaaaaaaaaaaaa"),
        [
            "ip saddr 10.128.0.1 udp sport 53 return",
            "ether type ip tcp dport 80 return",
            "ether type ip ip saddr 198.51.100.0/24 meta l4proto icmp return",
            "ether type ip ip saddr @g0 tcp sport 5432 tcp flags & (syn | ack) != syn return",
            "drop",
        ]
    );
    assert_eq!(
        chain(&script, "out_htaaaaaaaaaaaa"),
        [
            "ip daddr 10.128.0.1 udp dport 53 return",
            "ether type ip tcp sport 80 tcp flags & (syn | ack) != syn return",
            "ether type ip ip daddr 198.51.100.0/24 icmp type { echo-reply, destination-unreachable, time-exceeded } return",
            "ether type ip ip daddr @g0 tcp dport 5432 return",
            "drop",
        ]
    );
    assert_eq!(
        chain(&script, "in_htbbbbbbbbbbbb"),
        [
            "ip saddr 10.128.0.1 udp sport 53 return",
            "ether type ip ip saddr @g1 tcp dport 5432 return",
            "ether type ip udp sport 1000-2000 return",
            "drop",
        ]
    );
    // The container in no group has no chain of its own.
    assert!(!script.contains("in_htcccccccccccc"));
}

#[test]
fn rules_of_several_groups_add_up_once_each() {
    let (open, again) = (group(OPEN), group(OPEN));
    let guarded = [Guarded {
        port: port("ht-aaaaaaaaaaaa", 2),
        gateway: Ipv4Addr::new(10, 128, 0, 1),
        owner: "",
        groups: vec![&open, &again],
    }];
    let script = SgRuleset {
        ports: &[],
        guarded: &guarded,
        members: &BTreeMap::new(),
    }
    .script();
    assert_eq!(
        chain(&script, "out_htaaaaaaaaaaaa"),
        [
            "ip daddr 10.128.0.1 udp dport 53 return",
            "ether type ip return",
            "drop"
        ]
    );
    // Answers come in; new connections (a bare SYN) do not.
    assert_eq!(
        chain(&script, "in_htaaaaaaaaaaaa"),
        [
            "ip saddr 10.128.0.1 udp sport 53 return",
            "ether type ip meta l4proto != tcp return",
            "ether type ip tcp flags & (syn | ack) != syn return",
            "drop"
        ]
    );
}

#[test]
fn a_group_named_by_a_rule_but_empty_is_an_empty_set() {
    let web = group(WEB);
    let guarded = [Guarded {
        port: port("ht-aaaaaaaaaaaa", 2),
        gateway: Ipv4Addr::new(10, 128, 0, 1),
        owner: "acme",
        groups: vec![&web],
    }];
    let script = SgRuleset {
        ports: &[],
        guarded: &guarded,
        members: &BTreeMap::new(),
    }
    .script();
    assert!(script.contains("  set g0 {\n    type ipv4_addr\n  }\n"));
}
