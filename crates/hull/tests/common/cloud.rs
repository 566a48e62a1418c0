//! A hulld that also serves tenants over TLS, and clients that act as
//! its tenants.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{stdout_of, text, Daemon};

/// A hulld that also serves tenants over TLS on a port of its own.
pub struct Cloud {
    pub daemon: Daemon,
    pub port: u16,
}

impl Cloud {
    pub fn start(env: &[(&str, &str)]) -> Self {
        let port = super::free_port();
        let listen = format!("tcp://127.0.0.1:{port}");
        let mut env = env.to_vec();
        env.push(("HULL_LISTEN", &listen));
        let daemon = Daemon::start(&env);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "no tenant listener: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { daemon, port }
    }

    /// As [`Daemon::restart_after_crash_with`], the tenant listener on the
    /// same port again.
    pub fn restart_after_crash_with(&self, env: &[(&str, &str)], meanwhile: impl FnOnce()) {
        let listen = self.address();
        let mut env = env.to_vec();
        env.push(("HULL_LISTEN", &listen));
        self.daemon.restart_after_crash_with(&env, meanwhile);
    }

    pub fn ca(&self) -> PathBuf {
        self.daemon.root.join("tls/ca.pem")
    }

    pub fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// `hull` as a tenant with these keys (no saved config).
    pub fn tenant(&self, access: &str, secret: &str, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hull"));
        command
            .args(["-H", &self.address(), "--tlscacert"])
            .arg(self.ca())
            .args(args)
            .env("HULL_ACCESS_KEY", access)
            .env("HULL_SECRET_KEY", secret)
            .env("HULL_CONFIG", self.daemon.root.join("no-config.json"))
            .stdin(Stdio::null());
        command.output().unwrap()
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
        let mut command = Command::new("curl");
        command
            .args([
                "-sS",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-X",
                method,
                "--cacert",
            ])
            .arg(self.ca());
        for (name, value) in headers {
            command.arg("-H").arg(format!("{name}: {value}"));
        }
        if let Some(body) = body {
            command
                .arg("--data-binary")
                .arg(format!("@{}", body.display()));
        }
        command.arg(format!("https://127.0.0.1:{}{target}", self.port));
        let output = command.output().expect("curl runs");
        let out = text(&output.stdout);
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// The stock docker CLI as `tenant`, with a client certificate issued
    /// to it (made on first use).
    pub fn docker_as(&self, tenant: &str, args: &[&str]) -> Output {
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
        Command::new("docker")
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
