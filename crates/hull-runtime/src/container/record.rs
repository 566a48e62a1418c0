//! What hulld remembers of a container: its configuration, fixed at create,
//! and its state, rewritten atomically at every change.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::spec::ProcessConfig;

/// The file in a container's directory holding its record.
pub const RECORD_FILE: &str = "container.json";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write the container record {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the container record {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container record {} is malformed", .path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// When a container is started again after its process exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    OnFailure {
        /// Restarts allowed; 0 means no limit.
        max_retries: u32,
    },
}

impl RestartPolicy {
    /// Parses docker's `Name` and `MaximumRetryCount`.
    pub fn from_docker(name: &str, max_retries: u32) -> Option<Self> {
        match name {
            "" | "no" => Some(Self::No),
            "always" => Some(Self::Always),
            "unless-stopped" => Some(Self::UnlessStopped),
            "on-failure" => Some(Self::OnFailure { max_retries }),
            _ => None,
        }
    }

    pub fn docker_name(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::Always => "always",
            Self::UnlessStopped => "unless-stopped",
            Self::OnFailure { .. } => "on-failure",
        }
    }

    pub fn max_retries(self) -> u32 {
        match self {
            Self::OnFailure { max_retries } => max_retries,
            _ => 0,
        }
    }

    /// Whether a process that exited with `code` is started again, given
    /// how often it was restarted already and whether a user stopped it.
    pub fn restarts(self, code: i32, restart_count: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Self::No => false,
            Self::Always | Self::UnlessStopped => true,
            Self::OnFailure { max_retries } => {
                code != 0 && (max_retries == 0 || restart_count < max_retries)
            }
        }
    }
}

/// Everything a container was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The reference the user gave, as docker shows it.
    pub image: String,
    /// `sha256:…` of the image config.
    pub image_id: String,
    pub hostname: String,
    pub process: StoredProcess,
    /// The command as the user gave it (`Cmd`), and the entrypoint used,
    /// for inspect.
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub open_stdin: bool,
    /// Close stdin after the first attached client detaches.
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    /// Remove the container when its process exits.
    pub auto_remove: bool,
    pub stop_signal: Option<String>,
    /// Seconds `stop` waits before killing; docker's default is 10.
    pub stop_timeout: Option<u32>,
    /// Keep the writable layer on a disk so it survives stop and start.
    pub persistent: bool,
    /// The pod whose VM the container runs in; `None`: a VM of its own.
    #[serde(default)]
    pub pod: Option<PodMembership>,
    /// Its VM's size; `None`: the daemon's default.
    #[serde(default)]
    pub size: Option<crate::size::VmSize>,
    /// Its memory and CPU limits within that size.
    #[serde(default)]
    pub limits: crate::size::Limits,
    #[serde(default)]
    pub network: hull_net::NetworkMode,
    /// The ports it publishes, as asked (a host port 0 is chosen at start).
    #[serde(default)]
    pub ports: Vec<hull_net::PortBinding>,
    #[serde(default)]
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// Where its output goes and how much of it is kept.
    #[serde(default)]
    pub log: super::logs::LogConfig,
    /// Settings a client gave that Hull keeps, to show them back, without
    /// acting on them: docker's `HostConfig` and `Config` keys that a VM
    /// makes moot (`CpuShares`, `PidMode`...), by section and name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub client_settings: ClientSettings,
    /// The containers it links to (`--link`), which must run when it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<super::links::Link>,
    /// Lines it adds to `/etc/hosts` (`--add-host`): name and address, or
    /// [`super::links::HOST_GATEWAY`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<(String, String)>,
    /// Its health check: the image's, as the create changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<super::health::HealthConfig>,
}

impl ContainerConfig {
    /// The MAC address the client asked for (docker's `MacAddress`), which
    /// the VM's interface takes in place of the one Hull derives.
    pub fn mac_address(&self) -> Option<&str> {
        mac_address_in(&self.client_settings)
    }
}

/// docker's `Config.MacAddress` among a create's settings, if set.
pub fn mac_address_in(settings: &ClientSettings) -> Option<&str> {
    settings
        .get("Config")
        .and_then(|config| config.get("MacAddress"))
        .and_then(serde_json::Value::as_str)
        .filter(|mac| !mac.is_empty())
}

/// Whether `mac` is a unicast MAC address as `ip link` takes it.
pub fn valid_mac(mac: &str) -> bool {
    let octets: Vec<&str> = mac.split(':').collect();
    octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
        && u8::from_str_radix(octets[0], 16).is_ok_and(|first| first & 1 == 0)
}

/// See [`ContainerConfig::client_settings`].
pub type ClientSettings = BTreeMap<String, serde_json::Map<String, serde_json::Value>>;

/// The process of a container, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredProcess {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    #[serde(default)]
    pub rlimits: Vec<hull_proto::Rlimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl From<ProcessConfig> for StoredProcess {
    fn from(process: ProcessConfig) -> Self {
        Self {
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            user: process.user,
            tty: process.tty,
            rlimits: process.rlimits,
            groups: process.groups,
        }
    }
}

/// A container's place in its pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMembership {
    /// The pod's id.
    pub pod: String,
    /// Its position among the pod's containers, which names its disks.
    pub index: usize,
    /// The pod's shared directories it mounts.
    pub mounts: Vec<hull_proto::MountSpec>,
}

/// The agent's stream ids of a main process's stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamIds {
    pub stdin: Option<u32>,
    pub stdout: u32,
    pub stderr: Option<u32>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Restarting,
    Exited,
    Removing,
}

impl Status {
    /// Docker's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Exited => "exited",
            Self::Removing => "removing",
        }
    }
}

/// A container's changing state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub status: Status,
    /// The main process's pid in the guest while it runs.
    pub pid: i32,
    pub exit_code: i32,
    /// Why the last start failed or the VM died.
    pub error: String,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub restart_count: u32,
    /// Set by stop and kill, so restart policies leave the container down.
    pub stopped_by_user: bool,
    /// Exits seen, so a waiter for the next exit can tell one from another.
    pub exits: u64,
    /// The main process's streams while it runs in a pod's VM (whose
    /// containers share the agent's stream ids), so that a restarted hulld
    /// listens on them before the agent resumes its output.
    #[serde(default)]
    pub streams: Option<StreamIds>,
    /// The ports published while it runs, with their host ports.
    #[serde(default)]
    pub ports: Vec<hull_net::PortBinding>,
    /// Its address while it runs; empty without a network.
    #[serde(default)]
    pub ip_address: String,
    /// The networks plugged into its VM's spare network devices while it
    /// runs: slot, to network id.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub plugged: std::collections::BTreeMap<usize, String>,
    /// The variables its links gave it at its start, which its execs get too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_env: Vec<String>,
    /// Its VM's vCPUs are frozen (`docker pause`); only while it runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Its health, once a health check ran; kept across its runs (the
    /// log) and restarts of hulld (all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
}

impl ContainerState {
    pub fn running(&self) -> bool {
        matches!(self.status, Status::Running | Status::Restarting)
    }

    /// Docker's name of its status: `paused` while its VM is frozen.
    pub fn status_name(&self) -> &'static str {
        if self.paused && self.status == Status::Running {
            "paused"
        } else {
            self.status.as_str()
        }
    }
}

/// A container's record on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// Where `name` is unique (see [`super::CreateOptions::namespace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub created: SystemTime,
    /// Set while `create` makes the container's parts: a record found so
    /// by a starting hulld is of a create that a crash cut short.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creating: bool,
    pub config: ContainerConfig,
    pub state: ContainerState,
}

impl Record {
    /// Writes the record into `dir` atomically: a crash leaves the old or the new one.
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        let path = dir.join(RECORD_FILE);
        crate::records::write_json(&path, self)
            .map_err(|source| RecordError::Write { path, source })
    }

    pub fn load(dir: &Path) -> Result<Self, RecordError> {
        let path = dir.join(RECORD_FILE);
        let bytes = fs::read(&path).map_err(|source| RecordError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| RecordError::Malformed { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Record {
        Record {
            id: "ab".repeat(32),
            name: "web".into(),
            namespace: None,
            created: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            creating: false,
            config: ContainerConfig {
                image: "busybox".into(),
                image_id: format!("sha256:{}", "cd".repeat(32)),
                hostname: "abababababab".into(),
                process: StoredProcess {
                    args: vec!["sh".into()],
                    env: vec!["PATH=/bin".into()],
                    cwd: "/".into(),
                    user: String::new(),
                    tty: false,
                    rlimits: vec![hull_proto::Rlimit::new("RLIMIT_NOFILE", 64, 128)],
                    groups: vec!["audio".into()],
                },
                cmd: vec!["sh".into()],
                entrypoint: vec![],
                open_stdin: false,
                stdin_once: false,
                attach_stdin: false,
                attach_stdout: true,
                attach_stderr: true,
                labels: BTreeMap::from([("a".into(), "b".into())]),
                restart: RestartPolicy::OnFailure { max_retries: 3 },
                auto_remove: false,
                stop_signal: None,
                stop_timeout: Some(5),
                persistent: true,
                pod: None,
                size: None,
                limits: crate::size::Limits {
                    memory_bytes: Some(100 << 20),
                    nano_cpus: None,
                },
                network: Default::default(),
                ports: Vec::new(),
                volumes: Vec::new(),
                log: Default::default(),
                client_settings: Default::default(),
                links: Vec::new(),
                extra_hosts: Vec::new(),
                healthcheck: None,
            },
            state: ContainerState::default(),
        }
    }

    #[test]
    fn records_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = sample();
        record.save(dir.path()).unwrap();
        record.state.status = Status::Exited;
        record.state.exit_code = 3;
        record.save(dir.path()).unwrap();
        assert_eq!(Record::load(dir.path()).unwrap(), record);
        assert!(!dir.path().join("container.json.tmp").exists());
    }

    #[test]
    fn a_malformed_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(RECORD_FILE), b"{").unwrap();
        let err = Record::load(dir.path()).unwrap_err();
        assert!(matches!(err, RecordError::Malformed { .. }), "{err}");
    }

    #[test]
    fn restart_policies_follow_docker() {
        let on_failure = RestartPolicy::OnFailure { max_retries: 3 };
        assert!(on_failure.restarts(1, 2, false));
        assert!(!on_failure.restarts(1, 3, false));
        assert!(!on_failure.restarts(0, 0, false));
        assert!(RestartPolicy::OnFailure { max_retries: 0 }.restarts(1, 100, false));
        assert!(RestartPolicy::Always.restarts(0, 9, false));
        assert!(!RestartPolicy::Always.restarts(0, 0, true));
        assert!(!RestartPolicy::No.restarts(1, 0, false));
        assert_eq!(RestartPolicy::from_docker("bogus", 0), None);
        assert_eq!(
            RestartPolicy::from_docker("on-failure", 3),
            Some(on_failure)
        );
    }
}
