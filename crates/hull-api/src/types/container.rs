//! Container bodies of the Engine API, with the fields the docker CLI and
//! docker-py read. Unknown request fields are ignored, as docker ignores them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::ulimit::Ulimit;
pub use hull_image::spec::HealthConfig;

/// Docker accepts a command as a list or as one string (split by a shell's
/// rules in the CLI, taken whole here).
fn string_or_list<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(de)? {
        None => None,
        Some(Either::One(one)) => Some(vec![one]),
        Some(Either::Many(many)) => Some(many),
    })
}

/// `POST /containers/create`: the container config with `HostConfig` inside.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerCreate {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Option<Vec<String>>,
    #[serde(deserialize_with = "string_or_list")]
    pub cmd: Option<Vec<String>>,
    #[serde(deserialize_with = "string_or_list")]
    pub entrypoint: Option<Vec<String>>,
    pub image: String,
    pub working_dir: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
    /// Over the image's `HEALTHCHECK` (`--health-*`, `--no-healthcheck`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// The keys Hull does not read (`MacAddress`, `Domainname`...), kept
    /// to show back in inspect.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, EndpointSettings>>,
}

/// How a container joins one network, in create and in connect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointSettings {
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpam>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointIpam {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub network_mode: Option<String>,
    pub port_bindings: Option<BTreeMap<String, serde_json::Value>>,
    pub restart_policy: Option<RestartPolicy>,
    pub auto_remove: bool,
    pub mounts: Option<Vec<serde_json::Value>>,
    pub privileged: bool,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub ulimits: Option<Vec<Ulimit>>,
    /// The log driver and its options (`--log-driver`, `--log-opt`).
    pub log_config: Option<CreateLogConfig>,
    /// The keys Hull does not read (`CpuShares`, `PidMode`...), kept to
    /// show back in inspect.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `HostConfig.LogConfig` as a create sends it: docker's CLI sends a
/// `Config` of null when no `--log-opt` is given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateLogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: u32,
}

/// `POST /containers/{id}/update`: the part of docker's `UpdateConfig`
/// Hull reads. Zero (or an empty restart policy name) changes nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerUpdate {
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub blkio_weight: Option<i64>,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicy>,
    /// Hyper.sh's client sends the container's labels to change its
    /// security groups (`sh_hyper_sg_<name>`); only those are read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerUpdated {
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCreated {
    pub id: String,
    pub warnings: Vec<String>,
}

/// `GET /containers/json` entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    pub command: String,
    pub created: i64,
    pub ports: Vec<serde_json::Value>,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    pub status: String,
    pub host_config: SummaryHostConfig,
    pub network_settings: SummaryNetworks,
    pub mounts: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryHostConfig {
    pub network_mode: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryNetworks {
    pub networks: BTreeMap<String, serde_json::Value>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    pub state: ContainerStateBody,
    pub image: String,
    pub resolv_conf_path: String,
    pub hostname_path: String,
    pub hosts_path: String,
    pub log_path: String,
    pub name: String,
    pub restart_count: u32,
    pub driver: String,
    pub platform: String,
    #[serde(rename = "ExecIDs")]
    pub exec_ids: Option<Vec<String>>,
    pub host_config: InspectHostConfig,
    pub mounts: Vec<serde_json::Value>,
    pub config: InspectConfig,
    pub network_settings: InspectNetworkSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerStateBody {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub dead: bool,
    pub pid: i32,
    pub exit_code: i32,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    /// Only for a container with a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthBody>,
}

/// `State.Health` of inspect.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthBody {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthLogEntry>,
}

/// One probe's result in [`HealthBody::log`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthLogEntry {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectHostConfig {
    pub network_mode: String,
    pub restart_policy: RestartPolicy,
    pub auto_remove: bool,
    pub log_config: LogConfig,
    pub binds: Option<Vec<String>>,
    pub port_bindings: BTreeMap<String, serde_json::Value>,
    /// The VM's memory in bytes (docker's limit; here the VM's size).
    #[serde(default)]
    pub memory: i64,
    #[serde(default)]
    pub nano_cpus: i64,
    /// The main process's resource limits, which exec'd ones share.
    #[serde(default)]
    pub ulimits: Option<Vec<Ulimit>>,
    /// Docker's other keys: what the client set, or docker's defaults.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    pub hostname: String,
    pub domainname: String,
    pub user: String,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub image: String,
    pub working_dir: String,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker's other keys that the client set (`MacAddress`...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectNetworkSettings {
    pub networks: BTreeMap<String, serde_json::Value>,
    pub ports: BTreeMap<String, serde_json::Value>,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    pub gateway: String,
    pub mac_address: String,
}

/// `POST /containers/{id}/wait`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    pub status_code: i64,
    pub error: Option<WaitError>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitError {
    pub message: String,
}

/// `POST /containers/prune`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainersPruned {
    pub containers_deleted: Vec<String>,
    pub space_reclaimed: u64,
}

/// `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecCreate {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    pub env: Option<Vec<String>>,
    #[serde(deserialize_with = "string_or_list")]
    pub cmd: Option<Vec<String>>,
    pub working_dir: String,
    pub user: String,
    pub privileged: bool,
    pub console_size: Option<[u16; 2]>,
    /// docker's client sends `detachKeys`; docker reads either.
    #[serde(alias = "detachKeys")]
    pub detach_keys: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdResponse {
    pub id: String,
}

/// `POST /exec/{id}/start`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStart {
    pub detach: bool,
    pub tty: bool,
    pub console_size: Option<[u16; 2]>,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub running: bool,
    pub exit_code: Option<i32>,
    pub open_stdin: bool,
    pub open_stderr: bool,
    pub open_stdout: bool,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub pid: i32,
    pub process_config: ExecProcessConfig,
    pub can_remove: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecProcessConfig {
    pub tty: bool,
    pub entrypoint: String,
    pub arguments: Vec<String>,
    pub privileged: bool,
    pub user: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_from_the_docker_cli_parse() {
        let body = r#"{"Hostname":"","User":"","AttachStdin":false,"AttachStdout":true,
            "Tty":false,"OpenStdin":false,"Env":null,"Cmd":["sh","-c","echo hi"],
            "Image":"busybox","Volumes":{},"WorkingDir":"","Entrypoint":null,
            "Labels":{"a":"b"},"HostConfig":{"Binds":null,"NetworkMode":"default",
            "PortBindings":{},"RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},
            "AutoRemove":true,"ConsoleSize":[24,80],"Unknown":1},"NetworkingConfig":{}}"#;
        let create: ContainerCreate = serde_json::from_str(body).unwrap();
        assert_eq!(create.cmd.unwrap(), ["sh", "-c", "echo hi"]);
        assert!(create.entrypoint.is_none());
        let host = create.host_config.unwrap();
        assert!(host.auto_remove);
        assert_eq!(host.restart_policy.unwrap().maximum_retry_count, 3);
    }

    #[test]
    fn a_command_may_be_one_string() {
        let create: ContainerCreate =
            serde_json::from_str(r#"{"Image":"x","Cmd":"top","Entrypoint":[""]}"#).unwrap();
        assert_eq!(create.cmd.unwrap(), ["top"]);
        assert_eq!(create.entrypoint.unwrap(), [""]);
    }
}
