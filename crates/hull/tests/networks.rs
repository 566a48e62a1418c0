//! User-defined networks, end to end, with hulld in network namespaces the
//! tests make: containers reaching each other by name, networks that
//! cannot reach each other, published ports and outbound NAT through
//! nftables, and the rules and taps gone after `rm` and after a crash.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::OnceLock;

use common::netns::{self, NetNs};
use common::{assert_fails, has_docker_cli, kill_processes_using, stdout_of, Daemon};

/// A daemon in a namespace of its own, with busybox loaded and its
/// template built, shared by the tests that do not crash it.
fn shared() -> &'static (NetNs, Daemon) {
    static SHARED: OnceLock<(NetNs, Daemon)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let netns = NetNs::new("net");
        let daemon = daemon_in(&netns, &[]);
        daemon.wait_for_template();
        (netns, daemon)
    })
}

fn daemon_in(netns: &NetNs, env: &[(&str, &str)]) -> Daemon {
    let daemon = Daemon::start_in(Some(&netns.name), env);
    let archive = common::busybox_archive();
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    daemon
}

/// A busybox httpd on port 80 serving `text`.
fn serve(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// Hull's nftables rules in the namespace; empty once the table is gone.
fn rules(netns: &NetNs) -> String {
    let output = netns.exec("nft", &["list", "table", "ip", "hull"]);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn links(netns: &NetNs) -> String {
    String::from_utf8_lossy(&netns.ip(&["-o", "link"]).stdout).into_owned()
}

/// The first object `hull … inspect` prints.
fn inspect(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = stdout_of(&daemon.hull(args));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn containers_on_a_network_reach_each_other_by_name_and_no_other_network() {
    let (netns, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    let backend = hull(&["network", "create", "backend"]);
    let bridge = format!("hb-{}", &backend.trim()[..12]);
    hull(&["network", "create", "--subnet", "10.99.7.0/24", "front"]);
    let id = hull(&[
        "run",
        "-d",
        "--name",
        "db",
        "--network",
        "backend",
        "--network-alias",
        "database",
        "-p",
        "8088:80",
        "busybox",
        "sh",
        "-c",
        &serve("from-db"),
    ]);
    let id = id.trim();

    let network = inspect(daemon, &["network", "inspect", "backend"]);
    let address = network["Containers"][id]["IPv4Address"]
        .as_str()
        .expect("db is on backend")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let gateway = network["IPAM"]["Config"][0]["Gateway"].as_str().unwrap();
    let settings = &inspect(daemon, &["inspect", "db"])["NetworkSettings"];
    assert_eq!(
        settings["Networks"]["backend"]["IPAddress"],
        address.as_str()
    );
    assert_eq!(settings["Networks"]["backend"]["Aliases"][0], "database");
    assert_eq!(settings["Gateway"], gateway);

    // By name and by alias, through the network's resolver.
    let by_name = hull(&[
        "run",
        "--rm",
        "--network",
        "backend",
        "busybox",
        "sh",
        "-c",
        "cat /etc/resolv.conf; wget -qO- http://db/ && wget -qO- http://database/",
    ]);
    assert!(
        by_name.contains(&format!("nameserver {gateway}")),
        "{by_name}"
    );
    assert!(by_name.ends_with("from-db\nfrom-db\n"), "{by_name}");

    // Another network neither resolves the name nor reaches the address.
    let other = hull(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "sh",
        "-c",
        &format!(
            "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; \
             timeout 5 wget -qO- http://db/ || echo no-name; \
             timeout 5 wget -qO- http://{address}/ || echo no-route"
        ),
    ]);
    assert!(other.starts_with("inet 10.99.7."), "{other}");
    assert!(
        other.contains("no-name") && other.contains("no-route"),
        "{other}"
    );
    assert!(!other.contains("from-db"), "{other}");

    // The published port, from the host's loopback and its own address.
    assert_eq!(
        netns.within(|| common::http_get("127.0.0.1", 8088)),
        "from-db\n"
    );
    assert_eq!(
        netns.within(|| common::http_get(gateway, 8088)),
        "from-db\n"
    );
    assert!(rules(netns).contains(&format!("tcp dport 8088 dnat to {address}:80")));
    let tap = format!("ht-{}", &id[..12]);
    assert!(links(netns).contains(&tap));

    // A second container cannot take the same host port.
    let clash = daemon.hull(&[
        "run",
        "-d",
        "--name",
        "clash",
        "--network",
        "backend",
        "-p",
        "8088:80",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_fails(&clash, 125, &["8088", "already allocated"]);

    let in_use = daemon.hull(&["network", "rm", "backend"]);
    assert_fails(&in_use, 1, &["active endpoints", "db"]);

    hull(&["rm", "-f", "db"]);
    assert!(!rules(netns).contains("dport 8088"), "{}", rules(netns));
    assert!(!links(netns).contains(&tap));
    hull(&["rm", "-f", "clash"]);
    hull(&["network", "rm", "backend", "front"]);
    assert!(!links(netns).contains(&bridge), "{}", links(netns));
}

#[test]
fn outbound_connections_leave_through_the_hosts_address() {
    let (netns, daemon) = shared();
    let outside = NetNs::new("outside");
    netns::link(netns, "192.0.2.1/24", &outside, "192.0.2.2/24");
    stdout_of(&daemon.hull(&["network", "create", "egress"]));
    let listener = outside.within(|| TcpListener::bind("192.0.2.2:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let peer = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        stream
            .write_all(b"HTTP/1.0 200 OK\r\n\r\noutside\n")
            .unwrap();
        peer.ip()
    });
    let out = stdout_of(&daemon.hull(&[
        "run",
        "--rm",
        "--network",
        "egress",
        "busybox",
        "wget",
        "-qO-",
        &format!("http://192.0.2.2:{port}/"),
    ]));
    assert_eq!(out, "outside\n");
    // Masqueraded: the far side sees the host, not the container.
    assert_eq!(peer.join().unwrap(), Ipv4Addr::new(192, 0, 2, 1));
    stdout_of(&daemon.hull(&["network", "rm", "egress"]));
}

#[test]
fn an_internal_network_has_no_way_out() {
    let (netns, daemon) = shared();
    let outside = NetNs::new("closed");
    netns::link(netns, "198.51.100.1/24", &outside, "198.51.100.2/24");
    let listener = outside.within(|| TcpListener::bind("198.51.100.2:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    stdout_of(&daemon.hull(&["network", "create", "--internal", "sealed"]));
    let out = stdout_of(&daemon.hull(&[
        "run",
        "--rm",
        "--network",
        "sealed",
        "busybox",
        "sh",
        "-c",
        &format!("timeout 5 wget -qO- http://198.51.100.2:{port}/ || echo sealed"),
    ]));
    assert!(out.ends_with("sealed\n"), "{out}");
    drop(listener);
    stdout_of(&daemon.hull(&["network", "rm", "sealed"]));
}

#[test]
fn rules_and_taps_of_a_vm_lost_in_a_crash_are_removed_at_restart() {
    let netns = NetNs::new("crash");
    let daemon = daemon_in(&netns, &[("HULL_NO_TEMPLATES", "1")]);
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    hull(&["network", "create", "web"]);
    let kept = hull(&[
        "run",
        "-d",
        "--name",
        "kept",
        "--network",
        "web",
        "-p",
        "8091:80",
        "busybox",
        "sh",
        "-c",
        &serve("kept"),
    ]);
    let lost = hull(&[
        "run",
        "-d",
        "--name",
        "lost",
        "--network",
        "web",
        "-p",
        "8092:80",
        "busybox",
        "sh",
        "-c",
        &serve("lost"),
    ]);
    assert_eq!(
        netns.within(|| common::http_get("127.0.0.1", 8092)),
        "lost\n"
    );
    let lost_tap = format!("ht-{}", &lost.trim()[..12]);
    assert!(links(&netns).contains(&lost_tap));

    // hulld dies, and so does one VM while no hulld watches it.
    daemon.restart_after_crash_with(&[("HULL_NO_TEMPLATES", "1")], || {
        // The VM's directory, and so its QEMU's command line, is named
        // after the id's first 16 digits.
        kill_processes_using(Path::new(&format!("c-{}", &lost.trim()[..16])));
    });
    common::eventually(60, || {
        let status = inspect(&daemon, &["inspect", "lost"])["State"]["Status"].clone();
        (status == "exited")
            .then_some(())
            .ok_or(format!("lost is {status}"))
    });
    let now = rules(&netns);
    assert!(!now.contains("dport 8092"), "{now}");
    assert!(!links(&netns).contains(&lost_tap), "{}", links(&netns));
    // The survivor keeps its address, its rule and its service.
    assert!(now.contains("dport 8091"), "{now}");
    assert_eq!(
        netns.within(|| common::http_get("127.0.0.1", 8091)),
        "kept\n"
    );

    hull(&["rm", "-f", kept.trim(), lost.trim()]);
    hull(&["network", "rm", "web"]);
    assert_eq!(rules(&netns), "", "NAT goes with the last network");
    // What keeps VMs off the host's loopback stays while hulld runs.
    let filter = netns.exec("nft", &["list", "table", "inet", "hull"]);
    assert!(common::text(&filter.stdout).contains("meta skuid"));
}

#[test]
fn bad_network_requests_are_refused_with_reasons() {
    let (_, daemon) = shared();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["network", "create", "bridge"], &["predefined", "bridge"]),
        (
            &["network", "create", "--subnet", "10.1.2.3/24", "x1"],
            &["invalid subnet"],
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.98.0.0/24",
                "--gateway",
                "10.97.0.1",
                "x2",
            ],
            &["gateway", "10.97.0.1"],
        ),
        (&["network", "rm", "none"], &["pre-defined"]),
        (&["network", "inspect", "nosuch"], &["nosuch", "not found"]),
        (
            &["run", "--rm", "--network", "nosuch", "busybox", "true"],
            &["network nosuch not found"],
        ),
    ];
    for (args, needles) in cases {
        let output = daemon.hull(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = common::text(&output.stderr);
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?}: {stderr}");
        }
    }
    stdout_of(&daemon.hull(&["network", "create", "--subnet", "10.98.0.0/24", "taken"]));
    let overlap = daemon.hull(&["network", "create", "--subnet", "10.98.0.0/16", "over"]);
    assert_fails(&overlap, 1, &["overlaps", "taken"]);
    stdout_of(&daemon.hull(&["network", "rm", "taken"]));
}

#[test]
fn the_docker_cli_manages_networks_and_runs_on_them() {
    if !has_docker_cli() {
        eprintln!("skipped: the docker CLI is not installed");
        return;
    }
    let (_, daemon) = shared();
    let docker = |args: &[&str]| stdout_of(&daemon.docker(args));
    docker(&["network", "create", "--label", "app=shop", "shop"]);
    let listed = docker(&[
        "network",
        "ls",
        "--filter",
        "label=app=shop",
        "--format",
        "{{.Name}} {{.Driver}}",
    ]);
    assert_eq!(listed, "shop bridge\n");
    let all = docker(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(all.contains("bridge\n") && all.contains("none\n"), "{all}");
    docker(&[
        "run",
        "-d",
        "--name",
        "shop-api",
        "--network",
        "shop",
        "--network-alias",
        "api",
        "busybox",
        "sh",
        "-c",
        &serve("api"),
    ]);
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "shop",
        "busybox",
        "wget",
        "-qO-",
        "http://api/",
    ]);
    assert_eq!(out, "api\n");
    let members = docker(&[
        "network",
        "inspect",
        "shop",
        "--format",
        "{{range .Containers}}{{.Name}}{{end}}",
    ]);
    assert_eq!(members, "shop-api\n");
    let address = docker(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.shop.IPAddress}}",
        "shop-api",
    ]);
    assert!(address.starts_with("10.89."), "{address}");
    let refused = daemon.docker(&["network", "rm", "shop"]);
    assert!(!refused.status.success());
    docker(&["rm", "-f", "shop-api"]);
    docker(&["network", "rm", "shop"]);

    // Compose's way: create on the default network, then connect.
    docker(&["network", "create", "--label", "pruned=yes", "proj_default"]);
    docker(&[
        "create",
        "--name",
        "proj-web",
        "busybox",
        "sh",
        "-c",
        &serve("web"),
    ]);
    docker(&[
        "network",
        "connect",
        "--alias",
        "web",
        "proj_default",
        "proj-web",
    ]);
    docker(&["start", "proj-web"]);
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "proj_default",
        "busybox",
        "wget",
        "-qO-",
        "http://web/",
    ]);
    assert_eq!(out, "web\n");
    docker(&["rm", "-f", "proj-web"]);
    // Only what the label picks: other tests share this daemon.
    let pruned = docker(&["network", "prune", "-f", "--filter", "label=pruned=yes"]);
    assert!(pruned.contains("proj_default"), "{pruned}");
}

#[test]
fn docker_compose_runs_a_project_on_its_default_network() {
    let (_, daemon) = shared();
    let Some(project) = common::compose::Project::new(
        daemon,
        "shop",
        r#"version: "3"
services:
  db:
    image: busybox
    command: sh -c "mkdir -p /www && echo from-db > /www/index.html && exec httpd -f -p 80 -h /www"
  web:
    image: busybox
    command: wget -qO- http://db/
    depends_on: [db]
"#,
    ) else {
        return;
    };
    let compose = |args: &[&str]| project.run(args);
    compose(&["up", "-d"]);
    let networks = stdout_of(&daemon.hull(&["network", "ls"]));
    assert!(networks.contains("shop_default"), "{networks}");
    // web fetched db by its service name, on the project's network.
    common::eventually(60, || {
        let logs = compose(&["logs", "--no-color", "web"]);
        logs.contains("from-db").then_some(()).ok_or(logs)
    });
    let listed = compose(&["ps", "--services"]);
    assert_eq!(listed.lines().filter(|l| *l == "db").count(), 1, "{listed}");
    let served = compose(&["exec", "-T", "db", "cat", "/www/index.html"]);
    assert_eq!(served, "from-db\n");
    compose(&["down"]);
    let networks = stdout_of(&daemon.hull(&["network", "ls"]));
    assert!(!networks.contains("shop_default"), "{networks}");
    // Only the project's: other tests share this daemon.
    let left = daemon.hull(&[
        "ps",
        "-aq",
        "--filter",
        "label=com.docker.compose.project=shop",
    ]);
    assert_eq!(stdout_of(&left), "");
}
