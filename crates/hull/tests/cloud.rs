//! The cloud's front door: tenants and keys made by the operator on the Unix
//! socket, and signed requests over the TLS listener, where every forged,
//! tampered, oversized or revoked request is refused.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use common::cloud::Cloud;
use common::{assert_fails, stdout_of, text};
use hull_cloud::date::HyperDate;

const VECTORS: &str = include_str!("../../hull-cloud/tests/data/hyper-sign-vectors.json");

#[test]
fn a_tenant_signs_with_its_key_and_forged_or_revoked_keys_are_refused() {
    let cloud = Cloud::start(&[]);
    let (access, secret) = cloud.tenant_with_key("acme");
    let tenants = stdout_of(&cloud.daemon.hull(&["admin", "tenant", "ls"]));
    assert!(
        tenants.contains("acme") && tenants.contains("containers=10"),
        "{tenants}"
    );

    let version = cloud.tenant(&access, &secret, &["version"]);
    assert!(
        stdout_of(&version).contains("Server: "),
        "{}",
        text(&version.stderr)
    );

    // `hull config` saves the keys and CA; later commands need neither flag.
    let config = cloud.daemon.root.join("tenant-config.json");
    let configured = Command::new(env!("CARGO_BIN_EXE_hull"))
        .args([
            "config",
            "--accesskey",
            &access,
            "--secretkey",
            &secret,
            "--tlscacert",
        ])
        .arg(cloud.ca())
        .arg(cloud.address())
        .env("HULL_CONFIG", &config)
        .output()
        .unwrap();
    assert!(configured.status.success(), "{}", text(&configured.stderr));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the config holds a secret");
    let saved = Command::new(env!("CARGO_BIN_EXE_hull"))
        .args(["-H", &cloud.address(), "version"])
        .env("HULL_CONFIG", &config)
        .env_remove("HULL_TLS_CA")
        .output()
        .unwrap();
    assert!(
        stdout_of(&saved).contains("Server: "),
        "{}",
        text(&saved.stderr)
    );

    let forged = cloud.tenant(&access, "not-the-secret-key", &["version"]);
    assert_fails(&forged, 125, &["the signature does not match the request"]);
    let unknown = cloud.tenant("AKNOSUCHKEY00000", &secret, &["version"]);
    assert_fails(&unknown, 125, &["unknown or revoked"]);

    // What a tenant may not do, it is told so.
    let admin = cloud.tenant(&access, &secret, &["admin", "tenant", "ls"]);
    assert_fails(&admin, 1, &["only on hulld's Unix socket"]);
    let networks = cloud.tenant(&access, &secret, &["network", "create", "mine"]);
    assert_fails(&networks, 1, &["not open to tenants"]);

    // The secret is sealed in the state directory; its master key lives elsewhere.
    for file in ["cloud.db", "cloud.db-wal"] {
        if let Ok(bytes) = std::fs::read(cloud.daemon.root.join(file)) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{file}"
            );
        }
    }

    stdout_of(&cloud.daemon.hull(&["admin", "key", "rm", &access]));
    let revoked = cloud.tenant(&access, &secret, &["version"]);
    assert_fails(&revoked, 125, &["unknown or revoked"]);
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "rm", "acme"]));
    let tenants = stdout_of(&cloud.daemon.hull(&["admin", "tenant", "ls"]));
    assert!(!tenants.contains("acme"), "{tenants}");
}

#[test]
fn oversized_and_tampered_signed_requests_are_refused_before_any_handler() {
    let cloud = Cloud::start(&[]);
    let (access, secret) = cloud.tenant_with_key("acme");
    let dir = tempfile::tempdir().unwrap();

    let ok = cloud.signed_headers("GET", "/_ping", b"", &access, &secret);
    assert_eq!(cloud.curl("GET", "/_ping", &ok, None).0, 200);
    assert_eq!(cloud.curl("GET", "/_ping", &[], None).0, 401, "unsigned");

    // A body past the limit is refused once the signature holds, unread past it.
    let big = vec![b'x'; hull_api::server::MAX_SIGNED_BODY + 1];
    let big_file = dir.path().join("big");
    std::fs::write(&big_file, &big).unwrap();
    let headers = cloud.signed_headers("POST", "/volumes/create", &big, &access, &secret);
    let (code, body) = cloud.curl("POST", "/volumes/create", &headers, Some(&big_file));
    assert_eq!(code, 413, "{body}");

    // A body other than the one signed.
    let small = dir.path().join("small");
    std::fs::write(&small, b"{\"Name\":\"evil\"}").unwrap();
    let headers = cloud.signed_headers(
        "POST",
        "/volumes/create",
        b"{\"Name\":\"data\"}",
        &access,
        &secret,
    );
    let (code, body) = cloud.curl("POST", "/volumes/create", &headers, Some(&small));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("body does not match"), "{body}");

    // An image upload is streamed past the limit, and held to its hash at
    // its end: an archive other than the one signed loads nothing.
    let archive = std::fs::read(common::busybox_archive()).unwrap();
    assert!(archive.len() > hull_api::server::MAX_SIGNED_BODY);
    let mut forged = archive.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged_file = dir.path().join("forged.tar");
    std::fs::write(&forged_file, &forged).unwrap();
    let headers = cloud.signed_headers("POST", "/images/load", &archive, &access, &secret);
    let (code, body) = cloud.curl("POST", "/images/load", &headers, Some(&forged_file));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("body does not match"), "{body}");
    let listed = cloud.tenant(&access, &secret, &["images", "-q"]);
    assert_eq!(stdout_of(&listed).trim(), "", "nothing was loaded");
    let operator = stdout_of(&cloud.daemon.hull(&["images", "-q"]));
    assert_eq!(operator.trim(), "", "nothing reached the store");
    // The same upload, as signed, loads.
    let archive_file = dir.path().join("archive.tar");
    std::fs::write(&archive_file, &archive).unwrap();
    let (code, body) = cloud.curl("POST", "/images/load", &headers, Some(&archive_file));
    assert_eq!(code, 200, "{body}");
    let listed = stdout_of(&cloud.tenant(&access, &secret, &["images"]));
    assert!(listed.contains("busybox"), "{listed}");

    // A huge Authorization header.
    let mut huge = ok.clone();
    huge.retain(|(n, _)| n != "Authorization");
    huge.push((
        "Authorization".to_owned(),
        format!("HYPER-HMAC-SHA256 {}", "A".repeat(64 << 10)),
    ));
    let (code, _) = cloud.curl("GET", "/_ping", &huge, None);
    assert!(code == 401 || code == 431, "{code}");

    // A date from ten minutes ago.
    let mut stale = ok.clone();
    let old = HyperDate::from_time(SystemTime::now() - Duration::from_secs(600));
    for (name, value) in stale.iter_mut() {
        if name == "X-Hyper-Date" {
            *value = old.stamp().to_owned();
        }
    }
    let (code, body) = cloud.curl("GET", "/_ping", &stale, None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("away from the server's clock"), "{body}");
    assert!(cloud.daemon.log().contains("serving tenants over TLS"));

    // A client that finishes its handshake and then sends nothing is let go.
    let script = "import socket, ssl, sys, time\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2]))), server_hostname='127.0.0.1')\n\
        s.settimeout(60); start = time.monotonic(); data = s.recv(1)\n\
        print(len(data), round(time.monotonic() - start))\n";
    let idle = Command::new("python3")
        .args(["-c", script])
        .arg(cloud.ca())
        .arg(cloud.port.to_string())
        .output()
        .unwrap();
    let answer = stdout_of(&idle);
    let seconds: u64 = answer
        .split_whitespace()
        .nth(1)
        .unwrap_or("99")
        .parse()
        .unwrap();
    assert!(
        seconds < 30,
        "an idle client was held {answer}: {}",
        text(&idle.stderr)
    );
}

#[test]
fn requests_the_original_hyper_client_signed_pass_the_listener_and_tampered_copies_do_not() {
    let vectors: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let cloud = Cloud::start(&[("HULL_TEST_SIGNATURE_CLOCK", "20261202T070209Z")]);
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "create", "vectors"]));
    // The operator brings the vectors' key through the admin API.
    let key = serde_json::json!({
        "AccessKey": vectors["access_key"],
        "SecretKey": vectors["secret_key"],
    });
    let imported = Command::new("curl")
        .args(["-sSf", "--unix-socket"])
        .arg(&cloud.daemon.socket)
        .args(["-X", "POST", "-d", &key.to_string()])
        .arg("http://hulld/hull/admin/tenants/vectors/keys")
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", text(&imported.stderr));

    let dir = tempfile::tempdir().unwrap();
    for vector in vectors["requests"].as_array().unwrap() {
        let method = vector["method"].as_str().unwrap();
        let target = vector["target"].as_str().unwrap();
        let headers: Vec<(String, String)> = vector["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let body_file = dir.path().join("body");
        std::fs::write(&body_file, vector["body"].as_str().unwrap()).unwrap();
        let body = (!vector["body"].as_str().unwrap().is_empty()).then_some(body_file.as_path());

        // Authenticated: what follows is the tenant route's own answer,
        // an empty list of the tenant's containers or FIPs, the volume the
        // hyper client asked for (its driver and GB size), or the FIP
        // handler's own refusal on a host without a pool.
        let (code, answer) = cloud.curl(method, target, &headers, body);
        if target.starts_with("/v1.23/containers/json") {
            assert_eq!((code, answer.trim()), (200, "[]"), "{target}");
        } else if target == "/v1.23/volumes/create" {
            assert_eq!(code, 201, "{target}: {answer}");
            let volume: serde_json::Value = serde_json::from_str(&answer).unwrap();
            assert_eq!(volume["Name"], "data", "{answer}");
            assert_eq!(volume["Labels"]["size"], "10", "{answer}");
        } else if target == "/v1.23/fips" {
            assert_eq!((code, answer.trim()), (200, "[]"), "{target}");
        } else if target.starts_with("/v1.23/fips/allocate") {
            // The handler ran: this host was started without a pool.
            assert_eq!(code, 503, "{target}: {answer}");
            assert!(answer.contains("no floating IP pool"), "{target}: {answer}");
        } else {
            panic!("no expectation for the vector {method} {target}: {code} {answer}");
        }

        let mut wrong_signature = headers.clone();
        for (name, value) in wrong_signature.iter_mut() {
            if name == "Authorization" {
                let flipped = if value.ends_with('0') { '1' } else { '0' };
                value.pop();
                value.push(flipped);
            }
        }
        let (code, answer) = cloud.curl(method, target, &wrong_signature, body);
        assert_eq!(code, 401, "{target}: {answer}");
        let (code, answer) = cloud.curl(
            method,
            &format!(
                "{target}{}",
                if target.contains('?') {
                    "&all=1"
                } else {
                    "?all=1"
                }
            ),
            &headers,
            body,
        );
        assert_eq!(code, 401, "{target} with another query: {answer}");
    }
}

#[test]
fn the_stock_docker_cli_works_as_a_tenant_with_a_client_certificate_until_it_is_revoked() {
    let cloud = Cloud::start(&[]);
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "create", "acme"]));
    let docker = |args: &[&str]| cloud.docker_as("acme", args);
    let version = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert_eq!(
        stdout_of(&version).trim(),
        env!("CARGO_PKG_VERSION"),
        "{}",
        text(&version.stderr)
    );
    let ps = docker(&["ps", "-a", "-q"]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    assert_eq!(stdout_of(&ps).trim(), "", "acme owns no container");
    let images = docker(&["images", "-q"]);
    assert!(images.status.success(), "{}", text(&images.stderr));
    assert_eq!(stdout_of(&images).trim(), "", "acme holds no image");
    let networks = docker(&["network", "create", "mine"]);
    assert!(!networks.status.success());
    assert!(
        text(&networks.stderr).contains("not open to tenants"),
        "{}",
        text(&networks.stderr)
    );

    let keys = stdout_of(&cloud.daemon.hull(&["admin", "key", "ls", "acme"]));
    let id = keys
        .split_whitespace()
        .find(|word| word.starts_with("CERT"))
        .unwrap_or_else(|| panic!("no certificate listed: {keys}"))
        .to_owned();
    stdout_of(&cloud.daemon.hull(&["admin", "key", "rm", &id]));
    let revoked = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(!revoked.status.success());
    assert!(
        text(&revoked.stderr).contains("unknown or revoked"),
        "{}",
        text(&revoked.stderr)
    );
}

#[test]
fn a_tenant_sees_and_drives_only_its_own_containers() {
    let cloud = Cloud::start(&[]);
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    let archive = common::busybox_archive();
    stdout_of(
        &cloud
            .daemon
            .hull(&["load", "-i", archive.to_str().unwrap()]),
    );
    // The operator's own container, and one it made for acme.
    let operator = stdout_of(
        &cloud
            .daemon
            .hull(&["create", "--name", "ops", "busybox", "true"]),
    );
    let owned = stdout_of(&cloud.daemon.hull(&[
        "create",
        "--name",
        "acme-web",
        "--label",
        "sh.hull.tenant=acme",
        "busybox",
        "sh",
        "-c",
        "echo hello from acme; sleep 600",
    ]));
    let (operator, owned) = (operator.trim(), owned.trim());
    let everything = stdout_of(&cloud.daemon.hull(&["ps", "-a"]));
    assert!(
        everything.contains("ops") && everything.contains("acme-web"),
        "{everything}"
    );

    let acme_hull = |args: &[&str]| cloud.tenant(&acme, &acme_secret, args);
    let beta_hull = |args: &[&str]| cloud.tenant(&beta, &beta_secret, args);
    let listed = stdout_of(&acme_hull(&["ps", "-a", "-q", "--no-trunc"]));
    assert!(
        listed.contains(owned) && !listed.contains(operator),
        "{listed}"
    );
    assert_eq!(stdout_of(&beta_hull(&["ps", "-a", "-q"])).trim(), "");

    // By name and by id prefix for its owner; to anyone else, as if it
    // did not exist: the same answer a made-up name gets.
    let inspected = stdout_of(&acme_hull(&["inspect", "acme-web"]));
    assert!(inspected.contains(owned), "{inspected}");
    assert!(stdout_of(&acme_hull(&["inspect", &owned[..12]])).contains(owned));
    for (who, reference) in [
        ("acme", "ops"),
        ("acme", operator),
        ("beta", "acme-web"),
        ("beta", owned),
    ] {
        let output = if who == "acme" {
            acme_hull(&["inspect", reference])
        } else {
            beta_hull(&["inspect", reference])
        };
        assert_fails(&output, 1, &["No such object", reference]);
    }
    let made_up = beta_hull(&["inspect", "no-such-thing"]);
    assert_fails(&made_up, 1, &["No such object"]);
    assert_fails(
        &beta_hull(&["rm", "-f", "acme-web"]),
        1,
        &["No such container"],
    );
    assert_fails(
        &beta_hull(&["exec", "acme-web", "true"]),
        1,
        &["No such container"],
    );

    // Its owner drives it: start, logs, exec, then removes it.
    let started = acme_hull(&["start", "acme-web"]);
    assert!(started.status.success(), "{}", text(&started.stderr));
    let exec = acme_hull(&["exec", "acme-web", "echo", "inside"]);
    assert_eq!(stdout_of(&exec), "inside\n", "{}", text(&exec.stderr));
    // The main process's echo races the exec; its line reaches the log
    // once the guest has run it.
    common::eventually(30, || {
        let logs = stdout_of(&acme_hull(&["logs", "acme-web"]));
        logs.contains("hello from acme").then_some(()).ok_or(logs)
    });
    let removed = acme_hull(&["rm", "-f", "acme-web"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let left = stdout_of(&cloud.daemon.hull(&["ps", "-a", "-q", "--no-trunc"]));
    assert!(!left.contains(owned) && left.contains(operator), "{left}");
    assert_fails(
        &acme_hull(&["rename", "ops", "mine"]),
        1,
        &["No such container"],
    );
    // What is not open yet is refused, not served unscoped.
    assert_fails(
        &acme_hull(&["network", "create", "mine"]),
        1,
        &["not open to tenants"],
    );
}

#[test]
fn a_tenant_that_holds_its_bodies_open_is_refused_more_and_others_are_not() {
    let cloud = Cloud::start(&[]);
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "create", "acme"]));
    let version = cloud.docker_as("acme", &["version", "--format", "{{.Server.Version}}"]);
    assert!(version.status.success(), "{}", text(&version.stderr));
    let certs = cloud.daemon.root.join("acme-tls");
    // 16 requests whose bodies never finish, then a 17th: refused with 429.
    let script = "import socket, ssl, sys\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n\
        def send(n):\n\
        \x20   s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[4]))), server_hostname='127.0.0.1')\n\
        \x20   s.sendall(b'POST /volumes/create HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\nContent-Length: %d\\r\\n\\r\\n{' % n)\n\
        \x20   return s\n\
        held = [send(1000) for _ in range(16)]\n\
        import time; time.sleep(1)\n\
        s = send(1000); s.settimeout(20)\n\
        print(s.recv(200).split(b'\\r\\n')[0].decode())\n";
    let probe = Command::new("python3")
        .args(["-c", script])
        .arg(cloud.ca())
        .arg(certs.join("cert.pem"))
        .arg(certs.join("key.pem"))
        .arg(cloud.port.to_string())
        .output()
        .unwrap();
    let status = stdout_of(&probe);
    assert!(status.contains("429"), "{status} {}", text(&probe.stderr));
    // Requests without a body still pass meanwhile; the slots come back
    // once the held connections are gone.
    let ps = cloud.docker_as("acme", &["ps", "-q"]);
    assert!(ps.status.success(), "{}", text(&ps.stderr));
    let created = cloud.docker_as("acme", &["volume", "create", "after"]);
    assert!(created.status.success(), "{}", text(&created.stderr));
}
