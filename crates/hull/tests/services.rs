//! Services, end to end: a tenant's service of three busybox replicas
//! that answer their own hostname over HTTP, on the tenant's network.
//! hulld runs in a network namespace standing for the host; the host
//! (the test, inside that namespace) and a client container on the same
//! bridge reach the service at its address and name.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::cloud::Cloud;
use common::{assert_fails, stdout_of, text};

/// Each replica serves its hostname (its name, `web-N`) on 8080.
const SERVE: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

struct Setup {
    cloud: Cloud,
    acme: (String, String),
    beta: (String, String),
    /// The service's address.
    vip: String,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let cloud = Cloud::start_isolated(&[("HULL_NO_TEMPLATES", "1")]);
        let acme = cloud.tenant_with_key("acme");
        let beta = cloud.tenant_with_key("beta");
        let archive = common::busybox_archive();
        as_tenant(&cloud, &acme, &["load", "-i", archive.to_str().unwrap()]);
        let vip = as_tenant(
            &cloud,
            &acme,
            &[
                "service",
                "create",
                "--name",
                "web",
                "--replicas",
                "3",
                "--service-port",
                "80",
                "--container-port",
                "8080",
                "--health-check",
                "interval=500ms,fall=2,rise=1",
                "busybox",
                "sh",
                "-c",
                SERVE,
            ],
        )
        .trim()
        .to_owned();
        as_tenant(
            &cloud,
            &acme,
            &["run", "-d", "--name", "client", "busybox", "sleep", "3600"],
        );
        let setup = Setup {
            cloud,
            acme,
            beta,
            vip,
        };
        wait_healthy(&setup, 3);
        setup
    })
}

/// One case at a time: they scale and kill the one service.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
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

fn inspect(setup: &Setup) -> serde_json::Value {
    let out = as_tenant(&setup.cloud, &setup.acme, &["service", "inspect", "web"]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// Waits until the service has `count` replicas, all taking connections.
fn wait_healthy(setup: &Setup, count: usize) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    common::eventually(150, || {
        last = inspect(setup);
        let members = last["members"].as_array().map_or(0, Vec::len);
        let healthy = last["healthy"].as_u64().unwrap_or(0) as usize;
        let backends = last["backends"].as_array().map_or(0, Vec::len);
        (members == count && healthy == count && backends == count)
            .then_some(())
            .ok_or_else(|| format!("not yet {count} healthy replicas: {last}"))
    });
    last
}

/// One `GET /` at `address:80` from the host: the body, if it answered.
fn get(setup: &Setup) -> Option<String> {
    let target = format!("{}:80", setup.vip).parse().unwrap();
    let host = setup.cloud.netns.as_ref().unwrap();
    host.within(|| {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        Some(answer.split_once("\r\n\r\n")?.1.trim().to_owned())
    })
}

/// Sequential `GET /`s from the host to `address:port`: requests per
/// second and the 99th percentile latency.
fn measure(setup: &Setup, address: &str, port: u16, n: usize) -> (f64, Duration) {
    let target: std::net::SocketAddr = format!("{address}:{port}").parse().unwrap();
    let host = setup.cloud.netns.as_ref().unwrap();
    host.within(|| {
        let start = Instant::now();
        let mut latencies: Vec<Duration> = (0..n)
            .map(|_| {
                let begun = Instant::now();
                let mut stream = TcpStream::connect(target).unwrap();
                stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut answer = Vec::new();
                stream.read_to_end(&mut answer).unwrap();
                assert!(answer.starts_with(b"HTTP/1.") && answer[8..].starts_with(b" 200"));
                begun.elapsed()
            })
            .collect();
        let rate = n as f64 / start.elapsed().as_secs_f64();
        latencies.sort();
        (rate, latencies[n * 99 / 100])
    })
}

/// Answers per replica over `n` requests from the host (`None`: failed).
fn spread(setup: &Setup, n: usize) -> BTreeMap<Option<String>, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(get(setup)).or_default() += 1;
    }
    counts
}

fn names(inspected: &serde_json::Value) -> Vec<String> {
    inspected["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn connections_spread_over_replicas_a_dead_one_is_replaced_and_scale_moves_them() {
    let s = setup();
    let _turn = turn();

    // Round robin from the host: every replica answers its share.
    let counts = spread(s, 30);
    eprintln!("30 requests from the host: {counts:?}");
    assert_eq!(
        counts.get(&None),
        None,
        "every request answered: {counts:?}"
    );
    for name in ["web-1", "web-2", "web-3"] {
        let got = counts.get(&Some(name.to_owned())).copied().unwrap_or(0);
        assert!((8..=12).contains(&got), "{name}: {counts:?}");
    }

    // Through the balancer against straight to one replica.
    let first = inspect(s)["members"][0]["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let (direct, direct_p99) = measure(s, &first, 8080, 200);
    let (balanced, balanced_p99) = measure(s, &s.vip, 80, 200);
    eprintln!("straight to a replica: {direct:.0} requests/s, p99 {direct_p99:?}; through the service: {balanced:.0} requests/s, p99 {balanced_p99:?}");

    // A client on the same bridge, by name: hairpinned through the host.
    let out = stdout_of(&s.cloud.daemon.hull(&[
        "exec",
        "acme/client",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6; do timeout 4 wget -qO- http://web/; done; echo done",
    ]));
    assert!(out.ends_with("done\n"), "{out}");
    let answered: Vec<&str> = out.lines().filter(|l| l.starts_with("web-")).collect();
    assert_eq!(answered.len(), 6, "{out}");
    for name in ["web-1", "web-2", "web-3"] {
        assert!(answered.contains(&name), "{name} in {out}");
    }

    // A replica killed leaves the balancer and is replaced.
    let before = inspect(s);
    let address = before["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "web-2")
        .map(|m| m["address"].clone())
        .unwrap();
    let killed = Instant::now();
    stdout_of(&s.cloud.daemon.hull(&["kill", "acme/web-2"]));
    common::eventually(30, || {
        let now = inspect(s);
        let backends = now["backends"].as_array().unwrap();
        (backends.len() == 2 && !backends.contains(&address))
            .then_some(())
            .ok_or_else(|| format!("web-2 still in: {now}"))
    });
    let removed = killed.elapsed();
    let after: Vec<Option<String>> = (0..6).map(|_| get(s)).collect();
    assert!(after.iter().all(Option::is_some), "{after:?}");
    wait_healthy(s, 3);
    let replaced = killed.elapsed();
    eprintln!(
        "killed replica out of the balancer in {removed:?}, replaced and healthy in {replaced:?}"
    );
    let counts = spread(s, 9);
    assert_eq!(counts.len(), 3, "three replicas answer again: {counts:?}");

    // Scale down, then up.
    as_tenant(&s.cloud, &s.acme, &["service", "scale", "web=1"]);
    let one = wait_healthy(s, 1);
    let counts = spread(s, 6);
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        counts.keys().next().unwrap().as_deref(),
        Some(names(&one)[0].as_str())
    );
    as_tenant(&s.cloud, &s.acme, &["service", "scale", "web=2"]);
    wait_healthy(s, 2);
    assert_eq!(spread(s, 6).len(), 2);
    let listed = as_tenant(&s.cloud, &s.acme, &["service", "ls"]);
    assert!(
        listed.contains(&s.vip) && listed.contains("80->8080/tcp"),
        "{listed}"
    );
}

#[test]
fn bad_specs_and_other_tenants_are_refused_and_make_nothing() {
    let s = setup();
    let _turn = turn();
    let create = |extra: &[&str]| -> Output {
        let mut args = vec!["service", "create"];
        args.extend_from_slice(extra);
        s.cloud.tenant(&s.acme.0, &s.acme.1, &args)
    };
    let base = |name: &'static str, replicas: &'static str, port: &'static str| {
        vec![
            "--name",
            name,
            "--replicas",
            replicas,
            "--service-port",
            port,
            "--container-port",
            "8080",
            "busybox",
        ]
    };
    for (args, needle) in [
        (base("zero", "0", "80"), "invalid replicas 0"),
        (base("huge", "100000", "80"), "invalid replicas 100000"),
        (base("port", "1", "0"), "invalid service port 0"),
        (base("port", "1", "70000"), "invalid service port 70000"),
        (base("Bad_Name", "1", "80"), "invalid service name"),
    ] {
        let out = create(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = create(&[
        "--name",
        "hc",
        "--service-port",
        "80",
        "--container-port",
        "80",
        "--health-check",
        "interval=0s",
        "busybox",
    ]);
    assert!(
        text(&out.stderr).contains("invalid health check"),
        "{}",
        text(&out.stderr)
    );
    // Straight to the API: an oversized or malformed body is a 4xx too.
    let oversized = format!("{{\"name\":\"{}\"}}", "x".repeat(70_000));
    let (status, body) = s
        .cloud
        .curl_as("acme", "POST", "/services/create", Some(&oversized));
    assert_eq!(status, 413, "{body}");
    let (status, body) = s
        .cloud
        .curl_as("acme", "POST", "/services/create", Some("{\"name\":1}"));
    assert_eq!(status, 400, "{body}");
    let listed = as_tenant(&s.cloud, &s.acme, &["service", "ls"]);
    assert!(listed.lines().count() <= 2, "nothing made: {listed}");

    // Another tenant sees nothing of acme's service, and cannot touch it.
    let out = s
        .cloud
        .tenant(&s.beta.0, &s.beta.1, &["service", "inspect", "web"]);
    assert_fails(&out, 1, &["service web not found"]);
    let out = s
        .cloud
        .tenant(&s.beta.0, &s.beta.1, &["service", "rm", "web"]);
    assert_fails(&out, 1, &["service web not found"]);
    let out = s
        .cloud
        .tenant(&s.beta.0, &s.beta.1, &["service", "scale", "web=5"]);
    assert!(!out.status.success());
    assert_eq!(
        as_tenant(&s.cloud, &s.beta, &["service", "ls"])
            .lines()
            .count(),
        1
    );
}

#[test]
fn a_removed_tenants_services_go_with_it_and_a_new_tenant_of_its_name_finds_none() {
    let s = setup();
    let _turn = turn();
    let gamma = s.cloud.tenant_with_key("gamma");
    as_tenant(
        &s.cloud,
        &gamma,
        &[
            "service",
            "create",
            "--name",
            "api",
            "--replicas",
            "1",
            "--service-port",
            "80",
            "--container-port",
            "8080",
            "busybox",
            "sh",
            "-c",
            SERVE,
        ],
    );
    let refused = s.cloud.daemon.hull(&["admin", "tenant", "rm", "gamma"]);
    assert_fails(&refused, 1, &["1 services"]);
    stdout_of(
        &s.cloud
            .daemon
            .hull(&["admin", "tenant", "rm", "--force", "gamma"]),
    );
    let again = s.cloud.tenant_with_key("gamma");
    let listed = as_tenant(&s.cloud, &again, &["service", "ls"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let containers = as_tenant(&s.cloud, &again, &["ps", "-a", "-q"]);
    assert!(containers.trim().is_empty(), "{containers}");
}

/// A rolling update to a new image replaces every replica, one at a
/// time, while a client looping through the service sees no request fail.
#[test]
fn a_rolling_update_serves_every_request_of_a_client_looping_through_it() {
    let s = setup();
    let _turn = turn();
    let archive = common::derived_archive("busybox:v2", |config| {
        let env = config["Env"].as_array_mut().expect("the image's Env");
        env.push(serde_json::json!("VERSION=v2"));
    });
    as_tenant(
        &s.cloud,
        &s.acme,
        &["load", "-i", archive.to_str().unwrap()],
    );
    let serve =
        "mkdir -p /www && echo ${VERSION:-v1} > /www/index.html && exec httpd -f -p 8080 -h /www";
    let vip = as_tenant(
        &s.cloud,
        &s.acme,
        &[
            "service",
            "create",
            "--name",
            "roll",
            "--replicas",
            "2",
            "--service-port",
            "80",
            "--container-port",
            "8080",
            "--health-check",
            "interval=500ms,fall=2,rise=2",
            "busybox",
            "sh",
            "-c",
            serve,
        ],
    )
    .trim()
    .to_owned();
    let inspect_roll = || {
        let out = as_tenant(&s.cloud, &s.acme, &["service", "inspect", "roll"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    };
    common::eventually(150, || {
        let now = inspect_roll();
        (now["backends"].as_array().map_or(0, Vec::len) == 2)
            .then_some(())
            .ok_or_else(|| format!("not yet 2 healthy: {now}"))
    });

    let target: std::net::SocketAddr = format!("{vip}:80").parse().unwrap();
    let host = s.cloud.netns.as_ref().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            host.within(|| {
                let mut answers: BTreeMap<String, usize> = BTreeMap::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = (|| {
                        let mut stream =
                            TcpStream::connect_timeout(&target, Duration::from_secs(5)).ok()?;
                        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
                        let mut text = String::new();
                        stream.read_to_string(&mut text).ok()?;
                        Some(text.split_once("\r\n\r\n")?.1.trim().to_owned())
                    })();
                    let key = answer.unwrap_or_else(|| "failed".to_owned());
                    *answers.entry(key).or_default() += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                answers
            })
        });
        as_tenant(
            &s.cloud,
            &s.acme,
            &["service", "rolling-update", "--image", "busybox:v2", "roll"],
        );
        let deadline = Instant::now() + Duration::from_secs(300);
        let last = loop {
            let last = inspect_roll();
            let members = last["members"].as_array().cloned().unwrap_or_default();
            let done = last["rollback"].is_null()
                && members.len() == 2
                && members.iter().all(|m| m["image"] == "busybox:v2")
                && last["backends"].as_array().map_or(0, Vec::len) == 2;
            if done || Instant::now() > deadline {
                break last;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        // A moment more on the new replicas alone.
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answers = client.join().unwrap();
        assert_eq!(last["image"], "busybox:v2", "not updated: {last}");
        assert!(last["rollback"].is_null(), "not done: {last}");
        answers
    });
    eprintln!("answers through the rolling update: {answers:?}");
    assert_eq!(answers.get("failed"), None, "{answers:?}");
    assert!(answers.get("v1").is_some_and(|n| *n > 0), "{answers:?}");
    assert!(answers.get("v2").is_some_and(|n| *n > 0), "{answers:?}");
    assert_eq!(answers.len(), 2, "{answers:?}");
    as_tenant(&s.cloud, &s.acme, &["service", "rm", "roll"]);
}
