//! A hulld that also serves tenants over TLS, and clients that act as
//! its tenants.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use hull_cloud::date::HyperDate;
use hull_cloud::sign;

use super::netns::NetNs;
use super::{stdout_of, text, Daemon};

/// A hulld that also serves tenants over TLS on a port of its own.
pub struct Cloud {
    pub daemon: Daemon,
    pub port: u16,
    /// The network namespace hulld runs in, if it has one of its own;
    /// the listener's clients run in it too.
    pub netns: Option<NetNs>,
}

impl Cloud {
    pub fn start(env: &[(&str, &str)]) -> Self {
        Self::start_with(None, env)
    }

    /// As [`Cloud::start`], hulld in a network namespace of its own: its
    /// bridges, taps and firewall are then out of reach of the other
    /// hullds on the machine, each of which takes the taps and Hull's
    /// table of its namespace for its own.
    pub fn start_isolated(env: &[(&str, &str)]) -> Self {
        Self::start_with(Some(NetNs::new("cloud")), env)
    }

    /// As [`Cloud::start_isolated`], in a namespace the test has already
    /// furnished (links hulld needs at its start).
    pub fn start_in(netns: NetNs, env: &[(&str, &str)]) -> Self {
        Self::start_with(Some(netns), env)
    }

    fn start_with(netns: Option<NetNs>, env: &[(&str, &str)]) -> Self {
        let port = super::free_port();
        let listen = format!("tcp://127.0.0.1:{port}");
        let mut env = env.to_vec();
        env.push(("HULL_LISTEN", &listen));
        let daemon = Daemon::start_in(netns.as_ref().map(|n| n.name.as_str()), &env);
        let cloud = Self {
            daemon,
            port,
            netns,
        };
        cloud.wait_for_listener();
        cloud
    }

    fn wait_for_listener(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let listening = || match &self.netns {
            Some(netns) => super::netns::reaches(netns, "127.0.0.1", self.port),
            None => std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok(),
        };
        while !listening() {
            assert!(
                Instant::now() < deadline,
                "no tenant listener: {}",
                self.daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program`, to run where hulld's network is: in its namespace if it
    /// has one.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &netns.name]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// As [`Daemon::restart_after_crash_with`], the tenant listener on the
    /// same port again.
    pub fn restart_after_crash_with(&self, env: &[(&str, &str)], meanwhile: impl FnOnce()) {
        let listen = self.address();
        let mut env = env.to_vec();
        env.push(("HULL_LISTEN", &listen));
        self.daemon.restart_after_crash_with(&env, meanwhile);
        self.wait_for_listener();
    }

    pub fn ca(&self) -> PathBuf {
        self.daemon.root.join("tls/ca.pem")
    }

    pub fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// `hull` as a tenant with these keys (no saved config).
    pub fn tenant(&self, access: &str, secret: &str, args: &[&str]) -> Output {
        self.tenant_with(access, secret, &[], args)
    }

    /// A key for a new tenant `name`: (access key, secret key).
    pub fn tenant_with_key(&self, name: &str) -> (String, String) {
        stdout_of(&self.daemon.hull(&["admin", "tenant", "create", name]));
        let key: serde_json::Value = serde_json::from_str(&stdout_of(
            &self
                .daemon
                .hull(&["admin", "key", "create", name, "--format", "json"]),
        ))
        .unwrap();
        (
            key["AccessKey"].as_str().unwrap().to_owned(),
            key["SecretKey"].as_str().unwrap().to_owned(),
        )
    }

    /// curl against the listener: (status, body).
    pub fn curl(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: Option<&Path>,
    ) -> (u16, String) {
        let mut command = self.curl_command(method, target);
        command.arg("--cacert").arg(self.ca());
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        if let Some(body) = body {
            command
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
        }
        run_curl(command)
    }

    /// Headers of a request signed now with `access`/`secret` (host included).
    pub fn signed_headers(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        access: &str,
        secret: &str,
    ) -> Vec<(String, String)> {
        let host = format!("127.0.0.1:{}", self.port);
        let payload = sign::payload_sha256(body);
        let date = HyperDate::from_time(SystemTime::now());
        let mut headers = vec![
            ("Host".to_owned(), host),
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("X-Hyper-Date".to_owned(), date.stamp().to_owned()),
            ("X-Hyper-Content-Sha256".to_owned(), payload.clone()),
        ];
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = sign::Request {
            method,
            path,
            query,
            headers: headers.clone(),
            payload_sha256: &payload,
        };
        let credentials = sign::Credentials {
            access_key: access.to_owned(),
            secret_key: secret.to_owned(),
            region: "us-west-1".to_owned(),
        };
        headers.push((
            "Authorization".to_owned(),
            sign::authorization(&credentials, &request, &date),
        ));
        headers
    }

    /// curl's command for one request to the listener; its output ends
    /// with the status.
    fn curl_command(&self, method: &str, target: &str) -> Command {
        let mut command = self.command("curl");
        command.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
        command.arg(format!("https://127.0.0.1:{}{target}", self.port));
        command
    }

    /// The stock docker CLI as `tenant`, with a client certificate issued
    /// to it (made on first use).
    pub fn docker_as(&self, tenant: &str, args: &[&str]) -> Output {
        let certs = self.client_certs(tenant);
        self.command("docker")
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(certs.join("ca.pem"))
            .arg("--tlscert")
            .arg(certs.join("cert.pem"))
            .arg("--tlskey")
            .arg(certs.join("key.pem"))
            .args(["-H", &self.address()])
            .args(args)
            .env("DOCKER_CONFIG", self.daemon.root.join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("docker runs")
    }
}

/// Requests sent with a tenant's client certificate.
impl Cloud {
    /// The directory of `tenant`'s client certificate (`cert.pem`,
    /// `key.pem`, `ca.pem`), issued on first use.
    pub fn client_certs(&self, tenant: &str) -> PathBuf {
        let certs = self.daemon.root.join(format!("{tenant}-tls"));
        if !certs.join("key.pem").exists() {
            let issued = self.daemon.hull(&[
                "admin",
                "key",
                "create",
                tenant,
                "--tls-client",
                "--out",
                certs.to_str().unwrap(),
            ]);
            assert!(issued.status.success(), "{}", text(&issued.stderr));
        }
        certs
    }

    /// curl as `tenant`, with its client certificate: (status, raw body).
    pub fn curl_as(
        &self,
        tenant: &str,
        method: &str,
        target: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        let mut command = self.tenant_curl(tenant, method, target);
        if let Some(body) = body {
            command
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(body);
        }
        run_curl(command)
    }

    /// curl as `tenant`, with its client certificate.
    fn tenant_curl(&self, tenant: &str, method: &str, target: &str) -> Command {
        let certs = self.client_certs(tenant);
        let mut command = self.curl_command(method, target);
        command
            .arg("--cacert")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("cert.pem"))
            .arg("--key")
            .arg(certs.join("key.pem"));
        command
    }

    /// curl as `tenant` with its client certificate, the body read from
    /// `body`: (status, raw body).
    pub fn curl_file_as(
        &self,
        tenant: &str,
        method: &str,
        target: &str,
        body: Option<&Path>,
    ) -> (u16, String) {
        let mut command = self.tenant_curl(tenant, method, target);
        if let Some(body) = body {
            command
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
        }
        run_curl(command)
    }
}

/// Runs a command of [`Cloud::curl_command`]: (status, body).
fn run_curl(mut command: Command) -> (u16, String) {
    let output = command.output().expect("curl runs");
    let out = text(&output.stdout);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// What the image tests add: more environment, and archives small enough
/// for a signed body.
impl Cloud {
    /// [`Cloud::tenant`] with more environment, e.g. `HULL_REGISTRY_AUTH`.
    pub fn tenant_with(
        &self,
        access: &str,
        secret: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Output {
        let mut command = self.command(env!("CARGO_BIN_EXE_hull"));
        command
            .args(["-H", &self.address(), "--tlscacert"])
            .arg(self.ca())
            .args(args)
            .env("HULL_ACCESS_KEY", access)
            .env("HULL_SECRET_KEY", secret)
            .env("HULL_CONFIG", self.daemon.root.join("no-config.json"))
            .env("HULL_AUTH_FILE", self.daemon.root.join("no-auth.json"))
            .env_remove("HULL_REGISTRY_AUTH")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        command.output().unwrap()
    }
}

/// A docker-archive of one image, `tag`, whose one layer holds the file
/// `hello` with `content`: small enough for a tenant's signed body.
pub fn tiny_archive(dir: &Path, tag: &str, content: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let layer_path = dir.join(format!("{}-layer.tar", tag.replace([':', '/'], "_")));
    super::write_tar(&layer_path, [("hello", content.as_bytes())].into_iter());
    let layer = std::fs::read(&layer_path).unwrap();
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&layer)));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))
    .unwrap();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config)));
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}
    ]))
    .unwrap();
    let archive = dir.join(format!("{}.tar", tag.replace([':', '/'], "_")));
    super::write_tar(
        &archive,
        [
            ("manifest.json", manifest.as_slice()),
            (config_name.as_str(), config.as_slice()),
            ("layer/layer.tar", layer.as_slice()),
        ]
        .into_iter(),
    );
    archive
}
