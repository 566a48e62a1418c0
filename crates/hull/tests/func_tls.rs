//! The call plane off loopback: bound to every address it serves TLS with
//! the tenant listener's certificate (Hull's own CA's here), and its call
//! URLs name a host that certificate covers. Plain HTTP gets no answer, a
//! client trusting another CA refuses it, and hostile handshakes (garbage,
//! an oversized ClientHello, one that stalls) cost their address only
//! their own share, and only until the handshake's deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cloud::Cloud;
use common::netns::NetNs;
use common::{stdout_of, text};

/// Connections one address may hold before naming a function.
const PER_ADDRESS: usize = 3;
/// The plane's deadline for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The call plane, reached over TLS from hulld's namespace.
struct Plane<'a> {
    cloud: &'a Cloud,
    /// The call URL's host, which curl resolves to loopback.
    host: String,
    port: u16,
}

impl Plane<'_> {
    /// curl `url` with `args`: (exit code, HTTP status, body).
    fn curl(&self, url: &str, args: &[&str]) -> (i32, u16, String) {
        let output = self
            .cloud
            .command("curl")
            .args(["-sS", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"])
            .arg("--resolve")
            .arg(format!("{}:{}:127.0.0.1", self.host, self.port))
            .args(args)
            .arg(url)
            .output()
            .expect("curl runs");
        let out = text(&output.stdout);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        let status = code.trim().parse().unwrap_or(0);
        (output.status.code().unwrap_or(-1), status, body.to_owned())
    }

    /// A sync call from `source` trusting Hull's CA: (status, body).
    fn call_from(&self, source: &str, url: &str, body: &str) -> (u16, String) {
        let ca = self.cloud.ca();
        let (code, status, answer) = self.curl(
            &format!("{url}/sync"),
            &[
                "--cacert",
                ca.to_str().unwrap(),
                "--interface",
                source,
                "-d",
                body,
            ],
        );
        assert_eq!(code, 0, "curl from {source} fails: {answer}");
        (status, answer)
    }

    /// A TCP connection to the plane from the namespace (source 127.0.0.1).
    fn connect(&self) -> TcpStream {
        let netns = self.cloud.netns.as_ref().expect("an isolated cloud");
        let port = self.port;
        netns.within(move || TcpStream::connect(("127.0.0.1", port)).unwrap())
    }
}

/// How long until the plane closes `stream` (read to its end or reset),
/// waiting at most `limit`; `None` if it is still open then.
fn closed_within(mut stream: TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return Some(since.elapsed()),
            // A TLS alert before the close.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// A CA of its own and nothing to do with Hull's, made by openssl.
fn foreign_ca(dir: &Path) -> String {
    let ca = dir.join("other-ca.pem");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=Not Hull"])
        .arg("-keyout")
        .arg(dir.join("other-key.pem"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    ca.to_str().unwrap().to_owned()
}

#[test]
fn the_call_plane_off_loopback_serves_tls_and_sheds_hostile_handshakes() {
    let started = Instant::now();
    let netns = NetNs::new("functls");
    let port = netns.within(|| {
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        listener.local_addr().unwrap().port()
    });
    let listen = format!("tcp://0.0.0.0:{port}");
    let per_address = PER_ADDRESS.to_string();
    let env = [
        ("HULL_NO_TEMPLATES", "1"),
        ("HULL_FUNC_LISTEN", listen.as_str()),
        (
            "HULL_FUNC_MAX_UNAUTHENTICATED_PER_ADDRESS",
            per_address.as_str(),
        ),
    ];
    let cloud = Cloud::start_in(netns, &env);
    let archive = common::busybox_archive();
    let hull = |args: &[&str]| cloud.daemon.hull(args);
    stdout_of(&hull(&["load", "-i", archive.to_str().unwrap()]));

    // The call URL is https, names the host (which the certificate covers
    // and clients elsewhere reach), not the wildcard it is bound to.
    let created = stdout_of(&hull(&[
        "func",
        "create",
        "--name",
        "hello",
        "--size",
        "S1",
        "busybox",
        "sh",
        "-c",
        r#"echo "hi $HULL_FUNC_METHOD"; cat"#,
    ]));
    let url = created.lines().last().unwrap().trim().to_owned();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim().to_owned();
    assert!(
        url.starts_with(&format!("https://{host}:{port}/call/hello/")),
        "{url}"
    );
    let inspect = stdout_of(&hull(&["func", "inspect", "hello"]));
    assert!(inspect.contains(&url), "{inspect}");
    let plane = Plane {
        cloud: &cloud,
        host: host.clone(),
        port,
    };

    // A sync call over https, trusting Hull's CA, returns its stdout.
    let (status, body) = plane.call_from("127.0.0.1", &url, "ping");
    assert_eq!((status, body.as_str()), (200, "hi POST\nping"));
    // The certificate covers loopback's address too.
    let ca = cloud.ca();
    let by_ip = url.replacen(&format!("{host}:{port}"), &format!("127.0.0.1:{port}"), 1);
    let (code, status, body) = plane.curl(
        &format!("{by_ip}/sync"),
        &["--cacert", ca.to_str().unwrap(), "-d", "again"],
    );
    assert_eq!((code, status, body.as_str()), (0, 200, "hi POST\nagain"));

    // What TLS costs a call: the handshake's time (a request naming no
    // function, so no VM runs).
    let mut handshakes: Vec<f64> = (0..10)
        .map(|_| {
            let output = cloud
                .command("curl")
                .args(["-sS", "-o", "/dev/null", "--cacert", ca.to_str().unwrap()])
                .args(["-w", "%{time_connect} %{time_appconnect}"])
                .arg(format!("https://127.0.0.1:{port}/call/none/none"))
                .output()
                .expect("curl runs");
            let times = text(&output.stdout);
            assert!(output.status.success(), "{times}{}", text(&output.stderr));
            let times: Vec<f64> = times
                .split_whitespace()
                .map(|t| t.parse().unwrap())
                .collect();
            times[1] - times[0]
        })
        .collect();
    handshakes.sort_by(f64::total_cmp);

    // The same URL over plain HTTP gets no answer.
    let plain = by_ip.replacen("https://", "http://", 1);
    let (code, status, body) = plane.curl(&format!("{plain}/sync"), &["-d", "x"]);
    assert!(
        code != 0 && status == 0,
        "plain HTTP answered {status}: {body}"
    );

    // A client that trusts another CA refuses the plane's certificate (60:
    // it cannot verify it); so does one that names a host it doesn't cover.
    let scratch = tempfile::tempdir().unwrap();
    let other = foreign_ca(scratch.path());
    let (code, status, _) = plane.curl(&format!("{url}/sync"), &["--cacert", &other, "-d", "x"]);
    assert_eq!((code, status), (60, 0));
    let uncovered = Plane {
        cloud: &cloud,
        host: "calls.example".to_owned(),
        port,
    };
    let elsewhere = url.replacen(&host, "calls.example", 1);
    let (code, status, _) = uncovered.curl(
        &format!("{elsewhere}/sync"),
        &["--cacert", ca.to_str().unwrap(), "-d", "x"],
    );
    assert_eq!((code, status), (60, 0));

    // The plane asks no client for a certificate (the uuid is the secret),
    // and serves the tenant listener's certificate.
    let served = |port: u16| {
        let output = cloud
            .command("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs");
        let out = text(&output.stdout);
        let pem = |mark: &str| out.find(mark).unwrap_or_else(|| panic!("{out}"));
        let (begin, end) = (
            pem("-----BEGIN CERTIFICATE-----"),
            pem("-----END CERTIFICATE-----"),
        );
        (out[begin..end].to_owned(), out)
    };
    let (plane_cert, handshake) = served(port);
    assert!(
        handshake.contains("No client certificate CA names sent"),
        "{handshake}"
    );
    let (tenant_cert, _) = served(cloud.port);
    assert_eq!(plane_cert, tenant_cert);

    // Garbage where a ClientHello goes, and a ClientHello that claims to
    // be 16 MiB: closed at once, long before the handshake's deadline.
    let mut garbage = plane.connect();
    let begun = Instant::now();
    garbage.write_all(&[0x47; 64 * 1024]).ok();
    let closed = closed_within(garbage, begun, Duration::from_secs(5));
    assert!(closed.is_some(), "garbage kept its connection");
    let mut oversized = plane.connect();
    let begun = Instant::now();
    // Handshake records of 16 KiB each, the first opening a ClientHello
    // whose length says 0xFFFFFF bytes follow.
    let record = |first: bool| {
        let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00];
        if first {
            record.extend_from_slice(&[0x01, 0xff, 0xff, 0xff]);
        }
        record.resize(5 + 0x4000, 0x41);
        record
    };
    for n in 0..64 {
        if oversized.write_all(&record(n == 0)).is_err() {
            break;
        }
    }
    let closed = closed_within(oversized, begun, Duration::from_secs(5));
    assert!(
        closed.is_some(),
        "an oversized ClientHello kept its connection"
    );

    // Handshakes that stall (nothing sent, or half a record) hold their
    // address's share until their deadline, and no more than that. That
    // all of them are let in shows the failed handshakes above left it.
    let begun = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..PER_ADDRESS).map(|_| plane.connect()).collect();
    stalled[1].write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    stalled[2].write_all(&record(false)[..200]).unwrap();
    // One more from the same address is closed at once.
    let extra = plane.connect();
    let refused = closed_within(extra, Instant::now(), Duration::from_secs(3));
    assert!(refused.is_some(), "the address's share did not hold");
    // Another address calls meanwhile.
    let (status, body) = plane.call_from("127.0.0.2", &url, "meanwhile");
    assert_eq!((status, body.as_str()), (200, "hi POST\nmeanwhile"));
    let limit = HANDSHAKE_TIMEOUT + Duration::from_secs(10);
    let held: Vec<Duration> = stalled
        .into_iter()
        .map(|stream| {
            closed_within(stream, begun, limit).expect("a stalled handshake kept its connection")
        })
        .collect();
    for took in &held {
        assert!(
            *took >= HANDSHAKE_TIMEOUT - Duration::from_secs(1),
            "{took:?}"
        );
    }
    // Its share is free again: the address calls.
    let (status, body) = plane.call_from("127.0.0.1", &url, "after");
    assert_eq!((status, body.as_str()), (200, "hi POST\nafter"));

    eprintln!(
        "TLS handshake median {:.1} ms, max {:.1} ms; stalled handshakes closed after {:?}; the test took {:?}",
        handshakes[handshakes.len() / 2] * 1000.0,
        handshakes[handshakes.len() - 1] * 1000.0,
        held,
        started.elapsed()
    );
}
