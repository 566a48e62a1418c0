//! Security groups, end to end: a tenant's three busybox VMs on its own
//! network, `web` and `db` in groups and `client` in none (until it joins
//! one live). hulld runs in a network namespace standing for the host; a
//! namespace linked to it stands for the internet (198.51.100.0/24).

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock};

use common::cloud::Cloud;
use common::netns::{self, address_on, reaches, secret_server, NetNs};
use common::{assert_fails, stdout_of, text};

const NET_HOST: &str = "198.51.100.1";
const NET_PEER: &str = "198.51.100.2";

const WEB: &str = "name: web
description: serves on 80, talks to db on 80
rules:
  - {direction: ingress, protocol: tcp, port_range_min: 80, port_range_max: 80, remote_ip_prefix: 0.0.0.0/0}
  - {direction: egress, protocol: tcp, port_range_min: 80, port_range_max: 80, remote_group_name: db}
";
/// `web` updated live: the internet too, by prefix, and pings in.
const WEB_MORE: &str = "name: web
rules:
  - {direction: ingress, protocol: tcp, port_range_min: 80, port_range_max: 80, remote_ip_prefix: 0.0.0.0/0}
  - {direction: egress, protocol: tcp, port_range_min: 80, port_range_max: 80, remote_group_name: db}
  - {direction: egress, protocol: tcp, remote_ip_prefix: 198.51.100.0/24}
  - {direction: ingress, protocol: icmp}
";
const DB: &str = "name: db
rules:
  - {direction: ingress, protocol: tcp, port_range_min: 80, remote_group_name: web}
";

struct Setup {
    cloud: Cloud,
    acme: (String, String),
    beta: (String, String),
    internet: NetNs,
    /// The internet's server's port.
    net_port: u16,
    web: String,
    db: String,
    client: String,
    gateway: String,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let cloud = Cloud::start_isolated(&[("HULL_NO_TEMPLATES", "1")]);
        let host = cloud.netns.as_ref().expect("an isolated cloud");
        let internet = NetNs::new("internet");
        netns::link(
            host,
            &format!("{NET_HOST}/24"),
            &internet,
            &format!("{NET_PEER}/24"),
        );
        internet.ip(&["route", "add", "10.0.0.0/8", "via", NET_HOST]);
        let net_port = secret_server(&internet, NET_PEER, "internet-page");
        let acme = cloud.tenant_with_key("acme");
        let beta = cloud.tenant_with_key("beta");
        let archive = common::busybox_archive();
        let archive = archive.to_str().unwrap();
        as_tenant(&cloud, &acme, &["load", "-i", archive]);
        as_tenant(&cloud, &beta, &["load", "-i", archive]);
        // Each names the other: the rules of the first come once both exist.
        for (name, yaml, verb) in [
            ("web", "name: web\n", "create"),
            ("db", DB, "create"),
            ("web", WEB, "update"),
        ] {
            let file = write(&cloud, name, yaml);
            as_tenant(&cloud, &acme, &["sg", verb, "-f", &file]);
        }
        // Every VM serves a page on 80 and another on 81.
        let serve = |page: &str| {
            format!("mkdir -p /www && echo {page} > /www/index.html && httpd -p 81 -h /www && exec httpd -f -p 80 -h /www")
        };
        for (name, groups) in [
            ("web", &["--sg", "web"][..]),
            ("db", &["--sg", "db"][..]),
            ("client", &[][..]),
        ] {
            let page = serve(&format!("{name}-page"));
            let mut args = vec!["run", "-d", "--name", name];
            args.extend_from_slice(groups);
            args.extend_from_slice(&["busybox", "sh", "-c", &page]);
            as_tenant(&cloud, &acme, &args);
        }
        let address = |name: &str| address_on(&cloud.daemon, "tenant:acme", &format!("acme/{name}"));
        let (web, gateway) = address("web");
        let (db, _) = address("db");
        let (client, _) = address("client");
        // The servers are up (the host reaches the open client on both).
        common::eventually(120, || {
            let up = reaches(host, &client, 80) && reaches(host, &client, 81);
            up.then_some(()).ok_or_else(|| "client's httpd not up yet".into())
        });
        Setup {
            cloud,
            acme,
            beta,
            internet,
            net_port,
            web,
            db,
            client,
            gateway,
        }
    })
}

/// One case at a time: one of them restarts hulld.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn write(cloud: &Cloud, name: &str, yaml: &str) -> String {
    let path: PathBuf = cloud.daemon.root.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

/// `hull` as a tenant; must succeed.
fn as_tenant(cloud: &Cloud, key: &(String, String), args: &[&str]) -> String {
    let output = cloud.tenant(&key.0, &key.1, args);
    assert!(
        output.status.success(),
        "{args:?}: {}\n{}",
        text(&output.stderr),
        cloud.daemon.log()
    );
    stdout_of(&output)
}

fn tenant_output(cloud: &Cloud, key: &(String, String), args: &[&str]) -> Output {
    cloud.tenant(&key.0, &key.1, args)
}

/// What a shell script in acme's container `name` prints.
fn in_container(setup: &Setup, name: &str, script: &str) -> String {
    let container = format!("acme/{name}");
    let out = stdout_of(
        &setup
            .cloud
            .daemon
            .hull(&["exec", &container, "sh", "-c", script]),
    );
    assert!(out.ends_with("done\n"), "{out}");
    out
}

/// A probe line: the page at `address:port` if it is reachable.
fn fetch(address: &str, port: u16) -> String {
    format!("timeout 4 wget -qO- http://{address}:{port}/; ")
}

#[test]
fn groups_allow_only_what_their_rules_say_and_updates_apply_live() {
    let s = setup();
    let _turn = turn();
    let host = s.cloud.netns.as_ref().unwrap();
    let net = format!("timeout 4 nc {NET_PEER} {} </dev/null; ", s.net_port);

    // Ingress by port (web: 80 from anywhere, not 81), by group (db: only
    // from web), and nothing in on a container of no group's rule (client
    // is open).
    let out = in_container(
        s,
        "client",
        &format!(
            "{}{}{}ping -c 1 -W 2 {} && echo pinged; {}echo done",
            fetch(&s.web, 80),
            fetch(&s.web, 81),
            fetch(&s.db, 80),
            s.web,
            net
        ),
    );
    assert!(out.contains("web-page"), "{out}");
    assert_eq!(out.matches("web-page").count(), 1, "port 81 refused: {out}");
    assert!(!out.contains("db-page"), "db is only for web: {out}");
    assert!(!out.contains("pinged"), "icmp is not allowed in: {out}");
    assert!(out.contains("internet-page"), "client is open: {out}");
    assert!(reaches(host, &s.web, 80));
    assert!(!reaches(host, &s.web, 81));
    assert!(!reaches(host, &s.db, 80));

    // Egress by group and port: web reaches db on 80 only, and nothing
    // else (not the client, not the internet).
    let web_probes = format!(
        "{}{}{}{}echo done",
        fetch(&s.db, 80),
        fetch(&s.db, 81),
        fetch(&s.client, 80),
        net
    );
    let out = in_container(s, "web", &web_probes);
    assert_eq!(out.matches("db-page").count(), 1, "{out}");
    assert!(!out.contains("client-page"), "{out}");
    assert!(!out.contains("internet-page"), "{out}");
    // db has no egress rule at all.
    let out = in_container(s, "db", &format!("{}{net}echo done", fetch(&s.client, 80)));
    assert!(
        !out.contains("client-page") && !out.contains("internet-page"),
        "{out}"
    );

    // A live update: the internet by prefix, and pings in (protocol).
    let file = write(&s.cloud, "web-more", WEB_MORE);
    as_tenant(&s.cloud, &s.acme, &["sg", "update", "-f", &file]);
    let out = in_container(s, "web", &web_probes);
    assert!(out.contains("internet-page"), "{out}");
    assert!(!out.contains("client-page"), "{out}");
    let out = in_container(
        s,
        "client",
        &format!("ping -c 1 -W 2 {} && echo pinged; echo done", s.web),
    );
    assert!(out.contains("pinged"), "{out}");

    // A running container joins a group live: ingress on 81 only from a
    // prefix, egress to anything.
    let pinned = |prefix: &str| {
        format!("name: pinned\nrules:\n  - {{direction: ingress, protocol: tcp, port_range_min: 81, remote_ip_prefix: {prefix}}}\n  - {{direction: egress}}\n")
    };
    let file = write(&s.cloud, "pinned", &pinned("198.51.100.0/24"));
    as_tenant(&s.cloud, &s.acme, &["sg", "create", "-f", &file]);
    as_tenant(
        &s.cloud,
        &s.acme,
        &["update", "--sg-add", "pinned", "client"],
    );
    assert!(!reaches(host, &s.client, 80), "not port 80");
    assert!(
        !reaches(host, &s.client, 81),
        "the host is not in the prefix"
    );
    let out = in_container(s, "client", &format!("{net}echo done"));
    assert!(out.contains("internet-page"), "{out}");
    // The prefix changed live to the host's address on the network.
    let file = write(&s.cloud, "pinned", &pinned(&format!("{}/32", s.gateway)));
    as_tenant(&s.cloud, &s.acme, &["sg", "update", "-f", &file]);
    assert!(reaches(host, &s.client, 81), "the host is in the prefix");
    assert!(!reaches(host, &s.client, 80), "not port 80");
    // ... and leaves it: open again.
    as_tenant(
        &s.cloud,
        &s.acme,
        &["update", "--sg-rm", "pinned", "client"],
    );
    assert!(reaches(host, &s.client, 80));
    let inspect = as_tenant(&s.cloud, &s.acme, &["sg", "inspect", "pinned"]);
    assert!(inspect.contains("\"containers\": []"), "{inspect}");
    as_tenant(&s.cloud, &s.acme, &["sg", "rm", "pinned"]);
    let _ = &s.internet;
}

#[test]
fn a_group_in_use_cannot_be_removed() {
    let s = setup();
    let _turn = turn();
    let rm = tenant_output(&s.cloud, &s.acme, &["sg", "rm", "db"]);
    assert_fails(&rm, 1, &["security group db is in use", "db"]);
    let listed = as_tenant(&s.cloud, &s.acme, &["sg", "ls"]);
    assert!(listed.contains("db"), "{listed}");
    let inspect = as_tenant(&s.cloud, &s.acme, &["sg", "inspect", "web"]);
    assert!(inspect.contains("\"web\""), "{inspect}");
}

#[test]
fn another_tenants_groups_are_as_missing_ones() {
    let s = setup();
    let _turn = turn();
    for args in [
        &["sg", "inspect", "web"][..],
        &["sg", "rm", "web"],
        &["sg", "inspect", "nothing"],
    ] {
        let out = tenant_output(&s.cloud, &s.beta, args);
        assert_fails(&out, 1, &["security group", "not found"]);
    }
    let listed = as_tenant(&s.cloud, &s.beta, &["sg", "ls", "-q"]);
    assert!(listed.trim().is_empty(), "{listed}");
    // Names are per tenant; a rule names only the tenant's own groups.
    let file = write(&s.cloud, "beta-web", "name: web\n");
    as_tenant(&s.cloud, &s.beta, &["sg", "create", "-f", &file]);
    let file = write(
        &s.cloud,
        "beta-app",
        "name: app\nrules: [{direction: ingress, remote_group_name: db}]\n",
    );
    let out = tenant_output(&s.cloud, &s.beta, &["sg", "create", "-f", &file]);
    assert_fails(&out, 1, &["security group db not found"]);
    // Nor does a container join another's group (refused before any VM).
    let out = tenant_output(&s.cloud, &s.beta, &["create", "--sg", "db", "busybox"]);
    assert_fails(&out, 125, &["security group db not found"]);
    // The raw API, as Hyper.sh's paths have it: 404 as a missing one.
    let (code, body) = s.cloud.curl_as("beta", "GET", "/sg/db", None);
    assert_eq!(code, 404, "{body}");
    let (code, body) = s.cloud.curl_as("beta", "DELETE", "/sg/db", None);
    assert_eq!(code, 404, "{body}");
    let (code, _) = s.cloud.curl_as("acme", "GET", "/sg/db", None);
    assert_eq!(code, 200);
}

#[test]
fn hostile_bodies_are_refused_and_bounded() {
    let s = setup();
    let _turn = turn();
    let mut many = "name: many\nrules:\n".to_owned();
    for port in 1..=101 {
        many.push_str(&format!(
            "  - {{direction: ingress, protocol: tcp, port_range_min: {port}}}\n"
        ));
    }
    let huge = format!("name: huge\ndescription: {}\n", "x".repeat(70_000));
    for (path, body, status) in [
        ("/sg/many", many.as_str(), 400),
        ("/sg/huge", huge.as_str(), 413),
        ("/sg/x", "name: x\nrules: [{direction: in}]\n", 400),
        ("/sg/y", "name: z\n", 400),
        ("/sg/bad!", "name: bad!\n", 400),
    ] {
        let (code, answer) = s.cloud.curl_as("acme", "POST", path, Some(body));
        assert_eq!(code, status, "{path}: {answer}");
    }
    let listed = as_tenant(&s.cloud, &s.acme, &["sg", "ls", "-q"]);
    assert!(
        !listed.contains("many") && !listed.contains("huge"),
        "{listed}"
    );
    // A container joins at most ten groups.
    let labels: Vec<String> = (0..11).map(|i| format!("sh_hyper_sg_g{i}=yes")).collect();
    let mut args = vec!["create"];
    for label in &labels {
        args.extend_from_slice(&["--label", label]);
    }
    args.push("busybox");
    let out = tenant_output(&s.cloud, &s.acme, &args);
    assert_fails(&out, 125, &["at most 10 security groups"]);
}

#[test]
fn groups_need_a_bridge_network() {
    let s = setup();
    let _turn = turn();
    let file = write(&s.cloud, "ops", "name: ops\n");
    stdout_of(&s.cloud.daemon.hull(&["sg", "create", "-f", &file]));
    let archive = common::busybox_archive();
    stdout_of(
        &s.cloud
            .daemon
            .hull(&["load", "-i", archive.to_str().unwrap()]),
    );
    let out = s.cloud.daemon.hull(&["create", "--sg", "ops", "busybox"]);
    assert_fails(&out, 125, &["bridge network"]);
    // The operator's groups are not the tenants'.
    let out = tenant_output(&s.cloud, &s.acme, &["sg", "inspect", "ops"]);
    assert_fails(&out, 1, &["not found"]);
}

#[test]
fn the_rules_are_made_again_from_the_records_after_a_crash() {
    let s = setup();
    let _turn = turn();
    let host = s.cloud.netns.as_ref().unwrap();
    assert!(reaches(host, &s.web, 80) && !reaches(host, &s.web, 81));
    s.cloud
        .restart_after_crash_with(&[("HULL_NO_TEMPLATES", "1")], || {
            // What hulld leaves is lost, and a stale rule is left in its
            // place that would let nothing from the host reach a container.
            for args in [
                &["delete", "table", "bridge", "hull"][..],
                &["add", "table", "bridge", "hull"],
                &[
                    "add",
                    "chain",
                    "bridge",
                    "hull",
                    "output",
                    "{ type filter hook output priority filter; policy drop; }",
                ],
            ] {
                let out = host.exec("nft", args);
                assert!(out.status.success(), "nft {args:?}: {}", text(&out.stderr));
            }
            assert!(!reaches(host, &s.client, 80), "the stale rule holds");
        });
    common::eventually(60, || {
        let ruled = reaches(host, &s.web, 80) && !reaches(host, &s.web, 81);
        ruled
            .then_some(())
            .ok_or_else(|| format!("not ruled again yet: {}", s.cloud.daemon.log()))
    });
    assert!(reaches(host, &s.client, 81), "no stale rule");
    let table = text(
        &host
            .exec("nft", &["list", "table", "bridge", "hull"])
            .stdout,
    );
    assert_eq!(table.matches("policy drop").count(), 0, "{table}");
}
