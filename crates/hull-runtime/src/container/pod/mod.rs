//! The containers of a pod in one VM: the VM boots with every container's
//! disks and mounts them all, each container's process starts and stops in
//! it on its own, and the VM powers off once none runs.

mod reattach;
mod vm;

use std::collections::BTreeMap;
use std::sync::Arc;

use hull_vm::Hypervisor;
use serde::Serialize;
use tracing::{info, warn};

pub use vm::pod_vm_name;
pub(super) use vm::PodSlot;
pub(crate) use vm::PodVm;

use super::{lock, Container, ContainerError, Containers, CreateOptions, PodMembership};
use crate::pod::{member_name, PodRecord, PodSpec};
use crate::run::Runtime;
use crate::size::VmSize;
use crate::spec::ProcessOptions;
use hull_net::NetworkMode;

/// A pod's state, from its containers'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodStatus {
    /// `running` while any container runs, `exited` once all have run and
    /// stopped, `created` before the first start.
    pub state: &'static str,
    pub running: usize,
    pub containers: usize,
}

/// What `create_pod` is given besides the pod file.
#[derive(Debug, Clone, Default)]
pub struct PodOptions {
    /// Where the pod's name and its containers' names are unique.
    pub namespace: Option<String>,
    /// The network its VM joins (by name or id until created).
    pub network: NetworkMode,
    /// What the caller settled for each container, in the pod file's
    /// order; a container without an entry gets the defaults.
    pub members: Vec<MemberOptions>,
}

/// What the caller settled for one of a pod's containers.
#[derive(Debug, Clone, Default)]
pub struct MemberOptions {
    /// The image, when the caller resolved the file's name itself.
    pub image_id: Option<String>,
    /// Its share of the pod's VM, as a container's size is counted.
    pub size: Option<VmSize>,
    /// Labels over the pod's own.
    pub labels: BTreeMap<String, String>,
}

impl<H: Hypervisor> Containers<H> {
    /// Every pod, newest first.
    pub fn pods(&self) -> Vec<Arc<PodRecord>> {
        self.pods.list()
    }

    /// A pod by id, name or unique id prefix; a namespace's by its
    /// qualified name (`acme/app`).
    pub fn pod(&self, reference: &str) -> Result<Arc<PodRecord>, ContainerError> {
        Ok(self.pods.get(reference)?)
    }

    /// As [`Containers::pod`], among only the pods `visible` accepts.
    pub fn pod_visible(
        &self,
        reference: &str,
        visible: impl Fn(&PodRecord) -> bool,
    ) -> Result<Arc<PodRecord>, ContainerError> {
        Ok(self.pods.get_visible(reference, visible)?)
    }

    /// The pod's containers, in its file's order.
    pub fn pod_members(&self, pod: &PodRecord) -> Vec<Arc<Container>> {
        pod.members
            .iter()
            .filter_map(|id| self.get(id).ok())
            .collect()
    }

    pub fn pod_status(&self, pod: &PodRecord) -> PodStatus {
        let members = self.pod_members(pod);
        let running = members.iter().filter(|c| c.state().running()).count();
        let started = members.iter().any(|c| {
            let state = c.state();
            state.started_at.is_some() || state.running()
        });
        let state = match (running, started) {
            (0, false) => "created",
            (0, true) => "exited",
            _ => "running",
        };
        PodStatus {
            state,
            running,
            containers: members.len(),
        }
    }

    /// Creates a pod's containers (named `<pod>.<container>`), its address
    /// on its network, and its record, in that order: a crash before the
    /// record leaves containers and an address that the next hulld rolls
    /// back.
    pub async fn create_pod(
        &self,
        spec: PodSpec,
        options: PodOptions,
    ) -> Result<Arc<PodRecord>, ContainerError> {
        let namespace = options.namespace;
        self.pods.check_name(namespace.as_deref(), &spec.name)?;
        let network = match options.network {
            NetworkMode::Network(reference) => {
                NetworkMode::Network(self.networks.get(&reference)?.id)
            }
            other => other,
        };
        let id = crate::run::new_container_id();
        let mut members: Vec<Arc<Container>> = Vec::new();
        let mut created = Ok(());
        for (index, member) in spec.containers.iter().enumerate() {
            let settled = options.members.get(index).cloned().unwrap_or_default();
            let mut labels = spec.labels.clone();
            labels.extend(settled.labels);
            labels.insert("sh.hull.pod".into(), spec.name.clone());
            labels.insert("sh.hull.pod.container".into(), member.name.clone());
            let options = CreateOptions {
                name: Some(member_name(&spec.name, &member.name)),
                namespace: namespace.clone(),
                image: member.image.clone(),
                image_id: settled.image_id,
                size: settled.size,
                network: network.clone(),
                process: ProcessOptions {
                    cmd: member.args.clone().unwrap_or_default(),
                    entrypoint: member.command.clone(),
                    env: member.env.clone(),
                    workdir: member.working_dir.clone(),
                    user: None,
                    tty: member.tty,
                    rlimits: Vec::new(),
                    groups: Vec::new(),
                },
                hostname: Some(spec.hostname.clone()),
                open_stdin: member.stdin,
                labels,
                restart: spec.restart,
                pod: Some(PodMembership {
                    pod: id.clone(),
                    index,
                    mounts: member
                        .mounts
                        .iter()
                        .map(|m| hull_proto::MountSpec {
                            source: hull_proto::MountSource::SharedDir {
                                name: m.volume.clone(),
                            },
                            target: m.path.clone(),
                            read_only: m.read_only,
                            copy_up: false,
                        })
                        .collect(),
                }),
                ..CreateOptions::default()
            };
            match self.create(options).await {
                Ok(container) => members.push(container),
                Err(err) => {
                    created = Err(err);
                    break;
                }
            }
        }
        let record = created
            .and_then(|()| self.connect_pod(&id, &spec, &network, &members))
            .and_then(|()| {
                Ok(self.pods.insert(PodRecord {
                    id: id.clone(),
                    created: std::time::SystemTime::now(),
                    spec,
                    members: members.iter().map(|c| c.id.clone()).collect(),
                    namespace,
                    network,
                })?)
            });
        if record.is_err() {
            self.networks.forget(&id);
            for member in &members {
                self.remove_now(member);
            }
        }
        let record = record?;
        info!(pod = %record.qualified_name(), id = %record.id, "pod created");
        Ok(record)
    }

    /// Gives the pod its one address on a user-defined network, under its
    /// name, its containers' names answering to it too.
    fn connect_pod(
        &self,
        id: &str,
        spec: &PodSpec,
        network: &NetworkMode,
        members: &[Arc<Container>],
    ) -> Result<(), ContainerError> {
        let NetworkMode::Network(network) = network else {
            return Ok(());
        };
        let aliases = members.iter().map(|c| c.name()).collect();
        self.networks
            .connect(network, id, &spec.name, aliases, None, false)?;
        Ok(())
    }

    /// Starts every container of the pod that is not running; the first
    /// boots its VM. Returns the first failure, after trying them all.
    pub async fn start_pod(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        pod: &PodRecord,
    ) -> Result<(), ContainerError> {
        let mut result = Ok(());
        for member in self.pod_members(pod) {
            if let Err(err) = self.start(runtime, &member).await {
                warn!(pod = %pod.name(), container = %member.name(), error = %err, "cannot start a pod's container");
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
        result
    }

    /// Stops every container of the pod at once; the VM powers off after
    /// the last.
    pub async fn stop_pod(&self, pod: &PodRecord, timeout: Option<u32>) {
        let members = self.pod_members(pod);
        let stops = members.iter().map(|member| self.stop(member, timeout));
        for (member, stopped) in members
            .iter()
            .zip(futures_util::future::join_all(stops).await)
        {
            if let Err(err) = stopped {
                warn!(pod = %pod.name(), container = %member.name(), error = %err, "cannot stop a pod's container");
            }
        }
        self.settle_pod(&pod.id).await;
    }

    /// Removes the pod and its containers; running ones are killed first
    /// when `force`, refused otherwise.
    pub async fn remove_pod(&self, pod: &PodRecord, force: bool) -> Result<(), ContainerError> {
        let members = self.pod_members(pod);
        if members.iter().any(|c| c.state().running()) {
            if !force {
                return Err(ContainerError::PodRunning(pod.name().to_owned()));
            }
            self.stop_pod(pod, Some(0)).await;
        }
        for member in &members {
            self.remove_unchecked(member, true).await?;
        }
        self.networks.forget(&pod.id);
        self.pods.remove(&pod.id);
        lock(&self.pod_vms).remove(&pod.id);
        info!(pod = %pod.qualified_name(), "pod removed");
        Ok(())
    }

    /// The pods one of whose containers is recorded as running: their
    /// taps and published ports outlive a restart of hulld.
    pub(super) fn running_pods(&self) -> Vec<Arc<PodRecord>> {
        self.pods
            .list()
            .into_iter()
            .filter(|pod| {
                self.pod_members(pod)
                    .iter()
                    .any(|c| c.state().status == super::Status::Running)
            })
            .collect()
    }

    /// Every pod's id: the keys of their addresses on networks.
    pub(super) fn pod_ids(&self) -> Vec<String> {
        self.pods.list().into_iter().map(|p| p.id.clone()).collect()
    }
}
