//! Pod files: the part of the Kubernetes Pod spec that Hull runs, in YAML
//! (or JSON, which YAML reads too). Fields Hull cannot honour are refused by
//! name rather than ignored, so a pod never runs other than as written.

use std::collections::{BTreeMap, BTreeSet};

use hull_net::{PortBinding, Protocol};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::container::RestartPolicy;
use crate::size::{self, SizeError, VmSize};

/// The annotation that names a pod's size (`S1` … `L3`).
pub const SIZE_ANNOTATION: &str = "hull.sh/size";

#[derive(Debug, thiserror::Error)]
pub enum PodFileError {
    #[error("the pod file is not a valid pod: {0}")]
    Syntax(String),
    #[error("the pod file is a {0:?}; Hull runs only kind: Pod")]
    Kind(String),
    #[error("the pod file's apiVersion is {0:?}; Hull reads v1")]
    ApiVersion(String),
    #[error("invalid {what} name {name:?}: use lowercase letters, digits and '-', starting and ending with a letter or digit ({max} characters at most)")]
    Name {
        what: &'static str,
        name: String,
        max: usize,
    },
    #[error("the pod has no containers")]
    NoContainers,
    #[error("two containers are named {0:?}")]
    DuplicateContainer(String),
    #[error("container {0:?} has no image")]
    NoImage(String),
    #[error("two volumes are named {0:?}")]
    DuplicateVolume(String),
    #[error("volume {0:?} is not an emptyDir: Hull's pods share emptyDir volumes only")]
    VolumeKind(String),
    #[error("container {container:?} mounts volume {volume:?}, which the pod does not declare")]
    UnknownVolume { container: String, volume: String },
    #[error("container {container:?} mounts a volume at {path:?}, which is not an absolute path")]
    RelativeMountPath { container: String, path: String },
    #[error("container {container:?} sets {name:?} from valueFrom, which Hull does not support; give a value")]
    EnvValueFrom { container: String, name: String },
    #[error("container {container:?} has an invalid port: {why}")]
    Port { container: String, why: String },
    #[error("restartPolicy {0:?} is not Always, OnFailure or Never")]
    RestartPolicy(String),
    #[error(transparent)]
    Size(#[from] SizeError),
}

/// A pod as Hull keeps it: validated, with its size settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSpec {
    pub name: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    /// `None`: the daemon's default size.
    pub size: Option<VmSize>,
    pub restart: RestartPolicy,
    pub containers: Vec<PodContainer>,
    /// The pod's emptyDir volumes, shared by the containers that mount them.
    pub volumes: Vec<String>,
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodContainer {
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint (Kubernetes' `command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's command (Kubernetes' `args`).
    pub args: Option<Vec<String>>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub tty: bool,
    pub stdin: bool,
    pub mounts: Vec<PodMount>,
    /// The ports it publishes on the host (those with a `hostPort`).
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// The smallest size that holds its own resources (limits, else
    /// requests); `None` if it names none.
    #[serde(default)]
    pub wants: Option<VmSize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(rename = "namespace")]
    _namespace: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    containers: Vec<Container>,
    #[serde(default)]
    volumes: Vec<Volume>,
    restart_policy: Option<String>,
    hostname: Option<String>,
    #[serde(rename = "terminationGracePeriodSeconds")]
    _termination_grace_period_seconds: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Container {
    name: String,
    image: Option<String>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    #[serde(default)]
    env: Vec<EnvVar>,
    working_dir: Option<String>,
    #[serde(default)]
    tty: bool,
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    ports: Vec<ContainerPort>,
    #[serde(rename = "imagePullPolicy")]
    _image_pull_policy: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContainerPort {
    container_port: u16,
    host_port: Option<u16>,
    #[serde(rename = "hostIP")]
    host_ip: Option<String>,
    protocol: Option<String>,
    #[serde(rename = "name")]
    _name: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnvVar {
    name: String,
    value: Option<String>,
    value_from: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[serde(default)]
    limits: BTreeMap<String, Quantity>,
    #[serde(default)]
    requests: BTreeMap<String, Quantity>,
}

/// YAML writes `cpu: 1` as a number and `cpu: 500m` as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Quantity {
    Number(f64),
    Text(String),
}

impl Quantity {
    fn text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(t) => t.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeMount {
    name: String,
    mount_path: String,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Volume {
    name: String,
    empty_dir: Option<IgnoredAny>,
}

/// Reads and checks a pod file.
pub fn parse(text: &str) -> Result<PodSpec, PodFileError> {
    let file: File =
        serde_norway::from_str(text).map_err(|e| PodFileError::Syntax(e.to_string()))?;
    if let Some(kind) = file.kind.filter(|k| k != "Pod") {
        return Err(PodFileError::Kind(kind));
    }
    if let Some(version) = file.api_version.filter(|v| v != "v1") {
        return Err(PodFileError::ApiVersion(version));
    }
    let name = file.metadata.name;
    check_name("pod", &name, 63)?;
    let hostname = file.spec.hostname.unwrap_or_else(|| name.clone());
    check_name("hostname", &hostname, 63)?;
    let restart = match file.spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure { max_retries: 0 },
        Some("Never") => RestartPolicy::No,
        Some(other) => return Err(PodFileError::RestartPolicy(other.to_owned())),
    };

    let mut volumes = Vec::new();
    for volume in file.spec.volumes {
        check_name("volume", &volume.name, 63)?;
        if volume.empty_dir.is_none() {
            return Err(PodFileError::VolumeKind(volume.name));
        }
        if volumes.contains(&volume.name) {
            return Err(PodFileError::DuplicateVolume(volume.name));
        }
        volumes.push(volume.name);
    }

    if file.spec.containers.is_empty() {
        return Err(PodFileError::NoContainers);
    }
    let mut names = BTreeSet::new();
    let (mut cpus, mut memory_mib, mut asked) = (0.0, 0, false);
    let mut containers = Vec::new();
    for container in file.spec.containers {
        check_name("container", &container.name, 63)?;
        if !names.insert(container.name.clone()) {
            return Err(PodFileError::DuplicateContainer(container.name));
        }
        let image = container
            .image
            .filter(|i| !i.is_empty())
            .ok_or_else(|| PodFileError::NoImage(container.name.clone()))?;
        let mut env = Vec::new();
        for var in container.env {
            if var.value_from.is_some() {
                return Err(PodFileError::EnvValueFrom {
                    container: container.name,
                    name: var.name,
                });
            }
            env.push(format!("{}={}", var.name, var.value.unwrap_or_default()));
        }
        let mut mounts = Vec::new();
        for mount in container.volume_mounts {
            if !volumes.contains(&mount.name) {
                return Err(PodFileError::UnknownVolume {
                    container: container.name,
                    volume: mount.name,
                });
            }
            if !mount.mount_path.starts_with('/') {
                return Err(PodFileError::RelativeMountPath {
                    container: container.name,
                    path: mount.mount_path,
                });
            }
            mounts.push(PodMount {
                volume: mount.name,
                path: mount.mount_path,
                read_only: mount.read_only,
            });
        }
        // As in Kubernetes, a port without a hostPort only documents itself.
        let mut ports = Vec::new();
        for port in &container.ports {
            let Some(host_port) = port.host_port else {
                continue;
            };
            let bad = |why: String| PodFileError::Port {
                container: container.name.clone(),
                why,
            };
            if port.container_port == 0 || host_port == 0 {
                return Err(bad("ports are 1 to 65535".into()));
            }
            let protocol = Protocol::parse(port.protocol.as_deref().unwrap_or("TCP"))
                .map_err(|e| bad(e.to_string()))?;
            let host_ip = port.host_ip.clone().unwrap_or_default();
            if !host_ip.is_empty() && host_ip.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(format!("invalid hostIP {host_ip:?}")));
            }
            ports.push(PortBinding {
                protocol,
                host_ip,
                host_port,
                container_port: port.container_port,
            });
        }
        // Limits bound what the VM must hold; requests stand in without them.
        let resources = container.resources;
        let wanted = |key: &str| {
            resources
                .limits
                .get(key)
                .or_else(|| resources.requests.get(key))
        };
        let (mut own_cpus, mut own_memory_mib) = (None, None);
        if let Some(quantity) = wanted("cpu") {
            own_cpus = Some(size::parse_cpus(&quantity.text())?);
        }
        if let Some(quantity) = wanted("memory") {
            own_memory_mib = Some(size::parse_memory_mib(&quantity.text())?);
        }
        let wants = match (own_cpus, own_memory_mib) {
            (None, None) => None,
            (c, m) => Some(size::fitting(c.unwrap_or(0.0), m.unwrap_or(0))?),
        };
        asked |= wants.is_some();
        cpus += own_cpus.unwrap_or(0.0);
        memory_mib += own_memory_mib.unwrap_or(0);
        containers.push(PodContainer {
            name: container.name,
            image,
            command: container.command,
            args: container.args,
            env,
            working_dir: container.working_dir,
            tty: container.tty,
            stdin: container.stdin,
            mounts,
            ports,
            wants,
        });
    }
    let size = match file.metadata.annotations.get(SIZE_ANNOTATION) {
        Some(name) => {
            let named = size::named(name)?;
            if asked && (cpus > f64::from(named.vcpus) || memory_mib > u64::from(named.memory_mib))
            {
                return Err(PodFileError::Size(SizeError::TooLarge { cpus, memory_mib }));
            }
            Some(named)
        }
        None if asked => Some(size::fitting(cpus, memory_mib)?),
        None => None,
    };
    Ok(PodSpec {
        name,
        hostname,
        labels: file.metadata.labels,
        size,
        restart,
        containers,
        volumes,
    })
}

/// Kubernetes' DNS label rule, which also makes names safe in paths and in
/// container names.
fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), PodFileError> {
    let valid = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(PodFileError::Name {
            what,
            name: name.to_owned(),
            max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {tier: front}
spec:
  restartPolicy: OnFailure
  volumes:
    - name: html
      emptyDir: {}
  containers:
    - name: server
      image: busybox
      command: [httpd, -f, -p, "8080", -h, /www]
      volumeMounts:
        - {name: html, mountPath: /www, readOnly: true}
      resources:
        limits: {cpu: 500m, memory: 64Mi}
      ports:
        - containerPort: 8080
        - {containerPort: 8443, hostPort: 443, hostIP: 127.0.0.1, protocol: TCP}
    - name: writer
      image: busybox:1.36
      args: [sh, -c, "echo hi > /out/index.html; sleep 1000"]
      env:
        - {name: GREETING, value: hello world}
      workingDir: /tmp
      volumeMounts:
        - {name: html, mountPath: /out}
      resources:
        requests: {cpu: 1, memory: 100Mi}
"#;

    #[test]
    fn a_pod_file_reads_as_kubernetes_means_it() {
        let pod = parse(WEB).unwrap();
        assert_eq!(pod.name, "web");
        assert_eq!(pod.hostname, "web");
        assert_eq!(pod.labels["tier"], "front");
        assert_eq!(pod.restart, RestartPolicy::OnFailure { max_retries: 0 });
        assert_eq!(pod.volumes, ["html"]);
        let [server, writer] = &pod.containers[..] else {
            panic!("two containers");
        };
        assert_eq!(server.command.as_ref().unwrap()[0], "httpd");
        assert_eq!(server.args, None);
        assert_eq!(
            server.mounts,
            [PodMount {
                volume: "html".into(),
                path: "/www".into(),
                read_only: true
            }]
        );
        assert_eq!(
            server.ports,
            [PortBinding {
                protocol: Protocol::Tcp,
                host_ip: "127.0.0.1".into(),
                host_port: 443,
                container_port: 8443,
            }]
        );
        assert_eq!(writer.command, None);
        assert_eq!(writer.env, ["GREETING=hello world"]);
        assert_eq!(writer.working_dir.as_deref(), Some("/tmp"));
        // 1.5 CPUs and 164 MiB: the smallest size holding them is M2.
        assert_eq!(pod.size, Some(size::named("M2").unwrap()));
        // Each on its own: 0.5 CPUs and 64 MiB, 1 CPU and 100 MiB.
        assert_eq!(server.wants, Some(size::named("S1").unwrap()));
        assert_eq!(writer.wants, Some(size::named("S2").unwrap()));
    }

    #[test]
    fn a_named_size_wins_unless_the_containers_need_more() {
        let sized = WEB.replace(
            "  labels: {tier: front}",
            "  annotations: {hull.sh/size: L1}",
        );
        assert_eq!(
            parse(&sized).unwrap().size,
            Some(size::named("L1").unwrap())
        );
        let small = WEB.replace(
            "  labels: {tier: front}",
            "  annotations: {hull.sh/size: s1}",
        );
        assert!(matches!(
            parse(&small),
            Err(PodFileError::Size(SizeError::TooLarge { .. }))
        ));
        let plain = "metadata: {name: p}\nspec: {containers: [{name: c, image: busybox}]}";
        let pod = parse(plain).unwrap();
        assert_eq!(pod.size, None);
        assert_eq!(pod.restart, RestartPolicy::Always);
    }

    #[test]
    fn json_is_a_pod_file_too() {
        let json = r#"{"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox", "tty": true}]}}"#;
        let pod = parse(json).unwrap();
        assert!(pod.containers[0].tty);
    }

    #[test]
    fn what_hull_cannot_honour_is_refused_by_name() {
        let cases: [(&str, &str); 11] = [
            ("kind: Deployment\nmetadata: {name: p}\nspec: {containers: []}", "Deployment"),
            ("apiVersion: v2\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}]}", "v2"),
            ("metadata: {name: Web}\nspec: {containers: [{name: c, image: i}]}", "\"Web\""),
            ("metadata: {name: p}\nspec: {containers: []}", "no containers"),
            ("metadata: {name: p}\nspec: {containers: [{name: c, image: i}, {name: c, image: i}]}", "two containers"),
            ("metadata: {name: p}\nspec: {containers: [{name: c}]}", "has no image"),
            ("metadata: {name: p}\nspec: {containers: [{name: c, image: i, livenessProbe: {}}]}", "livenessProbe"),
            ("metadata: {name: p}\nspec: {volumes: [{name: v, hostPath: {path: /}}], containers: [{name: c, image: i}]}", "emptyDir"),
            ("metadata: {name: p}\nspec: {containers: [{name: c, image: i, volumeMounts: [{name: v, mountPath: /v}]}]}", "does not declare"),
            ("metadata: {name: p}\nspec: {containers: [{name: c, image: i, env: [{name: A, valueFrom: {}}]}]}", "valueFrom"),
            ("metadata: {name: p}\nspec: {restartPolicy: Sometimes, containers: [{name: c, image: i}]}", "Sometimes"),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let err = parse("metadata: [\n").unwrap_err().to_string();
        assert!(err.starts_with("the pod file is not a valid pod"), "{err}");
    }
}
