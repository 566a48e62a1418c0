//! A real distribution registry (`docker-registry`) on a loopback port, and
//! skopeo to put images into it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{spawn_owned, stdout_of, text};

/// A registry of the test's own, killed when dropped.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    pub storage: PathBuf,
    pid: u32,
    dir: tempfile::TempDir,
}

impl Registry {
    /// An anonymous registry.
    pub fn start() -> Registry {
        Registry::start_with(None)
    }

    /// A registry that wants basic authentication as `user`:`password`.
    pub fn with_basic_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user, password)))
    }

    /// A registry that wants user `hull`, password `s3cret`, holding the
    /// busybox test image as `library/busybox:1.36`.
    pub fn with_busybox_behind_basic_auth() -> Registry {
        let registry = Registry::with_basic_auth("hull", "s3cret");
        registry.push_archive(
            &super::busybox_archive(),
            "library/busybox:1.36",
            &["--dest-creds", "hull:s3cret"],
        );
        registry
    }

    fn start_with(basic: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("hull-registry-")
            .tempdir()
            .unwrap();
        let storage = dir.path().join("storage");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            storage.display()
        );
        if let Some((user, password)) = basic {
            let output = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) runs");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, stdout_of(&output).trim()).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: hull-tests\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let mut command = Command::new("docker-registry");
        command
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let pid = spawn_owned(command);
        let registry = Registry {
            addr,
            storage,
            pid,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `<addr>/<name>`.
    pub fn name(&self, name: &str) -> String {
        format!("{}/{name}", self.addr)
    }

    /// Copies a docker-archive into the registry as `name` (`repo:tag`),
    /// with skopeo's extra `args` (e.g. `--format oci`, `--dest-creds u:p`).
    pub fn push_archive(&self, archive: &Path, name: &str, args: &[&str]) {
        let output = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(args)
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://{}", self.name(name)))
            .output()
            .expect("skopeo runs");
        stdout_of(&output);
    }

    /// The manifest of `name` exactly as the registry stores it.
    pub fn raw_manifest(&self, name: &str, args: &[&str]) -> Vec<u8> {
        let output = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(args)
            .arg(format!("docker://{}", self.name(name)))
            .output()
            .expect("skopeo runs");
        stdout_of(&output);
        output.stdout
    }

    /// Puts a manifest (or index) document straight through the registry API.
    pub fn put_manifest(&self, repository: &str, tag: &str, media_type: &str, body: &[u8]) {
        let file = self.dir.path().join("put-manifest.json");
        std::fs::write(&file, body).unwrap();
        let output = Command::new("curl")
            .args(["-fsS", "-X", "PUT", "-H"])
            .arg(format!("Content-Type: {media_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg(format!(
                "http://{}/v2/{repository}/manifests/{tag}",
                self.addr
            ))
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "{}", text(&output.stderr));
    }

    /// Where the registry keeps blob `hex`'s content.
    pub fn blob_data(&self, hex: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal; the pid is the registry's, reaped by its own thread.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
    }
}

/// What a [`CuttingProxy`] does with the next response longer than its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward everything.
    Never,
    /// Cut that one connection mid-response, then forward again.
    Once,
    /// Cut it, and refuse every connection after it: the registry died.
    AndDie,
}

/// A TCP proxy in front of a registry that cuts a long response after
/// `limit` bytes, as a registry dying or a network failing mid-download would.
pub struct CuttingProxy {
    /// `127.0.0.1:<port>`, to use in image names instead of the registry's.
    pub addr: String,
    mode: std::sync::Arc<std::sync::Mutex<Cut>>,
    cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl CuttingProxy {
    pub fn new(upstream: &str, limit: usize, mode: Cut) -> CuttingProxy {
        CuttingProxy::with_delay(upstream, limit, mode, Duration::ZERO)
    }

    /// A proxy that holds every response back for `delay`, so that
    /// concurrent clients overlap, and cuts nothing.
    pub fn slow(upstream: &str, delay: Duration) -> CuttingProxy {
        CuttingProxy::with_delay(upstream, usize::MAX, Cut::Never, delay)
    }

    /// The first line of every request that went through.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn with_delay(upstream: &str, limit: usize, mode: Cut, delay: Duration) -> CuttingProxy {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let cuts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (shared_mode, shared_cuts, shared_requests) =
            (mode.clone(), cuts.clone(), requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let dead = *shared_mode.lock().unwrap() == Cut::AndDie
                    && shared_cuts.load(Ordering::SeqCst) > 0;
                if dead {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mode, cuts) = (shared_mode.clone(), shared_cuts.clone());
                let (client_in, server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let requests = shared_requests.clone();
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    loop {
                        let n = match std::io::Read::read(&mut &client_in, &mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let text = String::from_utf8_lossy(&buffer[..n]);
                        for line in text.lines() {
                            if ["GET ", "HEAD ", "PUT ", "POST ", "PATCH "]
                                .iter()
                                .any(|m| line.starts_with(m))
                            {
                                requests.lock().unwrap().push(line.to_owned());
                            }
                        }
                        if std::io::Write::write_all(&mut &server_out, &buffer[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = server_out.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buffer = [0u8; 16 * 1024];
                    let mut forwarded = 0;
                    loop {
                        let n = match std::io::Read::read(&mut &server, &mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if forwarded == 0 {
                            std::thread::sleep(delay);
                        }
                        let cutting = *mode.lock().unwrap() != Cut::Never;
                        if cutting && forwarded + n > limit {
                            let keep = limit.saturating_sub(forwarded);
                            let _ = std::io::Write::write_all(&mut &client, &buffer[..keep]);
                            cuts.fetch_add(1, Ordering::SeqCst);
                            let mut mode = mode.lock().unwrap();
                            if *mode == Cut::Once {
                                *mode = Cut::Never;
                            }
                            break;
                        }
                        if std::io::Write::write_all(&mut &client, &buffer[..n]).is_err() {
                            break;
                        }
                        forwarded += n;
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy {
            addr,
            mode,
            cuts,
            requests,
        }
    }

    /// How many responses were cut.
    pub fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forward everything from now on: the registry is back.
    pub fn revive(&self) {
        *self.mode.lock().unwrap() = Cut::Never;
        self.cuts.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}
