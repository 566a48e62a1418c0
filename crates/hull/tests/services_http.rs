//! HTTP services, end to end: a tenant's service of three busybox httpd
//! replicas behind hulld's proxy (`--protocol http --algorithm
//! leastconn`, health by `GET /healthz`). Each replica serves its
//! hostname at `/` and at `/healthz`, and at `/cgi-bin/slow` after 4 s.
//! hulld runs in a network namespace standing for the host; the host (the
//! test, inside that namespace) and a client container on the same bridge
//! reach the service at its address and name.
//!
//! `bench` (ignored; scripts/bench-service.sh runs it) measures the proxy
//! and nftables against a replica reached straight.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::cloud::Cloud;
use common::{stdout_of, text};

const SERVE: &str = "mkdir -p /www/cgi-bin && hostname > /www/index.html && hostname > /www/healthz \
    && printf '#!/bin/sh\\nsleep 4\\necho Content-Type: text/plain\\necho\\nhostname\\n' > /www/cgi-bin/slow \
    && chmod +x /www/cgi-bin/slow && exec httpd -f -p 8080 -h /www";

struct Setup {
    cloud: Cloud,
    acme: (String, String),
    vip: String,
    /// The address of `sticky`, a TCP service with affinity.
    sticky: String,
}

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

/// Creates service `name` of `replicas` with `extra` options: its address.
fn create(
    cloud: &Cloud,
    acme: &(String, String),
    name: &str,
    replicas: &str,
    extra: &[&str],
) -> String {
    create_from(cloud, acme, name, replicas, extra, "busybox")
}

/// [`create`] with replicas of `image`.
fn create_from(
    cloud: &Cloud,
    acme: &(String, String),
    name: &str,
    replicas: &str,
    extra: &[&str],
    image: &str,
) -> String {
    let mut args = vec![
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        replicas,
        "--service-port",
        "80",
        "--container-port",
        "8080",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[image, "sh", "-c", SERVE]);
    as_tenant(cloud, acme, &args).trim().to_owned()
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let cloud = Cloud::start_isolated(&[("HULL_NO_TEMPLATES", "1")]);
        let acme = cloud.tenant_with_key("acme");
        let archive = common::busybox_archive();
        as_tenant(&cloud, &acme, &["load", "-i", archive.to_str().unwrap()]);
        let vip = create(
            &cloud,
            &acme,
            "web",
            "3",
            &[
                "--protocol",
                "http",
                "--algorithm",
                "leastconn",
                "--health-check",
                "interval=500ms,fall=2,rise=1,path=/healthz",
            ],
        );
        // TCP through the proxy: the fewest connections, and a client
        // keeps its replica.
        let sticky = create(
            &cloud,
            &acme,
            "sticky",
            "2",
            &[
                "--algorithm",
                "leastconn",
                "--session-affinity",
                "--health-check",
                "interval=500ms,fall=2,rise=1",
            ],
        );
        as_tenant(
            &cloud,
            &acme,
            &["run", "-d", "--name", "client", "busybox", "sleep", "3600"],
        );
        let setup = Setup {
            cloud,
            acme,
            vip,
            sticky,
        };
        wait_healthy(&setup, "web", 3);
        wait_healthy(&setup, "sticky", 2);
        setup
    })
}

/// One case at a time: they take replicas out and hold connections.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn inspect(setup: &Setup, name: &str) -> serde_json::Value {
    let out = as_tenant(&setup.cloud, &setup.acme, &["service", "inspect", name]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

fn wait_healthy(setup: &Setup, name: &str, count: usize) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    common::eventually(150, || {
        last = inspect(setup, name);
        let members = last["members"].as_array().map_or(0, Vec::len);
        let backends = last["backends"].as_array().map_or(0, Vec::len);
        (members == count && backends == count)
            .then_some(())
            .ok_or_else(|| format!("not yet {count} healthy replicas: {last}"))
    });
    last
}

/// `request` to `target` from the host: the answer's status and body.
fn exchange(setup: &Setup, target: SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let host = setup.cloud.netns.as_ref().unwrap();
    host.within(|| {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(8))).ok()?;
        stream.write_all(request).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.trim().to_owned()))
    })
}

fn service(setup: &Setup) -> SocketAddr {
    format!("{}:80", setup.vip).parse().unwrap()
}

fn get(setup: &Setup, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: web\r\n\r\n");
    match exchange(setup, service(setup), request.as_bytes())? {
        (200, body) => Some(body),
        _ => None,
    }
}

fn spread(setup: &Setup, n: usize) -> BTreeMap<Option<String>, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(get(setup, "/")).or_default() += 1;
    }
    counts
}

#[test]
fn requests_spread_and_a_slow_request_keeps_only_its_replica_busy() {
    let s = setup();
    let _turn = turn();
    wait_healthy(s, "web", 3);
    let counts = spread(s, 30);
    eprintln!("30 requests: {counts:?}");
    assert_eq!(counts.get(&None), None, "{counts:?}");
    for name in ["web-1", "web-2", "web-3"] {
        let got = counts.get(&Some(name.to_owned())).copied().unwrap_or(0);
        assert!((8..=12).contains(&got), "{name}: {counts:?}");
    }

    // One replica holds a slow request: leastconn sends the rest elsewhere.
    let slow = std::thread::scope(|scope| {
        let held = scope.spawn(|| get(s, "/cgi-bin/slow"));
        std::thread::sleep(Duration::from_millis(700));
        let began = Instant::now();
        let meanwhile = spread(s, 10);
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "the others answered at once"
        );
        let slow = held.join().unwrap().expect("the slow request is answered");
        (slow, meanwhile)
    });
    let (busy, meanwhile) = slow;
    eprintln!("while {busy} is busy: {meanwhile:?}");
    assert_eq!(meanwhile.get(&None), None, "{meanwhile:?}");
    assert_eq!(meanwhile.get(&Some(busy.clone())), None, "{meanwhile:?}");
    assert_eq!(meanwhile.len(), 2, "{meanwhile:?}");

    // A client on the bridge, by name, and its address forwarded.
    let out = stdout_of(&s.cloud.daemon.hull(&[
        "exec",
        "acme/client",
        "sh",
        "-c",
        "for i in 1 2 3; do timeout 4 wget -qO- http://web/; done; echo done",
    ]));
    assert!(out.ends_with("done\n"), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("web-")).count(),
        3,
        "{out}"
    );
}

#[test]
fn a_replica_failing_its_healthz_is_taken_out_and_back() {
    let s = setup();
    let _turn = turn();
    let before = wait_healthy(s, "web", 3);
    let member = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web-1")
        .cloned()
        .unwrap();
    // It still takes TCP connections; only its /healthz answers 404.
    stdout_of(
        &s.cloud
            .daemon
            .hull(&["exec", "acme/web-1", "rm", "/www/healthz"]),
    );
    let failed = Instant::now();
    common::eventually(20, || {
        let now = inspect(s, "web");
        let backends = now["backends"].as_array().unwrap();
        (backends.len() == 2 && !backends.contains(&member["address"]))
            .then_some(())
            .ok_or_else(|| format!("web-1 still in: {now}"))
    });
    eprintln!(
        "a failing /healthz out of the balancer in {:?}",
        failed.elapsed()
    );
    let counts = spread(s, 9);
    assert_eq!(counts.get(&None), None, "{counts:?}");
    assert_eq!(counts.get(&Some("web-1".to_owned())), None, "{counts:?}");
    // Healthy again, it is back (unless it was replaced meanwhile).
    let _ = s
        .cloud
        .daemon
        .hull(&["exec", "acme/web-1", "sh", "-c", "hostname > /www/healthz"]);
    wait_healthy(s, "web", 3);
    assert_eq!(spread(s, 9).len(), 3);
}

/// A replica's own HEALTHCHECK counts beside the balancer's probe: while
/// it starts or fails, the replica gets no traffic though its port answers.
#[test]
fn a_replica_failing_its_own_healthcheck_gets_no_traffic() {
    let s = setup();
    let _turn = turn();
    let archive = common::derived_archive("gated:1", |config| {
        config["Healthcheck"] = serde_json::json!({
            "Test": ["CMD-SHELL", "test -f /www/ready"],
            "Interval": 1_000_000_000u64,
            "Timeout": 5_000_000_000u64,
            "Retries": 2,
        });
    });
    as_tenant(
        &s.cloud,
        &s.acme,
        &["load", "-i", archive.to_str().unwrap()],
    );
    let vip = create_from(
        &s.cloud,
        &s.acme,
        "gated",
        "1",
        // Slow probes: a replica out this long is not replaced yet.
        &["--health-check", "interval=2s,fall=1,rise=1"],
        "gated:1",
    );
    let own_health = || {
        let out = stdout_of(&s.cloud.daemon.hull(&["inspect", "acme/gated-1"]));
        let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
        inspected[0]["State"]["Health"]["Status"].clone()
    };
    // Its own check fails while its port answers the balancer's probe.
    let mut member = serde_json::Value::Null;
    common::eventually(150, || {
        let now = inspect(s, "gated");
        member = now["members"][0].clone();
        (member["state"] == "running" && own_health() == "unhealthy")
            .then_some(())
            .ok_or_else(|| format!("not yet unhealthy: {now}"))
    });
    let direct: SocketAddr = format!("{}:8080", member["address"].as_str().unwrap())
        .parse()
        .unwrap();
    let request = b"GET / HTTP/1.0\r\n\r\n";
    assert_eq!(
        exchange(s, direct, request),
        Some((200, "gated-1".to_owned()))
    );
    assert_eq!(inspect(s, "gated")["backends"], serde_json::json!([]));

    // Ready by its own check: in.
    stdout_of(
        &s.cloud
            .daemon
            .hull(&["exec", "acme/gated-1", "touch", "/www/ready"]),
    );
    common::eventually(60, || {
        let now = inspect(s, "gated");
        (now["backends"].as_array().map_or(0, Vec::len) == 1)
            .then_some(())
            .ok_or_else(|| format!("not in yet: {now}"))
    });
    let through: SocketAddr = format!("{vip}:80").parse().unwrap();
    assert_eq!(
        exchange(s, through, request),
        Some((200, "gated-1".to_owned()))
    );
    // Failing it again: out.
    stdout_of(
        &s.cloud
            .daemon
            .hull(&["exec", "acme/gated-1", "rm", "/www/ready"]),
    );
    common::eventually(60, || {
        let now = inspect(s, "gated");
        (now["backends"] == serde_json::json!([]))
            .then_some(())
            .ok_or_else(|| format!("still in: {now}"))
    });
    as_tenant(&s.cloud, &s.acme, &["service", "rm", "gated"]);
}

/// A rolling update to an image whose replicas never become healthy (its
/// own HEALTHCHECK always fails) rolls back; the old replica serves
/// throughout and the new one never takes traffic.
#[test]
fn a_rolling_update_to_an_image_never_healthy_rolls_back() {
    let s = setup();
    let _turn = turn();
    let archive = common::derived_archive("sick:1", |config| {
        config["Healthcheck"] = serde_json::json!({
            "Test": ["CMD-SHELL", "exit 1"],
            "Interval": 1_000_000_000u64,
            "Retries": 1,
        });
    });
    as_tenant(
        &s.cloud,
        &s.acme,
        &["load", "-i", archive.to_str().unwrap()],
    );
    let vip = create(
        &s.cloud,
        &s.acme,
        "roll",
        "1",
        &["--health-check", "interval=500ms,fall=1,rise=1"],
    );
    wait_healthy(s, "roll", 1);
    as_tenant(
        &s.cloud,
        &s.acme,
        &["service", "rolling-update", "--image", "sick:1", "roll"],
    );
    let started = Instant::now();
    let mut saw_sick = false;
    common::eventually(240, || {
        let now = inspect(s, "roll");
        let members = now["members"].as_array().cloned().unwrap_or_default();
        saw_sick |= members.iter().any(|m| m["image"] == "sick:1");
        // Only the old image's replica ever takes connections.
        for backend in now["backends"].as_array().unwrap() {
            let member = members.iter().find(|m| &m["address"] == backend);
            assert!(
                member.is_none_or(|m| m["image"] == "busybox"),
                "a sick replica takes traffic: {now}"
            );
        }
        let done = now["image"] == "busybox"
            && now["rollback"].is_null()
            && members.len() == 1
            && members[0]["image"] == "busybox"
            && now["backends"].as_array().map_or(0, Vec::len) == 1;
        done.then_some(())
            .ok_or_else(|| format!("not rolled back: {now}"))
    });
    assert!(saw_sick, "the new image's replica was never made");
    eprintln!("rolled back in {:?}", started.elapsed());
    let through: SocketAddr = format!("{vip}:80").parse().unwrap();
    assert_eq!(
        exchange(s, through, b"GET / HTTP/1.0\r\n\r\n"),
        Some((200, "roll-1".to_owned()))
    );
    as_tenant(&s.cloud, &s.acme, &["service", "rm", "roll"]);
}

#[test]
fn oversized_headers_get_431_and_a_hoarder_of_idle_connections_starves_no_one() {
    let s = setup();
    let _turn = turn();
    wait_healthy(s, "web", 3);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = exchange(s, service(s), big.as_bytes());
    assert_eq!(answer.map(|a| a.0), Some(431));
    assert!(get(s, "/").is_some(), "the proxy goes on");

    // The host holds 100 idle connections: the proxy keeps 64 of one
    // source and closes the rest at once.
    let host = s.cloud.netns.as_ref().unwrap();
    let target = service(s);
    let (held, closed) = host.within(|| {
        // All at once: within the proxy's 10 s for a request's headers.
        let streams: Vec<TcpStream> = (0..100)
            .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let mut held = Vec::new();
        let mut closed = 100 - streams.len();
        for mut stream in streams {
            stream.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => held.push(stream),
                // An end or a reset: the proxy closed it.
                _ => closed += 1,
            }
        }
        (held, closed)
    });
    eprintln!("{} idle connections held, {closed} closed", held.len());
    assert!(held.len() <= 64, "{} held", held.len());
    assert!(
        closed >= 30,
        "{closed} closed: {}",
        s.cloud
            .daemon
            .log()
            .lines()
            .filter(|l| l.contains("proxy"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Another client is served meanwhile.
    let out = stdout_of(&s.cloud.daemon.hull(&[
        "exec",
        "acme/client",
        "sh",
        "-c",
        "timeout 4 wget -qO- http://web/; echo done",
    ]));
    assert!(out.starts_with("web-"), "{out}");
    drop(held);
    common::eventually(10, || {
        get(s, "/").map(drop).ok_or_else(|| "not served".to_owned())
    });
}

#[test]
fn a_tcp_client_with_affinity_keeps_its_replica() {
    let s = setup();
    let _turn = turn();
    let view = wait_healthy(s, "sticky", 2);
    assert_eq!(view["proxied"], true, "{view}");
    let target: SocketAddr = format!("{}:80", s.sticky).parse().unwrap();
    let mut seen = BTreeMap::new();
    for _ in 0..8 {
        let answer = exchange(s, target, b"GET / HTTP/1.0\r\n\r\n").map(|a| a.1);
        *seen.entry(answer).or_insert(0) += 1;
    }
    eprintln!("8 connections from the host: {seen:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen.keys().next().unwrap().is_some(), "{seen:?}");
    let listed = as_tenant(&s.cloud, &s.acme, &["service", "ls"]);
    assert!(
        listed.contains("80->8080/tcp") && listed.contains("80->8080/http"),
        "{listed}"
    );
}

/// Connection-per-request `GET /` load on `target` from `clients` host
/// threads for `time`: requests per second, the median and 99th
/// percentile latencies, failures.
fn load(
    setup: &Setup,
    target: SocketAddr,
    clients: usize,
    time: Duration,
) -> (f64, Duration, Duration, usize) {
    let host = setup.cloud.netns.as_ref().unwrap();
    host.within(|| {
        let start = Instant::now();
        let results: Vec<(Vec<Duration>, usize)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(move || {
                        let mut latencies = Vec::new();
                        let mut failed = 0;
                        while start.elapsed() < time {
                            let begun = Instant::now();
                            let ok = (|| {
                                let mut stream = TcpStream::connect(target).ok()?;
                                stream
                                    .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
                                    .ok()?;
                                let mut answer = Vec::new();
                                stream.read_to_end(&mut answer).ok()?;
                                answer.starts_with(b"HTTP/1.").then_some(())?;
                                answer[8..].starts_with(b" 200").then_some(())
                            })();
                            match ok {
                                Some(()) => latencies.push(begun.elapsed()),
                                None => failed += 1,
                            }
                        }
                        (latencies, failed)
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let elapsed = start.elapsed().as_secs_f64();
        let failed = results.iter().map(|r| r.1).sum();
        let mut all: Vec<Duration> = results.into_iter().flat_map(|r| r.0).collect();
        all.sort();
        let p50 = all.get(all.len() / 2).copied().unwrap_or_default();
        let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
        (all.len() as f64 / elapsed, p50, p99, failed)
    })
}

#[test]
#[ignore = "a benchmark: scripts/bench-service.sh"]
fn bench() {
    let s = setup();
    let _turn = turn();
    let plain_vip = create(
        &s.cloud,
        &s.acme,
        "plain",
        "3",
        &["--health-check", "interval=500ms,fall=2,rise=1"],
    );
    let plain = wait_healthy(s, "plain", 3);
    let web = wait_healthy(s, "web", 3);
    let clients: usize = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(8);
    let time = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(5),
    );
    let replica = |view: &serde_json::Value| -> SocketAddr {
        format!("{}:8080", view["members"][0]["address"].as_str().unwrap())
            .parse()
            .unwrap()
    };
    let runs = [
        ("tcp_direct", replica(&plain)),
        ("tcp_service", format!("{plain_vip}:80").parse().unwrap()),
        ("http_direct", replica(&web)),
        ("http_service", service(s)),
    ];
    // One client shows what a hop adds to a request; many, what the
    // replicas behind a balancer serve together.
    for clients in [1, clients] {
        for (name, target) in runs {
            let (rate, p50, p99, failed) = load(s, target, clients, time);
            println!(
                "BENCH c{clients} {name} rps={rate:.0} p50_us={} p99_us={} failed={failed}",
                p50.as_micros(),
                p99.as_micros()
            );
        }
    }
    // From a replica's failure (its container killed) to its leaving the
    // balancer, for each path.
    for name in ["plain", "web"] {
        let view = inspect(s, name);
        let address = view["members"][0]["address"].clone();
        let replica = view["members"][0]["name"].as_str().unwrap().to_owned();
        let killed = Instant::now();
        stdout_of(&s.cloud.daemon.hull(&["kill", &format!("acme/{replica}")]));
        common::eventually(30, || {
            let now = inspect(s, name);
            (!now["backends"].as_array().unwrap().contains(&address))
                .then_some(())
                .ok_or_else(|| "still in".to_owned())
        });
        println!("BENCH {name}_removal ms={}", killed.elapsed().as_millis());
    }
    as_tenant(&s.cloud, &s.acme, &["service", "rm", "plain"]);
}
