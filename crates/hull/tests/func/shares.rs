//! A tenant out to take more than its share of the host: its calls' stored
//! bytes, its calls running at once and its callers' connections to the
//! call plane each stay within a bound, and others are served meanwhile.

use serde_json::Value;

use super::common::cloud::Cloud;
use super::common::{stdout_of, text};
use super::{call_path, output_path, Plane};

/// The bytes one tenant's calls may hold in this test's hulld.
pub const HELD_BUDGET: &str = "160K";
/// A call body each: two fit the budget beside small calls, three do not.
pub const BIG: usize = 60 * 1024;
/// Calls of one tenant's functions that run at once, connections its
/// callers hold, and connections one address holds unnamed.
pub const PER_TENANT_RUNNING: &str = "2";
pub const PER_TENANT_CONNECTIONS: usize = 4;
pub const PER_ADDRESS_UNNAMED: usize = 4;

/// A tenant out to take more than its share of the host.
pub struct Acme<'a> {
    cloud: &'a Cloud,
    key: (String, String),
    /// A function that sleeps as long as its `X-Sleep` header says.
    pub sleepy: String,
}

impl<'a> Acme<'a> {
    pub fn new(cloud: &'a Cloud, archive: &std::path::Path) -> Self {
        let key = cloud.tenant_with_key("acme");
        let mut acme = Acme {
            cloud,
            key,
            sleepy: String::new(),
        };
        stdout_of(&acme.hull(&["load", "-i", archive.to_str().unwrap()]));
        acme.sleepy = acme.create("sleepy", "sleep ${HTTP_X_SLEEP:-0}");
        acme
    }

    pub fn hull(&self, args: &[&str]) -> std::process::Output {
        self.cloud.tenant(&self.key.0, &self.key.1, args)
    }

    /// Creates a function that may run 5 calls at once: its call path.
    fn create(&self, name: &str, script: &str) -> String {
        let created = self.hull(&[
            "func",
            "create",
            "--name",
            name,
            "--size",
            "S1",
            "--timeout",
            "600s",
            "--max-concurrency",
            "5",
            "busybox",
            "sh",
            "-c",
            script,
        ]);
        call_path(&created).1
    }

    fn load(&self, name: &str) -> (u64, u64) {
        let inspect: Value =
            serde_json::from_str(&stdout_of(&self.hull(&["func", "inspect", name]))).unwrap();
        let count = |field: &str| inspect[0][field].as_u64().unwrap();
        (count("Running"), count("Queued"))
    }

    /// Takes all its running calls with sleepers and queues big bodies
    /// until its budget of bytes is full: its hoard function's path and
    /// the ids of its two calls.
    pub fn hogs_its_share(&self, plane: &Plane<'_>, others: &str) -> (String, [String; 2]) {
        // Its function may run 5 at once, but the tenant 2 in all. The
        // sleepers outlive the hulld restart that follows (a restart takes
        // running calls back), and end soon after it.
        let sleep = [("X-Sleep", "30")];
        for _ in 0..2 {
            plane.call_async_with(&self.sleepy, &sleep, b"");
        }
        plane.call_async(&self.sleepy, "");
        assert_eq!(self.load("sleepy"), (2, 1));
        // Another owner's calls still run meanwhile.
        let (status, body) = plane.call(&format!("{others}/sync"), "still served");
        assert_eq!(
            (status, body.ends_with("still served")),
            (200, true),
            "{body}"
        );

        // Queued request bodies count against the tenant's budget, across
        // its functions; past it a call is refused with what to do.
        let hoard = self.create("hoard", "cat");
        let big = vec![b'h'; BIG];
        let ids = [(); 2].map(|_| plane.call_async_with(&hoard, &[], &big));
        assert_eq!(self.load("hoard"), (0, 2));
        // Its queue is bounded also while only the tenant's slots are full.
        let (status, body) = plane.call(&hoard, "");
        assert_eq!(status, 429, "{body}");
        let (status, body) = plane.send("POST", &self.sleepy, &[], &big);
        let body = text(&body);
        assert_eq!(status, 507, "{body}");
        for needle in [
            "tenant acme",
            "bytes",
            "fetch the results",
            "remove functions",
        ] {
            assert!(body.contains(needle), "{body}");
        }
        (hoard, ids)
    }

    /// After a restart its stored results still fill the budget; a fetch
    /// and a function's removal give room back.
    pub fn frees_its_budget(&self, plane: &Plane<'_>, (hoard, ids): &(String, [String; 2])) {
        let (status, body) = plane.send(
            "GET",
            &format!("{}/wait", output_path(hoard, &ids[0])),
            &[],
            b"",
        );
        assert_eq!((status, body.len()), (200, BIG), "{}", text(&body));
        let big = vec![b'x'; BIG];
        plane.call_async_with(&self.sleepy, &[], &big);
        let (status, _) = plane.send("POST", &self.sleepy, &[], &big);
        assert_eq!(status, 507, "full again");
        stdout_of(&self.hull(&["func", "rm", "hoard"]));
        plane.call_async_with(&self.sleepy, &[], &big);
    }

    /// Its callers hold their share of the call plane's connections and no
    /// more; another owner's callers and another address still get theirs.
    pub fn holds_its_share_of_connections(&self, plane: &Plane<'_>, others: &str) {
        let mine = output_path(&self.sleepy, "0");
        let theirs = output_path(others, "0");
        let limit = PER_TENANT_CONNECTIONS.to_string();
        let held = plane.python(HOLD_CONNECTIONS, &[&mine, &theirs, &limit]);
        let statuses = |key: &str| -> Vec<String> {
            held[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        assert!(
            statuses("held").iter().all(|s| s.contains(" 404 ")),
            "{held}"
        );
        let refused = held["refused"].as_str().unwrap();
        assert!(refused.starts_with("HTTP/1.1 429 "), "{held}");
        assert!(
            refused.to_ascii_lowercase().contains("connection: close"),
            "{held}"
        );
        assert!(refused.contains("too many connections"), "{held}");
        assert!(held["others"].as_str().unwrap().contains(" 404 "), "{held}");
        assert!(held["mixed"].as_str().unwrap().contains(" 403 "), "{held}");
        assert!(
            statuses("after").last().unwrap().contains(" 404 "),
            "{held}"
        );

        let limit = PER_ADDRESS_UNNAMED.to_string();
        let idle = plane.python(HOLD_IDLE, &[&mine, &limit]);
        let extra = idle["extra"].as_str().unwrap();
        assert!(extra == "eof" || extra == "reset", "{idle}");
        assert!(
            idle["other_address"].as_str().unwrap().contains(" 404 "),
            "{idle}"
        );
        assert!(idle["after"].as_str().unwrap().contains(" 404 "), "{idle}");
    }
}

/// Keeps `limit` connections, each of which asked `mine` once, then asks
/// on one more; asks `theirs` meanwhile; asks `theirs` on a connection
/// that asked `mine`; closes the held ones and asks `mine` again.
const HOLD_CONNECTIONS: &str = r#"
import json, socket, sys, time
port, mine, theirs, limit = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
def ask(s, path):
    s.sendall(b'GET ' + path.encode() + b' HTTP/1.1\r\nHost: x\r\n\r\n')
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    length = [int(l.split(b':')[1]) for l in head.split(b'\r\n') if l.lower().startswith(b'content-length:')]
    while length and len(body) < length[0]:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b'\r\n\r\n' + body).decode(errors='replace')
def connect():
    s = socket.create_connection(('127.0.0.1', port))
    s.settimeout(20)
    return s
def status(answer):
    return answer.split('\r\n')[0]
held, answers = [], {'held': []}
for _ in range(limit):
    held.append(connect())
    answers['held'].append(status(ask(held[-1], mine)))
answers['refused'] = ask(connect(), mine)
answers['others'] = status(ask(connect(), theirs))
mixed = connect()
ask(mixed, theirs)
answers['mixed'] = status(ask(mixed, mine))
mixed.close()
for s in held:
    s.close()
answers['after'] = []
for _ in range(50):
    answer = status(ask(connect(), mine))
    answers['after'].append(answer)
    if ' 404 ' in answer:
        break
    time.sleep(0.2)
print(json.dumps(answers))
"#;

/// Connections from 127.0.0.2 that never send a request, up to `limit`,
/// then one more; 127.0.0.1 asks meanwhile; then the idle ones close and
/// 127.0.0.2 asks.
const HOLD_IDLE: &str = r#"
import json, socket, sys, time
port, path, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def raw(source):
    s = socket.create_connection(('127.0.0.1', port), source_address=(source, 0))
    s.settimeout(8)
    return s
def ask(source):
    s = raw(source)
    s.sendall(b'GET ' + path.encode() + b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
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
try:
    closed = 'eof' if extra.recv(1) == b'' else 'data'
except ConnectionResetError:
    closed = 'reset'
except socket.timeout:
    closed = 'held'
answers = {'extra': closed, 'other_address': ask('127.0.0.1')}
for s in idle:
    s.close()
for _ in range(50):
    try:
        answers['after'] = ask('127.0.0.2')
    except OSError as err:
        answers['after'] = repr(err)
    if ' 404 ' in answers['after']:
        break
    time.sleep(0.2)
print(json.dumps(answers))
"#;
