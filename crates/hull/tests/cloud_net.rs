//! Tenants' networks, end to end: each tenant's containers share a private
//! network of their own, where they reach one another by name and by
//! address and the internet through NAT, and nothing else. hulld runs in a
//! network namespace standing for the host, linked to two more: a private
//! LAN (192.168.77.0/24) and the internet (198.51.100.0/24). A namespace
//! plugged into an operator's bridge network stands for its container.
//!
//! Each tenant loads its own image and runs its containers over the TLS
//! listener; the operator names them by their qualified names (`acme/a1`).

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::netns::{self, address_on, reaches, secret_server, NetNs};
use common::{stdout_of, Daemon};

/// The host's private LAN, and a machine on it.
const LAN_HOST: &str = "192.168.77.1";
const LAN_PEER: &str = "192.168.77.2";
/// The internet, and a server on it.
const NET_HOST: &str = "198.51.100.1";
const NET_PEER: &str = "198.51.100.2";
/// An operator's bridge network, and the stand-in for its container.
const OPS_SUBNET: &str = "10.97.9.0/24";
const OPS_GUEST: &str = "10.97.9.50";
/// The tenants' TLS listener, on the namespace's own loopback.
const TENANT_PORT: u16 = 8443;

fn shared() -> &'static (NetNs, Daemon) {
    static SHARED: OnceLock<(NetNs, Daemon)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let netns = NetNs::new("tenants");
        let listen = format!("tcp://127.0.0.1:{TENANT_PORT}");
        let daemon = Daemon::start_in(Some(&netns.name), &[("HULL_LISTEN", &listen)]);
        let archive = common::busybox_archive();
        stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
        daemon.wait_for_template();
        (netns, daemon)
    })
}

/// A new key of `tenant`'s.
fn key_of(daemon: &Daemon, tenant: &str) -> serde_json::Value {
    let out = stdout_of(&daemon.hull(&["admin", "key", "create", tenant, "--format", "json"]));
    serde_json::from_str(&out).unwrap()
}

/// `hull` with a tenant's `key`, through the TLS listener.
fn as_tenant(netns: &NetNs, daemon: &Daemon, key: &serde_json::Value, args: &[&str]) -> Output {
    common::eventually(30, || {
        reaches(netns, "127.0.0.1", TENANT_PORT)
            .then_some(())
            .ok_or_else(|| "no tenant listener yet".to_owned())
    });
    let address = format!("tcp://127.0.0.1:{TENANT_PORT}");
    Command::new("ip")
        .args(["netns", "exec", &netns.name, env!("CARGO_BIN_EXE_hull")])
        .args(["-H", &address, "--tlscacert"])
        .arg(daemon.root.join("tls/ca.pem"))
        .args(args)
        .env("HULL_ACCESS_KEY", key["AccessKey"].as_str().unwrap())
        .env("HULL_SECRET_KEY", key["SecretKey"].as_str().unwrap())
        .env("HULL_CONFIG", daemon.root.join("no-config.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A busybox httpd on port 80 serving `text`.
fn serve(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// A running container the tenant of `key` runs (on its own network, as
/// every tenant container is), serving `page`.
fn tenant_container(
    netns: &NetNs,
    daemon: &Daemon,
    key: &serde_json::Value,
    name: &str,
    page: &str,
) {
    let run = as_tenant(
        netns,
        daemon,
        key,
        &[
            "run",
            "-d",
            "--name",
            name,
            "busybox",
            "sh",
            "-c",
            &serve(page),
        ],
    );
    stdout_of(&run);
}

/// The network's labels and subnet, as inspect shows them.
fn labels_and_subnet(daemon: &Daemon, network: &str) -> (serde_json::Value, String) {
    let out = stdout_of(&daemon.hull(&["network", "inspect", network]));
    let network = &serde_json::from_str::<serde_json::Value>(&out).unwrap()[0];
    let subnet = network["IPAM"]["Config"][0]["Subnet"].as_str().unwrap();
    (network["Labels"].clone(), subnet.to_owned())
}

#[test]
fn each_tenant_gets_one_network_of_its_own_however_many_ask_at_once() {
    let (netns, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    hull(&["admin", "tenant", "create", "gamma"]);
    hull(&["admin", "tenant", "create", "delta"]);
    let askers: Vec<_> = (0..4)
        .map(|_| {
            daemon
                .command(&["admin", "tenant", "network", "gamma"])
                .output()
        })
        .collect();
    for asked in askers {
        assert_eq!(stdout_of(&asked.unwrap()), "tenant:gamma\n");
    }
    assert_eq!(
        hull(&["admin", "tenant", "network", "gamma"]),
        "tenant:gamma\n"
    );
    let listed = hull(&["network", "ls"]);
    assert_eq!(listed.matches("tenant:gamma").count(), 1, "{listed}");
    let delta = hull(&["admin", "tenant", "network", "delta"]);
    let (labels, gamma_subnet) = labels_and_subnet(daemon, "tenant:gamma");
    assert_eq!(labels["sh.hull.tenant"], "gamma");
    let (_, delta_subnet) = labels_and_subnet(daemon, delta.trim());
    assert!(gamma_subnet.starts_with("10.1"), "{gamma_subnet}");
    assert_ne!(gamma_subnet, delta_subnet);
    // No network create takes the name, nor does a tenant that does not exist get one.
    let taken = daemon.hull(&["network", "create", "tenant:delta"]);
    common::assert_fails(&taken, 1, &["invalid network name"]);
    let nobody = daemon.hull(&["admin", "tenant", "network", "nobody"]);
    assert!(!nobody.status.success());
    assert!(!hull(&["network", "ls"]).contains("tenant:nobody"));

    // A tenant sees its own network only: not another's, not the
    // operator's, not the predefined ones, which hold the operator's
    // containers.
    hull(&["network", "create", "operators"]);
    let key = key_of(daemon, "gamma");
    let listed = stdout_of(&as_tenant(netns, daemon, &key, &["network", "ls"]));
    let names: Vec<&str> = listed
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    assert_eq!(names, ["tenant:gamma"], "{listed}");
    let own = as_tenant(netns, daemon, &key, &["network", "inspect", "tenant:gamma"]);
    assert!(stdout_of(&own).contains(&gamma_subnet));
    for hidden in ["tenant:delta", "operators", "bridge"] {
        let inspect = as_tenant(netns, daemon, &key, &["network", "inspect", hidden]);
        common::assert_fails(&inspect, 1, &["not found"]);
    }
    hull(&["network", "rm", "operators"]);
    // A tenant's network goes with it.
    hull(&["admin", "tenant", "rm", "delta"]);
    assert!(!hull(&["network", "ls"]).contains("tenant:delta"));
}

#[test]
fn tenants_containers_reach_each_other_and_the_internet_and_nothing_else() {
    let (host, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));

    // The host's LAN and the internet, each a namespace behind the host.
    let lan = NetNs::new("lan");
    netns::link(
        host,
        &format!("{LAN_HOST}/24"),
        &lan,
        &format!("{LAN_PEER}/24"),
    );
    let internet = NetNs::new("internet");
    netns::link(
        host,
        &format!("{NET_HOST}/24"),
        &internet,
        &format!("{NET_PEER}/24"),
    );
    for peer in [&lan, &internet] {
        let via = if peer.name == lan.name {
            LAN_HOST
        } else {
            NET_HOST
        };
        peer.ip(&["route", "add", "10.0.0.0/8", "via", via]);
    }
    let lan_port = secret_server(&lan, LAN_PEER, "lan-secret");
    let net_port = secret_server(&internet, NET_PEER, "internet-page");
    let loopback = secret_server(host, "127.0.0.1", "loopback-secret");
    let everywhere = secret_server(host, "0.0.0.0", "host-secret");

    // An operator's bridge network, with a namespace on its bridge.
    let id = hull(&["network", "create", "--subnet", OPS_SUBNET, "ops"]);
    let bridge = format!("hb-{}", &id.trim()[..12]);
    let ops = NetNs::new("ops");
    host.ip(&[
        "link", "add", "opsport", "type", "veth", "peer", "name", "eth0", "netns", &ops.name,
    ]);
    host.ip(&["link", "set", "opsport", "master", &bridge, "up"]);
    ops.ip(&["link", "set", "eth0", "up"]);
    ops.ip(&["addr", "add", &format!("{OPS_GUEST}/24"), "dev", "eth0"]);
    ops.ip(&["route", "add", "default", "via", "10.97.9.1"]);
    let ops_port = secret_server(&ops, OPS_GUEST, "ops-secret");

    hull(&["admin", "tenant", "create", "acme"]);
    hull(&["admin", "tenant", "create", "beta"]);
    let acme = hull(&["admin", "tenant", "network", "acme"]);
    let beta = hull(&["admin", "tenant", "network", "beta"]);
    let (acme, beta) = (acme.trim(), beta.trim());
    let (acme_key, beta_key) = (key_of(daemon, "acme"), key_of(daemon, "beta"));
    let archive = common::busybox_archive();
    for key in [&acme_key, &beta_key] {
        stdout_of(&as_tenant(
            host,
            daemon,
            key,
            &["load", "-i", archive.to_str().unwrap()],
        ));
    }
    tenant_container(host, daemon, &acme_key, "a1", "a1-page");
    tenant_container(host, daemon, &acme_key, "a2", "a2-page");
    tenant_container(host, daemon, &beta_key, "b1", "b1-page");
    let (a1, acme_gateway) = address_on(daemon, acme, "acme/a1");
    let (a2, _) = address_on(daemon, acme, "acme/a2");
    let (b1, beta_gateway) = address_on(daemon, beta, "beta/b1");

    // Each probe prints what it reaches: another tenant's page, the host's
    // servers (through the gateway, at its LAN and internet addresses),
    // the LAN's, the operator's network's and the internet's; the host's
    // loopback last, through a route that a guest with root sets up itself.
    let probes = |gateway: &str, other: &str| {
        format!(
            "timeout 5 wget -qO- http://{other}/; \
             timeout 5 nc {gateway} {everywhere} </dev/null; \
             timeout 5 nc {LAN_HOST} {everywhere} </dev/null; \
             timeout 5 nc {NET_HOST} {everywhere} </dev/null; \
             timeout 5 nc {LAN_PEER} {lan_port} </dev/null; \
             timeout 5 nc {OPS_GUEST} {ops_port} </dev/null; \
             timeout 5 nc {NET_PEER} {net_port} </dev/null; \
             echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; \
             echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; \
             ip addr del 127.0.0.1/8 dev lo; \
             ip route add 127.0.0.0/8 via {gateway} dev eth0; \
             timeout 5 nc 127.0.0.1 {loopback} </dev/null; echo done"
        )
    };
    let secrets = ["host-secret", "lan-secret", "ops-secret", "loopback-secret"];

    let out = hull(&[
        "exec",
        "acme/a1",
        "sh",
        "-c",
        &format!(
            "nslookup a2; timeout 5 wget -qO- http://a2/; timeout 5 wget -qO- http://{a2}/; {}",
            probes(&acme_gateway, &b1)
        ),
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    // Its own network's names and addresses.
    assert!(out.contains(&a2), "{out}");
    assert_eq!(out.matches("a2-page").count(), 2, "{out}");
    // The other tenant's container, the host, its LAN, the operator's network.
    assert!(!out.contains("b1-page"), "{out}");
    for secret in secrets {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
    // The internet, through NAT.
    assert!(out.contains("internet-page"), "{out}");

    let out = hull(&[
        "exec",
        "beta/b1",
        "sh",
        "-c",
        &format!(
            "nslookup a1; timeout 5 wget -qO- http://{a2}/; {}",
            probes(&beta_gateway, &a1)
        ),
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains(&a1), "another tenant's names: {out}");
    assert!(
        !out.contains("a1-page") && !out.contains("a2-page"),
        "{out}"
    );
    for secret in secrets {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
    assert!(out.contains("internet-page"), "{out}");

    // Nothing reaches in either, from the LAN, the internet or the
    // operator's network; the host itself does.
    assert!(reaches(host, &a1, 80));
    assert!(reaches(host, &b1, 80));
    for (name, from) in [("lan", &lan), ("internet", &internet), ("ops", &ops)] {
        for address in [&a1, &b1] {
            assert!(!reaches(from, address, 80), "{name} reaches {address}");
        }
    }
    // The stand-ins' own servers answer the host: the refusals above are
    // the firewall's.
    assert!(reaches(host, LAN_PEER, lan_port));
    assert!(reaches(host, OPS_GUEST, ops_port));

    // Nor can the operator bridge them: a tenant's container joins no
    // network but its tenant's, live or not.
    for (network, container) in [("ops", "acme/a1"), (beta, "acme/a1"), (acme, "beta/b1")] {
        let joined = daemon.hull(&["network", "connect", network, container]);
        common::assert_fails(&joined, 1, &["different owners"]);
    }

    hull(&["rm", "-f", "acme/a1", "acme/a2", "beta/b1"]);
    host.ip(&["link", "del", "opsport"]);
    hull(&["network", "rm", "ops"]);
}
