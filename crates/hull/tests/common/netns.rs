//! Network namespaces the tests make, so that bridges, taps, routes and
//! nftables rules never touch the host's, and are gone when the tests end;
//! and what tests of reachability need in them: servers and probes.

use std::fs::File;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

static TO_DELETE: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn delete_registered() {
    if let Ok(names) = TO_DELETE.lock() {
        for name in names.iter() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            let _ = std::fs::remove_dir_all(etc_dir(name));
        }
    }
}

/// Files here replace /etc's for programs that `ip netns exec` runs.
fn etc_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(name)
}

/// A named network namespace with `lo` up, deleted at exit.
pub struct NetNs {
    pub name: String,
}

fn ip(args: &[&str]) -> Output {
    let output = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl NetNs {
    pub fn new(purpose: &str) -> NetNs {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        static REGISTERED: std::sync::Once = std::sync::Once::new();
        REGISTERED.call_once(|| {
            // SAFETY: registers a plain function that lives for the whole program.
            unsafe { libc::atexit(delete_registered) };
        });
        let name = format!(
            "hull-{purpose}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        TO_DELETE.lock().unwrap().push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        NetNs { name }
    }

    /// Runs `ip -n NAME args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }

    /// Gives programs started in the namespace (hulld and its QEMUs) this
    /// `resolv.conf`; call it before starting them.
    pub fn set_resolv_conf(&self, text: &str) {
        let dir = etc_dir(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), text).unwrap();
    }

    /// Runs `work` on a thread that has joined the namespace, so that the
    /// sockets it opens are the namespace's.
    pub fn within<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let file = File::open(&path).expect("the namespace exists");
                    // SAFETY: setns on a namespace fd moves only this thread,
                    // which ends when `work` does.
                    let joined = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
                    work()
                })
                .join()
                .expect("the work in the namespace does not panic")
        })
    }
}

/// Links namespace `a` to `b` by a veth pair, with `a_address` and
/// `b_address` (`10.x.y.z/24`) on the two ends.
pub fn link(a: &NetNs, a_address: &str, b: &NetNs, b_address: &str) {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let (a_end, b_end) = (format!("veth{n}a"), format!("veth{n}b"));
    let (a_end, b_end) = (a_end.as_str(), b_end.as_str());
    a.ip(&[
        "link", "add", a_end, "type", "veth", "peer", "name", b_end, "netns", &b.name,
    ]);
    a.ip(&["addr", "add", a_address, "dev", a_end]);
    a.ip(&["link", "set", a_end, "up"]);
    b.ip(&["addr", "add", b_address, "dev", b_end]);
    b.ip(&["link", "set", b_end, "up"]);
}

/// A TCP server in the namespace at `address` (port 0: a free one) that
/// writes `secret` to whoever connects; its port.
pub fn secret_server(netns: &NetNs, address: &str, secret: &'static str) -> u16 {
    let address = address.to_owned();
    let listener = netns.within(move || TcpListener::bind((address.as_str(), 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(format!("{secret}\n").as_bytes());
        }
    });
    port
}

/// Whether a TCP connection to `address:port` from the namespace gets
/// through within 3 s.
pub fn reaches(netns: &NetNs, address: &str, port: u16) -> bool {
    let target = format!("{address}:{port}")
        .parse()
        .expect("an address and a port");
    netns.within(|| TcpStream::connect_timeout(&target, std::time::Duration::from_secs(3)).is_ok())
}

/// The address and gateway of a container on a network.
pub fn address_on(daemon: &super::Daemon, network: &str, container: &str) -> (String, String) {
    let out = super::stdout_of(&daemon.hull(&["network", "inspect", network]));
    let network = &serde_json::from_str::<serde_json::Value>(&out).unwrap()[0];
    let gateway = network["IPAM"]["Config"][0]["Gateway"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = super::stdout_of(&daemon.hull(&["inspect", container]));
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let address = network["Containers"][&id]["IPv4Address"]
        .as_str()
        .expect("the container is on the network")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    (address, gateway)
}
