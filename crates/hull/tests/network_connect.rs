//! Containers on several networks, end to end, with hulld in a network
//! namespace the tests make: `docker network connect` and `disconnect` on
//! a running container (its VM's spare network devices), names across
//! all of a container's networks, the networks coming back at a start and
//! after hulld restarts, the limit of devices, and a compose project
//! whose proxy sits on two networks.

mod common;

use std::sync::OnceLock;

use common::netns::NetNs;
use common::{assert_fails, has_docker_cli, stdout_of, Daemon};

fn shared() -> &'static (NetNs, Daemon) {
    static SHARED: OnceLock<(NetNs, Daemon)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let netns = NetNs::new("conn");
        let daemon = Daemon::start_in(Some(&netns.name), &[]);
        let archive = common::busybox_archive();
        stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
        daemon.wait_for_template();
        (netns, daemon)
    })
}

/// A busybox httpd on port 80 serving `text`.
fn serve(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

fn links(netns: &NetNs) -> String {
    String::from_utf8_lossy(&netns.ip(&["-o", "link"]).stdout).into_owned()
}

fn networks_of(daemon: &Daemon, container: &str) -> serde_json::Value {
    let out = stdout_of(&daemon.docker(&[
        "inspect",
        "--format",
        "{{json .NetworkSettings.Networks}}",
        container,
    ]));
    serde_json::from_str(&out).unwrap()
}

/// What `sh -c script` prints in `container`, by `docker exec`.
fn exec(daemon: &Daemon, container: &str, script: &str) -> String {
    let out = daemon.docker(&["exec", container, "sh", "-c", script]);
    let said = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
    if said.is_empty() {
        eprintln!(
            "exec {script:?} in {container}: {:?}, nothing said",
            out.status
        );
    }
    said
}

#[test]
fn a_running_container_joins_and_leaves_networks_at_once() {
    if !has_docker_cli() {
        eprintln!("skipped: the docker CLI is not installed");
        return;
    }
    let (netns, daemon) = shared();
    let docker = |args: &[&str]| stdout_of(&daemon.docker(args));
    docker(&["network", "create", "--subnet", "10.97.1.0/24", "conn-a"]);
    docker(&["network", "create", "--subnet", "10.97.2.0/24", "conn-b"]);
    docker(&["network", "create", "--subnet", "10.97.3.0/24", "conn-c"]);
    docker(&["network", "create", "--subnet", "10.97.4.0/24", "conn-d"]);
    docker(&[
        "run",
        "-d",
        "--name",
        "web-b",
        "--network",
        "conn-b",
        "busybox",
        "sh",
        "-c",
        &serve("from-b"),
    ]);
    let id = docker(&[
        "run",
        "-d",
        "--name",
        "multi",
        "--network",
        "conn-a",
        "busybox",
        "sleep",
        "600",
    ]);
    let id = id.trim().to_owned();
    let web_b = networks_of(daemon, "web-b")["conn-b"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = exec(
        daemon,
        "multi",
        &format!("timeout 5 wget -qO- http://{web_b}/ || echo unreachable"),
    );
    assert!(before.contains("unreachable"), "{before}");

    // Live: the VM's spare device takes conn-b at once.
    docker(&[
        "network", "connect", "--alias", "multi-b", "conn-b", "multi",
    ]);
    let networks = networks_of(daemon, "multi");
    let b_address = networks["conn-b"]["IPAddress"].as_str().unwrap().to_owned();
    assert!(b_address.starts_with("10.97.2."), "{networks}");
    assert!(networks["conn-a"]["IPAddress"]
        .as_str()
        .unwrap()
        .starts_with("10.97.1."));
    let joined = exec(
        daemon,
        "multi",
        "ip -4 -o addr | grep -o 'inet [0-9.]*'; wget -qO- http://web-b/",
    );
    assert!(joined.contains(&format!("inet {b_address}")), "{joined}");
    assert!(joined.ends_with("from-b\n"), "{joined}");
    // Its name on conn-b is known there, at its conn-b address.
    let seen = exec(daemon, "web-b", "nslookup multi-b 2>&1 | grep -A1 Name:");
    assert!(seen.contains(&b_address), "{seen}");
    // Its tap is on conn-b's bridge.
    let tap = format!("ht-{}x", &id[..11]);
    let network_b = docker(&["network", "inspect", "--format", "{{.Id}}", "conn-b"]);
    let tap_link = common::text(&netns.ip(&["-o", "link", "show", &tap]).stdout);
    assert!(
        tap_link.contains(&format!("master hb-{}", &network_b.trim()[..12])),
        "{tap_link}"
    );
    // It sends from its own address only, as every tap does, so names the
    // resolver answers by a client's address are that client's.
    let rules = common::text(
        &netns
            .exec("nft", &["list", "table", "bridge", "hull"])
            .stdout,
    );
    assert!(
        rules.contains(&format!("iifname \"{tap}\" ip saddr != {b_address} drop")),
        "{rules}"
    );

    // As many networks as devices: the first and two more.
    docker(&["network", "connect", "conn-c", "multi"]);
    let full = daemon.docker(&["network", "connect", "conn-d", "multi"]);
    assert_fails(&full, 1, &["3 networks", "disconnect it from one first"]);
    let first = daemon.docker(&["network", "disconnect", "conn-a", "multi"]);
    assert_fails(&first, 1, &["first network", "stop the container"]);
    let again = daemon.docker(&["network", "connect", "conn-b", "multi"]);
    assert_fails(&again, 1, &["already connected"]);

    // Live disconnect: the address, the route and the tap go.
    docker(&["network", "disconnect", "conn-b", "multi"]);
    let left = exec(
        daemon,
        "multi",
        &format!("ip -4 -o addr | grep -c 10.97.2. ; timeout 5 wget -qO- http://{web_b}/ || echo unreachable"),
    );
    assert!(
        left.starts_with("0\n") && left.contains("unreachable"),
        "{left}"
    );
    assert!(!links(netns).contains(&tap), "{}", links(netns));
    assert!(networks_of(daemon, "multi").get("conn-b").is_none());

    // Connected while stopped, the networks come up at the next start.
    docker(&["stop", "-t", "1", "multi"]);
    docker(&["network", "connect", "conn-b", "multi"]);
    docker(&["start", "multi"]);
    let restarted = exec(daemon, "multi", "wget -qO- http://web-b/");
    assert_eq!(restarted, "from-b\n");
    assert_eq!(networks_of(daemon, "multi").as_object().unwrap().len(), 3);

    // A stopped container's first network can go: the next one takes over.
    docker(&["stop", "-t", "1", "multi"]);
    docker(&["network", "disconnect", "conn-a", "multi"]);
    docker(&["start", "multi"]);
    let moved = exec(
        daemon,
        "multi",
        "wget -qO- http://web-b/; ip route | grep default",
    );
    assert!(moved.starts_with("from-b\n"), "{moved}");
    let networks = networks_of(daemon, "multi");
    assert!(networks.get("conn-a").is_none(), "{networks}");

    // A container on the default network joins one besides: by address at
    // once, and by name from its next start, when its resolver is the
    // network's.
    docker(&["run", "-d", "--name", "plain", "busybox", "sleep", "600"]);
    docker(&["network", "connect", "conn-b", "plain"]);
    assert_eq!(
        exec(daemon, "plain", &format!("wget -qO- http://{web_b}/")),
        "from-b\n"
    );
    docker(&["restart", "-t", "1", "plain"]);
    assert_eq!(exec(daemon, "plain", "wget -qO- http://web-b/"), "from-b\n");
    let networks = networks_of(daemon, "plain");
    assert!(
        networks.get("bridge").is_some() && networks.get("conn-b").is_some(),
        "{networks}"
    );

    docker(&["rm", "-f", "multi", "web-b", "plain"]);
    assert!(!links(netns).contains(&format!("ht-{}", &id[..11])));
    docker(&["network", "rm", "conn-a", "conn-b", "conn-c", "conn-d"]);
}

#[test]
fn docker_run_joins_every_network_it_names_and_keeps_them_across_a_restart_of_hulld() {
    if !has_docker_cli() {
        eprintln!("skipped: the docker CLI is not installed");
        return;
    }
    let netns = NetNs::new("connrs");
    let daemon = Daemon::start_in(Some(&netns.name), &[("HULL_NO_TEMPLATES", "1")]);
    let archive = common::busybox_archive();
    stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
    let docker = |args: &[&str]| stdout_of(&daemon.docker(args));
    docker(&["network", "create", "--subnet", "10.96.1.0/24", "left"]);
    docker(&["network", "create", "--subnet", "10.96.2.0/24", "right"]);
    docker(&[
        "run",
        "-d",
        "--name",
        "r",
        "--network",
        "right",
        "busybox",
        "sh",
        "-c",
        &serve("from-right"),
    ]);
    // API 1.44's two networks at create.
    docker(&[
        "run",
        "-d",
        "--name",
        "both",
        "--network",
        "left",
        "--network",
        "right",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(exec(&daemon, "both", "wget -qO- http://r/"), "from-right\n");
    // Hull's own CLI takes --network twice too.
    let out = stdout_of(&daemon.hull(&[
        "run",
        "--rm",
        "--network",
        "left",
        "--network",
        "right",
        "busybox",
        "wget",
        "-qO-",
        "http://r/",
    ]));
    assert_eq!(out, "from-right\n");

    daemon.restart_after_crash(&[("HULL_NO_TEMPLATES", "1")]);
    // The VM and its spare device's tap outlive hulld, which takes them
    // back in the background.
    common::eventually(60, || {
        let said = exec(&daemon, "both", "wget -qO- http://r/");
        (said == "from-right\n").then_some(()).ok_or(said)
    });
    docker(&["network", "disconnect", "right", "both"]);
    let left = exec(
        &daemon,
        "both",
        "timeout 5 wget -qO- http://r/ || echo gone",
    );
    assert!(left.contains("gone"), "{left}");
    docker(&["rm", "-f", "both", "r"]);
    docker(&["network", "rm", "left", "right"]);
}

#[test]
fn a_compose_proxy_on_two_networks_reaches_both_and_they_stay_apart() {
    let (_, daemon) = shared();
    let Some(project) = common::compose::Project::new(
        daemon,
        "tiers",
        r#"version: "3"
services:
  db:
    image: busybox
    command: sh -c "mkdir -p /www && echo from-db > /www/index.html && exec httpd -f -p 80 -h /www"
    networks: [back]
  web:
    image: busybox
    command: sh -c "mkdir -p /www && echo from-web > /www/index.html && exec httpd -f -p 80 -h /www"
    networks: [front]
  proxy:
    image: busybox
    command: sleep 600
    networks: [front, back]
networks:
  front:
  back:
"#,
    ) else {
        return;
    };
    let compose = |args: &[&str]| project.run(args);
    compose(&["up", "-d"]);
    let both = compose(&[
        "exec",
        "-T",
        "proxy",
        "sh",
        "-c",
        "wget -qO- http://db/ && wget -qO- http://web/",
    ]);
    assert_eq!(both, "from-db\nfrom-web\n");
    let apart = compose(&[
        "exec",
        "-T",
        "web",
        "sh",
        "-c",
        "timeout 5 wget -qO- http://db/ || echo apart",
    ]);
    assert!(
        apart.contains("apart") && !apart.contains("from-db"),
        "{apart}"
    );
    compose(&["down"]);
}
