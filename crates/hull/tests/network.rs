//! Containers on the network, end to end: a server in a VM reached from the
//! host through a published port (hull and the docker CLI), a container
//! refused the host's own addresses, the files that name its resolvers and
//! itself, and `--network none`.

mod common;

use std::net::{TcpListener, TcpStream};

use common::{assert_fails, daemon, free_port, has_docker_cli, stdout_of, text};

fn hull_out(args: &[&str]) -> String {
    stdout_of(&daemon().hull(args))
}

/// The body of `GET /` from `127.0.0.1:port`, once the server answers.
fn fetch(port: u16) -> String {
    common::http_get("127.0.0.1", port)
}

/// A busybox httpd on port 8080 serving its hostname.
const SERVE_HOSTNAME: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn a_published_port_reaches_the_server_in_the_vm() {
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let id = hull_out(&[
        "run",
        "-d",
        "--name",
        "served",
        "--hostname",
        "inside",
        "-p",
        &publish,
        "busybox",
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    assert_eq!(fetch(port), "inside\n");

    assert_eq!(
        hull_out(&["port", "served"]),
        format!("8080/tcp -> 127.0.0.1:{port}\n")
    );
    assert_eq!(
        hull_out(&["port", "served", "8080"]),
        format!("127.0.0.1:{port}\n")
    );
    assert_fails(
        &daemon().hull(&["port", "served", "9090"]),
        1,
        &["No public port '9090/tcp' published for served"],
    );
    let listing = hull_out(&["ps", "-f", &format!("id={}", id.trim())]);
    assert!(
        listing.contains(&format!("127.0.0.1:{port}->8080/tcp")),
        "{listing}"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&hull_out(&["inspect", "served"])).unwrap();
    let settings = &inspect[0]["NetworkSettings"];
    assert_eq!(settings["IPAddress"], "10.0.2.15", "{settings}");
    assert_eq!(inspect[0]["HostConfig"]["NetworkMode"], "bridge");

    // The container's own files name its resolver and itself.
    assert_eq!(
        hull_out(&["exec", "served", "cat", "/etc/resolv.conf"]),
        "nameserver 10.0.2.3\n"
    );
    let hosts = hull_out(&["exec", "served", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.0.2.15\tinside\n"), "{hosts}");

    // Stopped, it publishes nothing; started again, the port is back.
    hull_out(&["stop", "-t", "1", "served"]);
    assert_eq!(hull_out(&["port", "served"]), "");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    hull_out(&["start", "served"]);
    assert_eq!(fetch(port), "inside\n");
    hull_out(&["rm", "-f", "served"]);

    // A host port left out is chosen at start.
    hull_out(&[
        "run",
        "-d",
        "--name",
        "anyport",
        "-p",
        "127.0.0.1::8080",
        "busybox",
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    let mapped = hull_out(&["port", "anyport", "8080/tcp"]);
    let chosen: u16 = mapped.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(chosen, 0);
    assert!(!fetch(chosen).is_empty());
    hull_out(&["rm", "-f", "anyport"]);
}

/// One of the host's own addresses that is not loopback, as `ip` lists them.
fn host_address() -> String {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip runs");
    let listing = String::from_utf8_lossy(&output.stdout).into_owned();
    listing
        .split_whitespace()
        .skip_while(|word| *word != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("the host has no global IPv4 address: {listing}"))
        .to_owned()
}

#[test]
fn a_container_is_refused_the_hosts_own_addresses_and_its_loopback() {
    // A service on one of the host's own addresses, as on its LAN address:
    // QEMU's user-mode stack would reach it from QEMU's own sockets, which
    // Hull's firewall refuses there (what lies beyond the host stays
    // reachable: network_isolation.rs shows it from a namespace outside).
    let lan = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = lan.local_addr().unwrap().port();
    let output = daemon().hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!(
            "wget -T 3 -qO- http://{}:{port}/ || echo refused",
            host_address()
        ),
    ]);
    assert_eq!(stdout_of(&output), "refused\n");
    drop(lan);

    // A service on the host's loopback, which the gateway 10.0.2.2 stands
    // for: Hull's firewall refuses QEMU's uid there.
    let private = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = private.local_addr().unwrap().port();
    let output = daemon().hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("wget -T 3 -qO- http://10.0.2.2:{port}/ || echo refused"),
    ]);
    assert_eq!(stdout_of(&output), "refused\n");
    drop(private);

    // Without a network: loopback only, and no way out.
    let output = daemon().hull(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "cat /etc/resolv.conf; wget -T 3 -qO- http://10.0.2.2:1/ || echo unreachable",
    ]);
    assert_eq!(stdout_of(&output), "unreachable\n");
    let output = daemon().hull(&["run", "--rm", "--network", "backend", "busybox", "true"]);
    assert_fails(&output, 125, &["network backend not found"]);
}

#[test]
fn clones_of_one_template_do_not_share_their_mac_address() {
    let mac = || {
        let output = daemon().hull(&[
            "run",
            "--rm",
            "busybox",
            "cat",
            "/sys/class/net/eth0/address",
        ]);
        stdout_of(&output).trim().to_owned()
    };
    let (first, second) = (mac(), mac());
    assert!(first.starts_with("02:"), "{first}");
    assert_eq!(first.len(), 17, "{first}");
    assert_ne!(first, second);
}

#[test]
fn the_docker_cli_publishes_ports() {
    if !has_docker_cli() {
        return;
    }
    let daemon = daemon();
    let port = free_port();
    let output = daemon.docker(&[
        "run",
        "-d",
        "--name",
        "dockerweb",
        "--hostname",
        "viadocker",
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        "busybox",
        "sh",
        "-c",
        SERVE_HOSTNAME,
    ]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(fetch(port), "viadocker\n");
    let output = daemon.docker(&["port", "dockerweb"]);
    assert_eq!(
        text(&output.stdout),
        format!("8080/tcp -> 127.0.0.1:{port}\n")
    );
    let output = daemon.docker(&["ps", "--filter", "name=dockerweb"]);
    assert!(
        text(&output.stdout).contains(&format!("127.0.0.1:{port}->8080/tcp")),
        "{}",
        text(&output.stdout)
    );
    assert!(daemon.docker(&["rm", "-f", "dockerweb"]).status.success());
}
