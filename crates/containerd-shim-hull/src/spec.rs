//! What the shim takes from the OCI runtime spec in a bundle: the process
//! (args, env, cwd, user, terminal, rlimits), the hostname, the CRI sandbox
//! annotations, and which mounts the guest agent already makes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hull_proto::Rlimit;
use hull_runtime::size::Limits;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

use crate::binds::Bind;

/// CRI's annotation naming the sandbox (pod) a container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// CRI's annotation saying whether a container is the sandbox itself
/// (`sandbox`, the pause container) or one of its workloads (`container`).
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read the OCI spec {path}")]
    Read {
        path: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("the OCI spec has no process to run")]
    NoProcess,
    #[error("the OCI spec's process has no args")]
    NoArgs,
    #[error("the exec request carries no process spec")]
    NoExecSpec,
    #[error("the exec request's process spec is not valid JSON")]
    ExecSpec(#[source] serde_json::Error),
}

/// A process as the guest agent runs it, before stream ids are given: the
/// same as a Hull container's, its user `uid:gid` (containerd resolved
/// names already).
pub use hull_runtime::ProcessConfig;

/// The process an OCI `Process` describes.
pub fn process_from_oci(process: &Process) -> Result<ProcessConfig, SpecError> {
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::NoArgs);
    }
    let user = process.user();
    let cwd = process.cwd().to_string_lossy().into_owned();
    Ok(ProcessConfig {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: if cwd.is_empty() { "/".into() } else { cwd },
        user: format!("{}:{}", user.uid(), user.gid()),
        tty: process.terminal().unwrap_or(false),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|limit| Rlimit::new(limit.typ().to_string(), limit.soft(), limit.hard()))
            .collect(),
        // CRI's supplemental groups, and the image's for the user.
        groups: user
            .additional_gids()
            .iter()
            .flatten()
            .map(u32::to_string)
            .collect(),
    })
}

/// The process of an exec request: the OCI `Process` as JSON.
pub fn process_from_exec_json(json: &[u8]) -> Result<ProcessConfig, SpecError> {
    if json.is_empty() {
        return Err(SpecError::NoExecSpec);
    }
    let process: Process = serde_json::from_slice(json).map_err(SpecError::ExecSpec)?;
    process_from_oci(&process)
}

/// The parts of a bundle's `config.json` a container is made from.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub process: ProcessConfig,
    pub hostname: String,
    pub annotations: HashMap<String, String>,
    /// Host paths bind-mounted into the container, to copy into its image.
    pub binds: Vec<Bind>,
    /// Mounts the guest cannot make; logged, not refused, so that a spec
    /// made for runc still runs.
    pub unsupported_mounts: Vec<String>,
    /// The network namespace the spec joins (CRI's pod namespace, `ctr run
    /// --with-ns network:…`), whose interface the VM takes over.
    pub network_namespace: Option<PathBuf>,
    /// The memory and CPU limits of its `linux.resources`.
    pub limits: Limits,
}

impl ContainerConfig {
    pub fn load(bundle: &Path) -> Result<Self, SpecError> {
        let path = bundle.join("config.json");
        let spec = Spec::load(&path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_spec(&spec)
    }

    pub fn from_spec(spec: &Spec) -> Result<Self, SpecError> {
        let process = spec.process().as_ref().ok_or(SpecError::NoProcess)?;
        let mounts = spec.mounts().as_deref().unwrap_or_default();
        Ok(Self {
            process: process_from_oci(process)?,
            hostname: spec.hostname().clone().unwrap_or_default(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            binds: mounts.iter().filter_map(bind_of).collect(),
            unsupported_mounts: mounts
                .iter()
                .filter(|m| !made_by_agent(m) && bind_of(m).is_none())
                .map(|m| m.destination().display().to_string())
                .collect(),
            network_namespace: network_namespace(spec),
            limits: spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .map(crate::resources::limits_of)
                .unwrap_or_default(),
        })
    }

    /// The shim (and so the VM) that serves this container: its sandbox's,
    /// or its own when it has none (`ctr run`).
    pub fn grouping(&self, id: &str) -> String {
        grouping(&self.annotations, id)
    }
}

/// The path of the network namespace the spec joins, if it names one.
fn network_namespace(spec: &Spec) -> Option<PathBuf> {
    let namespaces = spec.linux().as_ref()?.namespaces().as_ref()?;
    namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)?
        .path()
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
}

pub fn grouping(annotations: &HashMap<String, String>, id: &str) -> String {
    match annotations.get(SANDBOX_ID) {
        Some(sandbox) if !sandbox.is_empty() => sandbox.clone(),
        _ => id.to_owned(),
    }
}

/// A bind mount of a host path, as runc reads one: type `bind`, or any
/// type with a `bind`/`rbind` option.
fn bind_of(mount: &Mount) -> Option<Bind> {
    let options = mount.options().as_deref().unwrap_or_default();
    let is_bind = mount.typ().as_deref() == Some("bind")
        || options.iter().any(|o| o == "bind" || o == "rbind");
    let source = mount.source().as_ref()?;
    (is_bind && source.is_absolute()).then(|| Bind {
        source: source.clone(),
        destination: mount.destination().display().to_string(),
        read_only: options.iter().any(|o| o == "ro"),
    })
}

/// The kernel filesystems every container gets from the guest agent, as
/// runc makes them; the spec lists them too.
fn made_by_agent(mount: &Mount) -> bool {
    let kind = mount.typ().as_deref().unwrap_or_default();
    let target = mount.destination().to_string_lossy();
    matches!(
        kind,
        "proc" | "sysfs" | "devpts" | "mqueue" | "cgroup" | "cgroup2"
    ) || (kind == "tmpfs" && matches!(&*target, "/dev" | "/dev/shm" | "/run"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const CTR_SPEC: &str = r#"{
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 29]},
            "args": ["sh", "-c", "echo hi"],
            "env": ["PATH=/bin", "A=1"],
            "cwd": "/tmp",
            "terminal": true,
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024},
                {"type": "RLIMIT_CORE", "hard": 18446744073709551615, "soft": 0}
            ]
        },
        "root": {"path": "rootfs"},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs"},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/x/resolv.conf"}
        ],
        "annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}
    }"#;

    #[test]
    fn the_process_is_taken_as_the_agent_runs_it() {
        let config = ContainerConfig::from_spec(&spec(CTR_SPEC)).unwrap();
        assert_eq!(
            config.process,
            ProcessConfig {
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/bin".into(), "A=1".into()],
                cwd: "/tmp".into(),
                user: "1000:100".into(),
                tty: true,
                rlimits: vec![
                    Rlimit::new("RLIMIT_NOFILE", 1024, 2048),
                    Rlimit::new("RLIMIT_CORE", 0, hull_proto::RLIM_INFINITY),
                ],
                groups: vec!["10".into(), "29".into()],
            }
        );
        assert_eq!(config.hostname, "box");
        assert_eq!(config.network_namespace, None);
    }

    #[test]
    fn the_network_namespace_joined_is_the_pods() {
        let json = r#"{"ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
            "linux": {"namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/var/run/netns/cni-1234"}
            ]}}"#;
        let config = ContainerConfig::from_spec(&spec(json)).unwrap();
        assert_eq!(
            config.network_namespace.as_deref(),
            Some(Path::new("/var/run/netns/cni-1234"))
        );
    }

    #[test]
    fn host_bind_mounts_are_copied_and_the_agents_own_skipped() {
        let config = ContainerConfig::from_spec(&spec(CTR_SPEC)).unwrap();
        assert_eq!(
            config.binds,
            vec![Bind {
                source: "/x/resolv.conf".into(),
                destination: "/etc/resolv.conf".into(),
                read_only: false,
            }]
        );
        assert!(config.unsupported_mounts.is_empty());
    }

    #[test]
    fn other_mounts_are_unsupported() {
        let json = r#"{"ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["true"], "cwd": "/"},
            "mounts": [
                {"destination": "/data", "type": "none", "source": "/srv", "options": ["rbind", "ro"]},
                {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"}
            ]}"#;
        let config = ContainerConfig::from_spec(&spec(json)).unwrap();
        assert_eq!(config.binds[0].destination, "/data");
        assert!(config.binds[0].read_only);
        assert_eq!(config.unsupported_mounts, vec!["/scratch"]);
    }

    #[test]
    fn containers_of_a_sandbox_share_its_grouping() {
        let config = ContainerConfig::from_spec(&spec(CTR_SPEC)).unwrap();
        assert_eq!(config.grouping("c1"), "pod1");
        assert_eq!(grouping(&HashMap::new(), "c1"), "c1");
    }

    #[test]
    fn a_process_without_args_is_refused() {
        let json =
            r#"{"ociVersion": "1.0.2", "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/"}}"#;
        assert!(matches!(
            ContainerConfig::from_spec(&spec(json)),
            Err(SpecError::NoArgs)
        ));
    }

    #[test]
    fn an_exec_process_comes_as_json() {
        let json = br#"{"user": {"uid": 0, "gid": 0}, "args": ["ls", "/"], "cwd": "",
            "rlimits": [{"type": "RLIMIT_NPROC", "hard": 64, "soft": 32}]}"#;
        let process = process_from_exec_json(json).unwrap();
        assert_eq!(process.args, vec!["ls", "/"]);
        assert_eq!(process.rlimits, [Rlimit::new("RLIMIT_NPROC", 32, 64)]);
        assert_eq!(process.cwd, "/");
        assert_eq!(process.user, "0:0");
        assert!(matches!(
            process_from_exec_json(b""),
            Err(SpecError::NoExecSpec)
        ));
    }
}
