//! What containers can reach on the host, end to end, with hulld in a
//! network namespace whose resolver sits on loopback (127.0.0.53, a small
//! name server these tests run): no container reaches the host's loopback
//! services or a network it is not on, the default network included, while
//! published ports and name resolution keep working. An "outside" is a
//! namespace linked to hulld's by a veth pair, whose near end gives the
//! host an address of its own that is not loopback, as a LAN address is.

mod common;

use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::OnceLock;
use std::time::Duration;

use common::netns::{self, address_on, secret_server, NetNs};
use common::{stdout_of, Daemon};

/// The host's resolver in the namespace, as systemd-resolved's stub sits.
const RESOLVER: &str = "127.0.0.53";
/// The one name the upstream resolver knows, and its address.
const UPSTREAM_NAME: &str = "upstream.test";
const UPSTREAM_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
/// A uid of hull_vm's default range, which VMs' QEMUs run as.
const VM_UID: u32 = 1_900_000_123;

fn shared() -> &'static (NetNs, Daemon) {
    static SHARED: OnceLock<(NetNs, Daemon)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let netns = NetNs::new("reach");
        netns.set_resolv_conf(&format!("nameserver {RESOLVER}\n"));
        start_name_server(&netns);
        let daemon = Daemon::start_in(Some(&netns.name), &[]);
        let archive = common::busybox_archive();
        stdout_of(&daemon.hull(&["load", "-i", archive.to_str().unwrap()]));
        daemon.wait_for_template();
        (netns, daemon)
    })
}

/// A name server on the namespace's loopback that knows one name, over
/// UDP, and accepts TCP connections on the same port.
fn start_name_server(netns: &NetNs) {
    let (udp, tcp) = netns.within(|| {
        (
            UdpSocket::bind((RESOLVER, 53)).unwrap(),
            TcpListener::bind((RESOLVER, 53)).unwrap(),
        )
    });
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((len, peer)) = udp.recv_from(&mut buffer) {
            if let Some(reply) = name_server_reply(&buffer[..len]) {
                let _ = udp.send_to(&reply, peer);
            }
        }
    });
    std::thread::spawn(move || for _ in tcp.incoming() {});
}

/// The reply to a query: `UPSTREAM_NAME`'s address, or no such name.
fn name_server_reply(query: &[u8]) -> Option<Vec<u8>> {
    let mut at = 12;
    let mut labels = Vec::new();
    while *query.get(at)? != 0 {
        let len = usize::from(query[at]);
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).to_lowercase());
        at += 1 + len;
    }
    let end = at + 5;
    let question = query.get(12..end)?;
    let qtype = u16::from_be_bytes([query[at + 1], query[at + 2]]);
    let known = labels.join(".") == UPSTREAM_NAME;
    let with_record = known && qtype == 1;
    let mut reply = query[..2].to_vec();
    reply.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }, 0, 1]);
    reply.extend_from_slice(&[0, u8::from(with_record), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if with_record {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&UPSTREAM_ADDRESS.octets());
    }
    Some(reply)
}

/// Whether a TCP connection to `address:port` from the namespace, as
/// `uid` (`None`: root), gets through.
fn connects_as(netns: &NetNs, uid: Option<u32>, address: &str, port: u16) -> bool {
    let connect = format!("exec 3<>/dev/tcp/{address}/{port}");
    let output = match uid {
        Some(uid) => netns.exec(
            "setpriv",
            &[
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "bash",
                "-c",
                &connect,
            ],
        ),
        None => netns.exec("bash", &["-c", &connect]),
    };
    output.status.success()
}

/// A busybox httpd on port 80 serving `text`.
fn serve(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

#[test]
fn the_vm_uids_are_refused_the_hosts_own_addresses_and_bridge_networks_but_not_its_resolver() {
    let (netns, daemon) = shared();
    stdout_of(&daemon.hull(&["network", "create", "--subnet", "10.97.3.0/24", "ruled"]));
    let loopback = secret_server(netns, "127.0.0.1", "loopback-secret");
    let everywhere = secret_server(netns, "0.0.0.0", "host-secret");

    // Root, as any other process of the host, is not ruled.
    assert!(connects_as(netns, None, "127.0.0.1", loopback));
    assert!(connects_as(netns, None, "10.97.3.1", everywhere));
    assert!(connects_as(
        netns,
        Some(VM_UID - 1_000),
        "127.0.0.1",
        loopback
    ));
    // A process of a VM's uid, as QEMU's user-mode network is.
    assert!(!connects_as(netns, Some(VM_UID), "127.0.0.1", loopback));
    assert!(!connects_as(netns, Some(VM_UID), "10.97.3.1", everywhere));
    assert!(connects_as(netns, Some(VM_UID), RESOLVER, 53));
    // The host's own address on a link, and what lies beyond it.
    let outside = NetNs::new("near");
    netns::link(netns, "198.51.100.1/24", &outside, "198.51.100.2/24");
    let near = secret_server(netns, "198.51.100.1", "near-secret");
    let far = secret_server(&outside, "198.51.100.2", "far");
    assert!(connects_as(netns, None, "198.51.100.1", near));
    assert!(!connects_as(netns, Some(VM_UID), "198.51.100.1", near));
    assert!(connects_as(netns, Some(VM_UID), "198.51.100.2", far));
    stdout_of(&daemon.hull(&["network", "rm", "ruled"]));
    // The rules stay with no network at all.
    assert!(!connects_as(netns, Some(VM_UID), "127.0.0.1", loopback));
}

/// Needs QEMU to run as a uid of the VM range (hull-vm's confinement):
/// QEMU's user-mode network makes the guest's connections from QEMU's own
/// sockets on the host.
#[test]
fn a_container_on_the_default_network_reaches_neither_the_hosts_loopback_nor_a_bridge_network() {
    let (netns, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    let loopback = secret_server(netns, "127.0.0.1", "loopback-secret");
    let everywhere = secret_server(netns, "0.0.0.0", "host-secret");
    hull(&["network", "create", "--subnet", "10.97.4.0/24", "apart"]);
    hull(&[
        "run",
        "-d",
        "--name",
        "apart-web",
        "--network",
        "apart",
        "busybox",
        "sh",
        "-c",
        &serve("bridge-secret"),
    ]);
    let (web, gateway) = address_on(daemon, "apart", "apart-web");
    hull(&[
        "run",
        "-d",
        "--name",
        "published",
        "-p",
        "127.0.0.1:8095:80",
        "busybox",
        "sh",
        "-c",
        &serve("published"),
    ]);

    let out = hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!(
            "timeout 5 nc 10.0.2.2 {loopback} </dev/null; \
             timeout 5 wget -qO- http://{web}/; \
             timeout 5 nc {gateway} {everywhere} </dev/null; \
             nslookup {UPSTREAM_NAME}; echo done"
        ),
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains("loopback-secret"), "{out}");
    assert!(!out.contains("bridge-secret"), "{out}");
    assert!(!out.contains("host-secret"), "{out}");
    // Names still resolve, through QEMU's DNS and the host's resolver on
    // loopback; a published port still answers.
    assert!(out.contains(&UPSTREAM_ADDRESS.to_string()), "{out}");
    assert_eq!(
        netns.within(|| common::http_get("127.0.0.1", 8095)),
        "published\n"
    );
    hull(&["rm", "-f", "apart-web", "published"]);
    hull(&["network", "rm", "apart"]);
}

#[test]
fn a_container_on_a_bridge_network_reaches_the_host_only_at_published_ports_and_its_resolver() {
    let (netns, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    let loopback = secret_server(netns, "127.0.0.1", "loopback-secret");
    let everywhere = secret_server(netns, "0.0.0.0", "host-secret");
    hull(&["network", "create", "--subnet", "10.97.5.0/24", "fenced"]);
    hull(&[
        "run",
        "-d",
        "--name",
        "fenced-web",
        "--network",
        "fenced",
        "-p",
        "8096:80",
        "busybox",
        "sh",
        "-c",
        &serve("published"),
    ]);
    let gateway = "10.97.5.1";
    // The gateway routes 127.0.0.0/8 (published ports answer on the host's
    // loopback), so a guest with root sends to it there directly.
    let out = hull(&[
        "run",
        "--rm",
        "--network",
        "fenced",
        "busybox",
        "sh",
        "-c",
        &format!(
            "timeout 5 nc {gateway} {everywhere} </dev/null; \
             timeout 5 nc {gateway} {loopback} </dev/null; \
             nslookup fenced-web; nslookup {UPSTREAM_NAME}; \
             echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; \
             echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; \
             ip addr del 127.0.0.1/8 dev lo; \
             ip route add 127.0.0.0/8 via {gateway} dev eth0; \
             timeout 5 nc 127.0.0.1 {loopback} </dev/null; echo done"
        ),
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains("host-secret"), "{out}");
    assert!(!out.contains("loopback-secret"), "{out}");
    // Its network's names and the host's, through the resolver.
    assert!(out.contains("10.97.5.2"), "{out}");
    assert!(out.contains(&UPSTREAM_ADDRESS.to_string()), "{out}");
    assert_eq!(
        netns.within(|| common::http_get("127.0.0.1", 8096)),
        "published\n"
    );
    assert_eq!(
        netns.within(|| common::http_get(gateway, 8096)),
        "published\n"
    );
    hull(&["rm", "-f", "fenced-web"]);
    hull(&["network", "rm", "fenced"]);
}

#[test]
fn an_internal_network_resolves_its_containers_but_not_upstream_names() {
    let (_, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    hull(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.97.6.0/24",
        "inward",
    ]);
    let out = hull(&[
        "run",
        "--rm",
        "--name",
        "inner",
        "--network",
        "inward",
        "busybox",
        "sh",
        "-c",
        &format!("nslookup inner; nslookup {UPSTREAM_NAME}; echo done"),
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    assert!(out.contains("10.97.6.2"), "{out}");
    assert!(!out.contains(&UPSTREAM_ADDRESS.to_string()), "{out}");
    hull(&["network", "rm", "inward"]);
}

/// A query for `name`'s IPv4 address, with recursion desired.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut message = id.to_be_bytes().to_vec();
    message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        message.push(label.len() as u8);
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    message
}

/// A datagram on `socket` within `wait`, if one comes.
fn receive(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buffer = [0u8; 512];
    let len = socket.recv(&mut buffer).ok()?;
    Some(buffer[..len].to_vec())
}

#[test]
fn containers_are_refused_the_hosts_other_addresses_yet_reach_outside_and_names() {
    let (netns, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    let outside = NetNs::new("lan");
    netns::link(netns, "203.0.113.1/24", &outside, "203.0.113.2/24");
    let host = secret_server(netns, "203.0.113.1", "lan-secret");
    let peer = secret_server(&outside, "203.0.113.2", "outside-peer");
    hull(&["network", "create", "--subnet", "10.97.7.0/24", "lan"]);
    hull(&[
        "run",
        "-d",
        "--name",
        "lan-web",
        "--network",
        "lan",
        "-p",
        "8097:80",
        "busybox",
        "sh",
        "-c",
        &serve("published-lan"),
    ]);
    // Published ports answer at the host's address, from outside.
    assert_eq!(
        outside.within(|| common::http_get("203.0.113.1", 8097)),
        "published-lan\n"
    );

    let probe = format!(
        "timeout 5 nc 203.0.113.1 {host} </dev/null; \
         timeout 5 nc 203.0.113.2 {peer} </dev/null; \
         nslookup {UPSTREAM_NAME}; echo done"
    );
    // The default network, through its QEMU's sockets, which also still
    // reach a bridge network's published port at the host's address.
    let out = hull(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("{probe}; timeout 5 wget -qO- http://203.0.113.1:8097/"),
    ]);
    assert!(out.contains("done\n"), "{out}");
    assert!(!out.contains("lan-secret"), "{out}");
    assert!(out.contains("outside-peer"), "{out}");
    assert!(out.contains(&UPSTREAM_ADDRESS.to_string()), "{out}");
    assert!(out.ends_with("published-lan\n"), "{out}");
    // A bridge network, through its resolver and NAT.
    let out = hull(&[
        "run",
        "--rm",
        "--network",
        "lan",
        "busybox",
        "sh",
        "-c",
        &probe,
    ]);
    assert!(out.ends_with("done\n"), "{out}");
    assert!(!out.contains("lan-secret"), "{out}");
    assert!(out.contains("outside-peer"), "{out}");
    assert!(out.contains(&UPSTREAM_ADDRESS.to_string()), "{out}");
    hull(&["rm", "-f", "lan-web"]);
    hull(&["network", "rm", "lan"]);
}

/// A guest with root may send from any source address. Without a VM: a
/// namespace on the network's bridge stands in for one.
#[test]
fn a_networks_resolver_answers_no_query_whose_source_is_not_on_the_network() {
    let (netns, daemon) = shared();
    let hull = |args: &[&str]| stdout_of(&daemon.hull(args));
    let id = hull(&["network", "create", "--subnet", "10.97.8.0/24", "spoofed"]);
    let bridge = format!("hb-{}", &id.trim()[..12]);
    // The victim whose address the forged queries carry, outside.
    let outside = NetNs::new("victim");
    netns::link(netns, "198.18.0.1/24", &outside, "198.18.0.2/24");
    let guest = NetNs::new("guest");
    netns.ip(&[
        "link",
        "add",
        "spoofer",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &guest.name,
    ]);
    netns.ip(&["link", "set", "spoofer", "master", &bridge, "up"]);
    guest.ip(&["link", "set", "eth0", "up"]);
    guest.ip(&["addr", "add", "10.97.8.50/24", "dev", "eth0"]);
    guest.ip(&["addr", "add", "198.18.0.2/32", "dev", "eth0"]);
    // A host whose reverse-path filter lets such a source in.
    for link in ["all", bridge.as_str()] {
        let key = format!("net.ipv4.conf.{link}.rp_filter=0");
        assert!(netns.exec("sysctl", &["-qw", &key]).status.success());
    }

    let victim = outside.within(|| UdpSocket::bind("198.18.0.2:0").unwrap());
    let port = victim.local_addr().unwrap().port();
    let (forged, honest) = guest.within(|| {
        (
            UdpSocket::bind(("198.18.0.2", port)).unwrap(),
            UdpSocket::bind("10.97.8.50:0").unwrap(),
        )
    });
    forged
        .send_to(&query(1, UPSTREAM_NAME), "10.97.8.1:53")
        .unwrap();
    // The network's own address is answered, so the resolver is up and
    // had the forged query first.
    let mut answer = Vec::new();
    common::eventually(30, || {
        honest
            .send_to(&query(2, UPSTREAM_NAME), "10.97.8.1:53")
            .map_err(|e| e.to_string())?;
        answer = receive(&honest, Duration::from_secs(2)).ok_or("no answer")?;
        Ok(())
    });
    assert!(answer.ends_with(&UPSTREAM_ADDRESS.octets()), "{answer:?}");
    assert_eq!(receive(&victim, Duration::from_secs(2)), None);
    assert_eq!(receive(&forged, Duration::from_millis(100)), None);
    netns.ip(&["link", "del", "spoofer"]);
    hull(&["network", "rm", "spoofed"]);
}
