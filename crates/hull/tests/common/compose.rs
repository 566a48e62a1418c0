//! A docker-compose project run against a test's hulld, with Debian's
//! `docker-compose` (1.29), which scripts/deps.sh installs.

use super::{stdout_of, Daemon};

pub struct Project {
    dir: tempfile::TempDir,
    name: String,
    host: String,
}

impl Project {
    /// The project `name` of `compose_file` for `daemon`; `None`, said
    /// once, where docker-compose is not installed.
    pub fn new(daemon: &Daemon, name: &str, compose_file: &str) -> Option<Project> {
        let present = std::process::Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            eprintln!("skipped: docker-compose is not installed (scripts/deps.sh installs it)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker-compose.yml"), compose_file).unwrap();
        Some(Project {
            dir,
            name: name.to_owned(),
            host: format!("unix://{}", daemon.socket.display()),
        })
    }

    fn output(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("docker-compose")
            .args(["--project-name", &self.name])
            .args(args)
            .current_dir(self.dir.path())
            .env("DOCKER_HOST", &self.host)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker-compose ARGS`' standard output; it must succeed.
    pub fn run(&self, args: &[&str]) -> String {
        stdout_of(&self.output(args))
    }

    /// `docker-compose ARGS`' standard output, or what it said on failing.
    pub fn try_run(&self, args: &[&str]) -> Result<String, String> {
        let output = self.output(args);
        let said = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        if output.status.success() {
            Ok(said(&output.stdout))
        } else {
            Err(said(&output.stdout) + &said(&output.stderr))
        }
    }
}
