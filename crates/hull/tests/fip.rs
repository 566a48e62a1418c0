//! Floating IPs, end to end. hulld runs in a namespace standing for the
//! host, whose uplink is a veth to an "outside" namespace standing for the
//! internet (198.51.100.0/24, the pool 198.51.100.16/28 on it): a FIP is
//! the only way from outside to a tenant's container, and only to the
//! ports it published; the container's connections out leave from it.
//! One busybox VM serves every case.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::Output;
use std::sync::OnceLock;

use common::cloud::Cloud;
use common::netns::{self, reaches, NetNs};
use common::{assert_fails, eventually, stdout_of, text};

const POOL: &str = "198.51.100.16/28";
const OUTSIDE: &str = "198.51.100.2";

struct World {
    cloud: Cloud,
    outside: NetNs,
    acme: (String, String),
    beta: (String, String),
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let host = NetNs::new("fiphost");
        let outside = NetNs::new("outside");
        netns::link(&host, "198.51.100.1/24", &outside, "198.51.100.2/24");
        let uplink = uplink_of(&host);
        let cloud = Cloud::start_in(host, &[("HULL_FIP_POOL", POOL), ("HULL_UPLINK", &uplink)]);
        let acme = cloud.tenant_with_key("acme");
        let beta = cloud.tenant_with_key("beta");
        // The cases at once hold more than Hyper.sh's default of two.
        stdout_of(&cloud.daemon.hull(&[
            "admin",
            "tenant",
            "quota",
            "acme",
            "fips=8,containers=20",
        ]));
        let archive = common::busybox_archive();
        stdout_of(
            &cloud
                .daemon
                .hull(&["load", "-i", archive.to_str().unwrap()]),
        );
        for (access, secret) in [&acme, &beta] {
            stdout_of(&cloud.tenant(access, secret, &["load", "-i", archive.to_str().unwrap()]));
        }
        World {
            cloud,
            outside,
            acme,
            beta,
        }
    })
}

/// The host's end of the veth to the outside.
fn uplink_of(host: &NetNs) -> String {
    let links = text(&host.ip(&["-o", "link", "show", "type", "veth"]).stdout);
    links
        .split_whitespace()
        .nth(1)
        .and_then(|name| name.split('@').next())
        .expect("the uplink veth")
        .to_owned()
}

impl World {
    fn acme(&self, args: &[&str]) -> Output {
        self.cloud.tenant(&self.acme.0, &self.acme.1, args)
    }

    fn beta(&self, args: &[&str]) -> Output {
        self.cloud.tenant(&self.beta.0, &self.beta.1, args)
    }

    fn host(&self) -> &NetNs {
        self.cloud.netns.as_ref().unwrap()
    }

    /// The listing as the tenant of `keys` sees it.
    fn listing(&self, keys: &(String, String)) -> serde_json::Value {
        let (status, body) = self.cloud.curl(
            "GET",
            "/fips",
            &self
                .cloud
                .signed_headers("GET", "/fips", b"", &keys.0, &keys.1),
            None,
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The container `ip` is attached to, as the tenant of `keys` lists it.
    fn container_of(&self, keys: &(String, String), ip: &str) -> String {
        let listing = self.listing(keys);
        let entry = listing
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["fip"] == ip)
            .unwrap_or_else(|| panic!("{ip} in {listing}"));
        entry["container"].as_str().unwrap().to_owned()
    }

    /// A signed POST as the tenant of `keys`: (status, body).
    fn post(&self, keys: &(String, String), target: &str) -> (u16, String) {
        let headers = self
            .cloud
            .signed_headers("POST", target, b"", &keys.0, &keys.1);
        self.cloud.curl("POST", target, &headers, None)
    }
}

/// Whether `port` of `ip` answers from outside.
fn open_from_outside(world: &World, ip: &str, port: u16) -> bool {
    reaches(&world.outside, ip, port)
}

/// The source address of the next connection to a listener outside, made
/// by `connect` (which may wait for the listener to close it).
fn source_seen_outside(world: &World, connect: impl FnOnce(u16) + Send) -> Ipv4Addr {
    let listener = world
        .outside
        .within(|| TcpListener::bind((OUTSIDE, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let mut peer = None;
    std::thread::scope(|scope| {
        let connecting = scope.spawn(move || connect(port));
        eventually(30, || {
            // Dropped at once: the client sees its connection closed.
            let (_, from) = listener
                .accept()
                .map_err(|e| format!("no connection came out: {e}"))?;
            peer = Some(from);
            Ok(())
        });
        connecting.join().unwrap();
    });
    match peer.unwrap().ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("an IPv6 peer {other}"),
    }
}

#[test]
fn a_fip_is_the_containers_address_both_ways_through_stop_and_start_until_detached() {
    let world = world();
    let ip = stdout_of(&world.acme(&["fip", "allocate", "1"]))
        .trim()
        .to_owned();
    assert!(ip.starts_with("198.51.100."), "{ip}");
    stdout_of(&world.acme(&["fip", "name", &ip, "web-ip"]));
    // Port 80 published; 8081 served but not published.
    stdout_of(&world.acme(&[
        "run", "-d", "--name", "web", "-p", "80", "busybox", "sh", "-c",
        "mkdir -p /www && echo fip-page > /www/index.html && httpd -p 8081 -h /www && exec httpd -f -p 80 -h /www",
    ]));
    stdout_of(&world.acme(&["fip", "attach", &ip, "web"]));
    assert_eq!(world.container_of(&world.acme, &ip), "web");
    let listed = stdout_of(&world.acme(&["fip", "ls"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&ip) && l.contains("web-ip")),
        "{listed}"
    );

    eventually(60, || {
        open_from_outside(world, &ip, 80)
            .then_some(())
            .ok_or_else(|| format!("{ip}:80 does not answer from outside"))
    });
    let page = world.outside.within(|| common::http_get(&ip, 80));
    assert_eq!(page.trim(), "fip-page");
    // Served inside, but never published: a FIP opens no port.
    let answers_inside =
        stdout_of(&world.acme(&["exec", "web", "wget", "-q", "-O-", "http://127.0.0.1:8081/"]));
    assert_eq!(answers_inside.trim(), "fip-page");
    assert!(!open_from_outside(world, &ip, 8081));
    // Nor does an address of the pool that is nobody's.
    assert!(!open_from_outside(world, "198.51.100.30", 80));

    let connect = |port: u16| {
        let probe = format!("echo hello | nc -w 10 {OUTSIDE} {port}");
        let _ = world.acme(&["exec", "web", "sh", "-c", &probe]);
    };
    assert_eq!(source_seen_outside(world, connect).to_string(), ip);

    // Through stop and start.
    stdout_of(&world.acme(&["stop", "-t", "1", "web"]));
    assert!(!open_from_outside(world, &ip, 80));
    assert_eq!(world.container_of(&world.acme, &ip), "web");
    stdout_of(&world.acme(&["start", "web"]));
    eventually(60, || {
        open_from_outside(world, &ip, 80)
            .then_some(())
            .ok_or_else(|| "not reachable after start".to_owned())
    });
    assert_eq!(source_seen_outside(world, connect).to_string(), ip);

    // Detached: unreachable, and out through the host's own address again.
    stdout_of(&world.acme(&["fip", "detach", "web"]));
    assert!(!open_from_outside(world, &ip, 80));
    assert_eq!(
        source_seen_outside(world, connect).to_string(),
        "198.51.100.1"
    );
    let dangling = stdout_of(&world.acme(&["fip", "ls", "-f", "dangling=true"]));
    assert!(dangling.contains(&ip), "{dangling}");

    // Removed with the container: detached, still the tenant's.
    stdout_of(&world.acme(&["fip", "attach", &ip, "web"]));
    let proxies = text(&world.host().ip(&["neigh", "show", "proxy"]).stdout);
    assert!(proxies.contains(&ip), "proxy ARP for {ip}: {proxies}");
    stdout_of(&world.acme(&["rm", "-f", "web"]));
    assert_eq!(world.container_of(&world.acme, &ip), "");
    let proxies = text(&world.host().ip(&["neigh", "show", "proxy"]).stdout);
    assert!(!proxies.contains(&ip), "{proxies}");

    stdout_of(&world.acme(&["fip", "release", &ip]));
    let listed = world.listing(&world.acme);
    assert!(!listed.to_string().contains(&ip), "{listed}");
}

#[test]
fn fips_are_counted_against_the_quota_and_nothing_is_allocated_over_it() {
    let world = world();
    let gamma = world.cloud.tenant_with_key("gamma");
    stdout_of(
        &world
            .cloud
            .daemon
            .hull(&["admin", "tenant", "quota", "gamma", "fips=1"]),
    );
    let (status, body) = world.post(&gamma, "/fips/allocate?count=2");
    assert_eq!(status, 403, "{body}");
    for needle in ["fips", "in use 0", "asked 2", "limit 1"] {
        assert!(body.contains(needle), "{needle} in {body}");
    }
    assert_eq!(world.listing(&gamma), serde_json::json!([]));
    let (status, body) = world.post(&gamma, "/fips/allocate?count=1");
    assert_eq!(status, 201, "{body}");
    let (status, body) = world.post(&gamma, "/fips/allocate?count=1");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("in use 1"), "{body}");
    // Hostile counts and addresses are refused before anything is allocated.
    for target in [
        "/fips/allocate?count=99999999999999999999",
        "/fips/allocate?count=-1",
        "/fips/allocate?count=0",
        "/fips/release?ip=not-an-ip",
        "/fips/name?ip=198.51.100.17&name=..%2F..",
    ] {
        let (status, body) = world.post(&gamma, target);
        assert!(status == 400 || status == 404, "{target}: {status} {body}");
    }
    assert_eq!(world.listing(&gamma).as_array().unwrap().len(), 1);

    // The FIP holds the tenant back from removal, unless forced: then it
    // goes back to the pool, and a new tenant of the name holds nothing.
    let hull = |args: &[&str]| world.cloud.daemon.hull(args);
    let refused = hull(&["admin", "tenant", "rm", "gamma"]);
    assert_fails(&refused, 1, &["1 floating IPs"]);
    stdout_of(&hull(&["admin", "tenant", "rm", "--force", "gamma"]));
    let gamma = world.cloud.tenant_with_key("gamma");
    assert_eq!(world.listing(&gamma), serde_json::json!([]));
}

#[test]
fn another_tenants_fip_and_container_answer_as_missing_ones() {
    let world = world();
    let ip = stdout_of(&world.acme(&["fip", "allocate", "1"]))
        .trim()
        .to_owned();
    // Created, never started: no VM is needed to be attached to.
    stdout_of(&world.beta(&["create", "--name", "theirs", "busybox"]));
    stdout_of(&world.acme(&["create", "--name", "mine", "busybox"]));
    let missing = "198.51.100.29";
    let pairs = [
        (
            format!("/fips/attach?ip={ip}&container=theirs"),
            format!("/fips/attach?ip={missing}&container=theirs"),
        ),
        (
            format!("/fips/release?ip={ip}"),
            format!("/fips/release?ip={missing}"),
        ),
        (
            format!("/fips/name?ip={ip}&name=x"),
            format!("/fips/name?ip={missing}&name=x"),
        ),
    ];
    for (theirs, none) in pairs {
        let (status, body) = world.post(&world.beta, &theirs);
        assert_eq!(status, 404, "{theirs}: {body}");
        let (_, none_body) = world.post(&world.beta, &none);
        assert_eq!(body.replace(&ip, "X"), none_body.replace(missing, "X"));
    }
    // Beta's container is not acme's to attach to, whatever the FIP.
    let (status, body) = world.post(
        &world.acme,
        &format!("/fips/attach?ip={ip}&container=theirs"),
    );
    assert_eq!(status, 404, "{body}");
    assert!(world.listing(&world.beta).as_array().unwrap().is_empty());
    // Its own FIP on its own (stopped) container is fine, and stays.
    stdout_of(&world.acme(&["fip", "attach", &ip, "mine"]));
    let refused = world.acme(&["fip", "release", &ip]);
    assert!(
        text(&refused.stderr).contains("detach it"),
        "{}",
        text(&refused.stderr)
    );
    stdout_of(&world.acme(&["rm", "mine"]));
    stdout_of(&world.acme(&["fip", "release", &ip]));
    stdout_of(&world.beta(&["rm", "theirs"]));
}

#[test]
fn the_operator_manages_every_fip_and_user_mode_containers_get_none() {
    let world = world();
    let daemon = &world.cloud.daemon;
    let ip = stdout_of(&daemon.hull(&["fip", "allocate", "1"]))
        .trim()
        .to_owned();
    stdout_of(&daemon.hull(&["create", "--name", "plain", "busybox"]));
    let refused = daemon.hull(&["fip", "attach", &ip, "plain"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("bridge network"),
        "{}",
        text(&refused.stderr)
    );
    let listed = stdout_of(&daemon.hull(&["fip", "ls"]));
    assert!(
        listed.contains(&ip) && listed.contains("TENANT"),
        "{listed}"
    );
    stdout_of(&daemon.hull(&["fip", "name", &ip, "ops"]));
    stdout_of(&daemon.hull(&["fip", "release", &ip]));
    stdout_of(&daemon.hull(&["rm", "plain"]));
    // A tenant's FIP, released by the operator.
    let theirs = stdout_of(&world.beta(&["fip", "allocate", "1"]))
        .trim()
        .to_owned();
    stdout_of(&daemon.hull(&["fip", "release", &theirs]));
    assert!(!world.listing(&world.beta).to_string().contains(&theirs));
}

/// The tenant's service `name`, as `service inspect` shows it.
fn service_of(world: &World, name: &str) -> serde_json::Value {
    let out = stdout_of(&world.acme(&["service", "inspect", name]));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// Waits until `name` has `count` replicas in its balancer.
fn wait_healthy(world: &World, name: &str, count: usize) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    eventually(180, || {
        last = service_of(world, name);
        let backends = last["backends"].as_array().map_or(0, Vec::len);
        (backends == count)
            .then_some(())
            .ok_or_else(|| format!("not yet {count} replicas in the balancer: {last}"))
    });
    last
}

/// The body of one `GET /` at `ip:80` from outside, if it answered.
fn get_from_outside(world: &World, ip: &str) -> Option<String> {
    use std::io::{Read, Write};
    let target = format!("{ip}:80").parse().unwrap();
    world.outside.within(|| {
        let timeout = std::time::Duration::from_secs(3);
        let mut stream = std::net::TcpStream::connect_timeout(&target, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer.split_once("\r\n\r\n")?.1.trim().to_owned())
    })
}

#[test]
fn a_fip_on_a_service_reaches_its_balancer_from_outside_and_its_replicas_leave_from_it() {
    let world = world();
    let serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    // The translated service's replicas are fenced: their port in, all out.
    let group = world.cloud.daemon.root.join("pubweb.yaml");
    std::fs::write(
        &group,
        "name: pubweb\nrules:\n  - {direction: ingress, protocol: tcp, port_range_min: 8080, port_range_max: 8080, remote_ip_prefix: 0.0.0.0/0}\n  - {direction: egress}\n",
    )
    .unwrap();
    stdout_of(&world.acme(&["sg", "create", "-f", group.to_str().unwrap()]));
    let create = |name: &str, protocol: &str, group: &str| {
        let mut args = vec![
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            "2",
            "--service-port",
            "80",
            "--container-port",
            "8080",
            "--protocol",
            protocol,
            "--health-check",
            "interval=500ms,fall=2,rise=1",
        ];
        if !group.is_empty() {
            args.extend(["--sg", group]);
        }
        args.extend(["busybox", "sh", "-c", serve]);
        world.acme(&args)
    };
    // A group that is not the tenant's makes nothing.
    assert_fails(&create("nogroup", "tcp", "nosuch"), 1, &["nosuch"]);
    stdout_of(&create("pub", "tcp", "pubweb"));
    stdout_of(&create("pubhttp", "http", ""));
    let ips: Vec<String> = stdout_of(&world.acme(&["fip", "allocate", "2"]))
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let (ip, ip_http) = (ips[0].as_str(), ips[1].as_str());
    stdout_of(&world.acme(&["service", "attach-fip", "--fip", ip, "pub"]));
    // One argument names a container or a service, as Hyper.sh's client.
    stdout_of(&world.acme(&["fip", "attach", ip_http, "pubhttp"]));
    let pub_service = wait_healthy(world, "pub", 2);
    assert_eq!(pub_service["fip"], ip, "{pub_service}");
    wait_healthy(world, "pubhttp", 2);
    assert_eq!(entry_of(world, ip)["service"], "pub");
    assert_eq!(entry_of(world, ip)["container"], "");
    assert_eq!(entry_of(world, ip_http)["service"], "pubhttp");

    // From outside, the FIP spreads over both replicas, translated or
    // proxied.
    for (ip, service) in [(ip, "pub"), (ip_http, "pubhttp")] {
        let mut seen = std::collections::BTreeSet::new();
        eventually(90, || {
            if let Some(body) = get_from_outside(world, ip) {
                seen.insert(body);
            }
            (seen.len() == 2)
                .then_some(())
                .ok_or_else(|| format!("{ip} from outside reached {seen:?}"))
        });
        for replica in &seen {
            assert!(replica.starts_with(&format!("{service}-")), "{seen:?}");
        }
        // Only the service's port: not the replicas' own.
        assert!(!open_from_outside(world, ip, 8080));
    }

    // The tenant's bridge keeps its own address as taps come and go (it
    // would otherwise take its lowest port's, and the guests' cached
    // gateway would point nowhere).
    let bridges = text(
        &world
            .host()
            .ip(&["-o", "link", "show", "type", "bridge"])
            .stdout,
    );
    for line in bridges.lines() {
        assert!(line.contains("link/ether 02:48:0a:"), "{bridges}");
    }

    // Its replicas are in the group, which is in use while they are.
    assert_eq!(
        pub_service["security_groups"],
        serde_json::json!(["pubweb"])
    );
    assert_fails(&world.acme(&["sg", "rm", "pubweb"]), 1, &["in use"]);

    // The replicas go out from the service's FIP.
    let replica = pub_service["members"][0]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("a member's name in {pub_service}"))
        .to_owned();
    let connect = |port: u16| {
        let probe = format!("echo hello | nc -w 10 {OUTSIDE} {port}");
        let _ = world.acme(&["exec", &replica, "sh", "-c", &probe]);
    };
    assert_eq!(source_seen_outside(world, connect).to_string(), ip);

    // Another tenant can't attach its FIP to the service, nor detach it.
    let theirs = stdout_of(&world.beta(&["fip", "allocate", "1"]))
        .trim()
        .to_owned();
    let (status, body) = world.post(
        &world.beta,
        &format!("/fips/attach?ip={theirs}&service=pub"),
    );
    assert_eq!(status, 404, "{body}");
    let (status, body) = world.post(&world.beta, "/fips/detach?service=pub");
    assert_eq!(status, 404, "{body}");
    let refused = world.beta(&["fip", "attach", &theirs, "pub"]);
    assert_fails(&refused, 1, &["no container or service pub"]);
    stdout_of(&world.beta(&["fip", "release", &theirs]));
    // Nor can acme release it while the service holds it.
    let refused = world.acme(&["fip", "release", ip]);
    assert_fails(&refused, 1, &["detach it"]);

    // Detached: gone from outside, and out through the host again.
    stdout_of(&world.acme(&["fip", "detach", "pub"]));
    assert!(!open_from_outside(world, ip, 80));
    assert_eq!(
        source_seen_outside(world, connect).to_string(),
        "198.51.100.1"
    );
    assert!(service_of(world, "pub").get("fip").is_none());
    // A removed service gives its FIP back, detached.
    stdout_of(&world.acme(&["service", "rm", "pubhttp"]));
    assert_eq!(entry_of(world, ip_http)["service"], "");
    assert!(!open_from_outside(world, ip_http, 80));
    stdout_of(&world.acme(&["service", "rm", "pub"]));
    eventually(60, || {
        let out = world.acme(&["sg", "rm", "pubweb"]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| text(&out.stderr))
    });
    let services = stdout_of(&world.acme(&["service", "ls"]));
    assert!(!services.contains("nogroup"), "{services}");
    for ip in [ip, ip_http] {
        stdout_of(&world.acme(&["fip", "release", ip]));
    }
}

/// `ip`'s entry in acme's listing.
fn entry_of(world: &World, ip: &str) -> serde_json::Value {
    let listing = world.listing(&world.acme);
    listing
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fip"] == ip)
        .cloned()
        .unwrap_or_else(|| panic!("{ip} in {listing}"))
}
