//! The tenant listener's connections are shared fairly: one tenant holds
//! at most its own number of them (held streams and attaches count), one address at
//! most its own number before they authenticate, and a connection carries
//! one tenant's requests only. No VM boots here.

mod common;

use std::process::Command;

use common::cloud::{tiny_archive, Cloud};
use common::{stdout_of, text};

/// A tenant with client certificates opens `GET /events` streams up to its
/// limit, then one more; a second tenant asks meanwhile; then the first
/// closes its streams and asks again. Prints one JSON object of answers.
const HOLD_STREAMS: &str = r#"
import json, socket, ssl, sys, time
ca, port, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def context(tenant):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(sys.argv[4 if tenant == 'acme' else 6], sys.argv[5 if tenant == 'acme' else 7])
    return ctx
contexts = {'acme': context('acme'), 'beta': context('beta')}
def send(tenant, path, close=False):
    s = contexts[tenant].wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='127.0.0.1')
    s.settimeout(20)
    extra = b'Connection: close\r\n' if close else b''
    s.sendall(b'GET ' + path.encode() + b' HTTP/1.1\r\nHost: x\r\n' + extra + b'\r\n')
    return s
def head(s):
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
def whole(s):
    data = b''
    while True:
        try:
            chunk = s.recv(4096)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data.decode(errors='replace')
def status(data):
    return data.split(b'\r\n')[0].decode() if isinstance(data, bytes) else data.split('\r\n')[0]
# One at a time: each authenticates before the next is a stranger.
held, answers = [], {'held': []}
for _ in range(limit - 1):
    held.append(send('acme', '/events'))
    answers['held'].append(status(head(held[-1])))
# An attach takes the connection over from HTTP; it still counts.
attach = contexts['acme'].wrap_socket(socket.create_connection(('127.0.0.1', port)), server_hostname='127.0.0.1')
attach.settimeout(20)
attach.sendall(b'POST /containers/held/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n')
held.append(attach)
answers['held'].append(status(head(attach)))
refused = send('acme', '/containers/json')
answers['refused'] = whole(refused)
answers['other_tenant'] = status(whole(send('beta', '/containers/json', close=True)))
for s in held:
    s.close()
answers['after'] = []
for _ in range(50):
    answer = status(whole(send('acme', '/containers/json', close=True)))
    answers['after'].append(answer)
    if ' 200 ' in answer:
        break
    time.sleep(0.2)
print(json.dumps(answers))
"#;

/// Connections from 127.0.0.2 that never start their TLS handshake, up to
/// the address's limit, then one more; a tenant from 127.0.0.1 asks
/// meanwhile; then the idle ones close and 127.0.0.2 connects again.
const HOLD_HANDSHAKES: &str = r#"
import json, socket, ssl, sys, time
ca, port, limit, cert, key = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
def raw(source):
    return socket.create_connection(('127.0.0.1', port), source_address=(source, 0))
def ask(source):
    s = ctx.wrap_socket(raw(source), server_hostname='127.0.0.1')
    s.settimeout(20)
    s.sendall(b'GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    data = b''
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b'\r\n')[0].decode()
idle = [raw('127.0.0.2') for _ in range(limit)]
time.sleep(0.5)
extra = raw('127.0.0.2')
extra.settimeout(8)
start = time.monotonic()
try:
    got = extra.recv(1)
    closed = 'eof' if got == b'' else 'data'
except ConnectionResetError:
    closed = 'reset'
except socket.timeout:
    closed = 'held'
answers = {'extra': closed, 'extra_seconds': round(time.monotonic() - start, 1)}
answers['other_address'] = ask('127.0.0.1')
for s in idle:
    s.close()
answers['after'] = []
for _ in range(50):
    try:
        answer = ask('127.0.0.2')
    except OSError as err:
        answer = repr(err)
    answers['after'].append(answer)
    if ' 200 ' in answer:
        break
    time.sleep(0.2)
print(json.dumps(answers))
"#;

fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python3 runs");
    serde_json::from_str(&stdout_of(&output))
        .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stderr)))
}

#[test]
fn one_tenant_or_one_address_cannot_hold_the_connections_others_need() {
    let metrics_port = common::free_port();
    let metrics = format!("tcp://127.0.0.1:{metrics_port}");
    let cloud = Cloud::start(&[
        ("HULL_MAX_CONNECTIONS_PER_TENANT", "4"),
        ("HULL_MAX_UNAUTHENTICATED_PER_ADDRESS", "3"),
        ("HULL_METRICS", &metrics),
    ]);
    let (access, secret) = cloud.tenant_with_key("acme");
    stdout_of(&cloud.daemon.hull(&["admin", "tenant", "create", "beta"]));
    let (acme, beta) = (cloud.client_certs("acme"), cloud.client_certs("beta"));
    // A container to attach to; it never starts, so no VM boots.
    let dir = tempfile::tempdir().unwrap();
    let image = tiny_archive(dir.path(), "tiny:1", "held");
    for args in [
        &["load", "-i", image.to_str().unwrap()][..],
        &["create", "--name", "held", "tiny:1"],
    ] {
        let done = cloud.tenant(&access, &secret, args);
        assert!(done.status.success(), "{args:?}: {}", text(&done.stderr));
    }
    let path = |dir: &std::path::Path, file: &str| dir.join(file).display().to_string();
    let ca = cloud.ca().display().to_string();
    let port = cloud.port.to_string();

    // A tenant's held streams count; the one past its limit is refused
    // with 429 and a JSON error that names the limit, and closed.
    let streams = python(
        HOLD_STREAMS,
        &[
            &ca,
            &port,
            "4",
            &path(&acme, "cert.pem"),
            &path(&acme, "key.pem"),
            &path(&beta, "cert.pem"),
            &path(&beta, "key.pem"),
        ],
    );
    let held: Vec<&str> = streams["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(held.len(), 4, "{streams}");
    for answer in &held[..3] {
        assert!(answer.contains(" 200 "), "{streams}");
    }
    assert!(held[3].contains(" 101 "), "the attach: {streams}");
    let refused = streams["refused"].as_str().unwrap();
    let (head, body) = refused.split_once("\r\n\r\n").unwrap_or((refused, ""));
    assert!(head.starts_with("HTTP/1.1 429 "), "{refused}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let error: serde_json::Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("{e}: the 429's body is no JSON: {body}"));
    let message = error["message"].as_str().unwrap_or_default();
    for needle in [
        "too many connections",
        "already holds 4",
        "one tenant",
        "close some",
    ] {
        assert!(message.contains(needle), "{message}");
    }
    // The other tenant is served meanwhile, and the limit frees again.
    assert!(
        streams["other_tenant"].as_str().unwrap().contains(" 200 "),
        "{streams}"
    );
    let after = streams["after"].as_array().unwrap();
    assert!(
        after.last().unwrap().as_str().unwrap().contains(" 200 "),
        "the tenant's slots never came back: {streams}"
    );

    // Strangers' connections: one address holds 3 that never handshake;
    // a 4th is closed at once, not after the handshake's deadline; another
    // address is served meanwhile; the address's slots come back.
    let handshakes = python(
        HOLD_HANDSHAKES,
        &[
            &ca,
            &port,
            "3",
            &path(&acme, "cert.pem"),
            &path(&acme, "key.pem"),
        ],
    );
    let extra = handshakes["extra"].as_str().unwrap();
    assert!(extra == "eof" || extra == "reset", "{handshakes}");
    assert!(
        handshakes["extra_seconds"].as_f64().unwrap() < 5.0,
        "{handshakes}"
    );
    assert!(
        handshakes["other_address"]
            .as_str()
            .unwrap()
            .contains(" 200 "),
        "{handshakes}"
    );
    let after = handshakes["after"].as_array().unwrap();
    assert!(
        after.last().unwrap().as_str().unwrap().contains(" 200 "),
        "the address's slots never came back: {handshakes}"
    );

    // The operator sees each refusal counted by the limit it met.
    let stream = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
    let (_, scraped) =
        common::http_exchange(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    // (A retry that came before the idle ones were gone counts too.)
    let refusals = |limit: &str| -> u64 {
        let series = format!(r#"hull_tenant_connections_refused_total{{limit="{limit}"}} "#);
        scraped
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no {limit} series: {scraped}"))
    };
    assert_eq!(refusals("tenant"), 1, "{scraped}");
    assert!(refusals("address") >= 1, "{scraped}");
}

#[test]
fn a_connection_carries_one_tenants_requests_and_a_strangers_gets_one_try() {
    let cloud = Cloud::start(&[]);
    let (acme, acme_secret) = cloud.tenant_with_key("acme");
    let (beta, beta_secret) = cloud.tenant_with_key("beta");
    // curl sends the requests given with `--next` on one connection, as
    // long as the server keeps it open.
    let on_one_connection = |requests: &[Option<(&str, &str)>]| -> Vec<String> {
        let mut command = Command::new("curl");
        command.arg("-sS");
        for (index, key) in requests.iter().enumerate() {
            if index > 0 {
                command.arg("--next");
            }
            command
                .args(["-o", "/dev/null", "-w", "%{http_code} %{num_connects}\\n"])
                .arg("--cacert")
                .arg(cloud.ca());
            if let Some((access, secret)) = key {
                for (name, value) in cloud.signed_headers("GET", "/_ping", b"", access, secret) {
                    command.arg("-H").arg(format!("{name}: {value}"));
                }
            }
            command.arg(format!("https://127.0.0.1:{}/_ping", cloud.port));
        }
        let output = command.output().expect("curl runs");
        stdout_of(&output).lines().map(str::to_owned).collect()
    };
    // `code connects`: 0 connects means the request reused the connection.
    let answers = on_one_connection(&[Some((&acme, &acme_secret)), Some((&acme, &acme_secret))]);
    assert_eq!(
        answers,
        ["200 1", "200 0"],
        "its tenant's requests share it"
    );
    let answers = on_one_connection(&[
        Some((&acme, &acme_secret)),
        Some((&beta, &beta_secret)),
        Some((&acme, &acme_secret)),
    ]);
    assert_eq!(
        answers,
        ["200 1", "403 0", "200 1"],
        "another tenant's request is refused, and the connection closed"
    );
    // A connection whose request proves no tenant is closed after its 401.
    let answers = on_one_connection(&[None, Some((&acme, &acme_secret))]);
    assert_eq!(answers, ["401 1", "200 1"]);
    let (code, body) = cloud.curl(
        "GET",
        "/_ping",
        &cloud.signed_headers("GET", "/_ping", b"", &beta, &beta_secret),
        None,
    );
    assert_eq!(code, 200, "{body}");
}
