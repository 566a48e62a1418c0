//! The containers of a pod in one VM: the VM boots with every container's
//! disks and mounts them all, each container's process starts and stops in
//! it on its own, and the VM powers off once none runs.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hull_proto::{ContainerSpec, Request, RootfsSpec};
use hull_vm::{DiskConfig, Hypervisor, Vm};
use serde::Serialize;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::exec::NEXT_STREAM;
use super::run::{adopt, processes_after_reattach, start_main_process, KillUnlessReleased};
use super::supervise::{power_off, Run, Sandbox, Stdio};
use super::{
    lock, Container, ContainerError, Containers, CreateOptions, PodMembership, Status, StreamIds,
    DETACHED_VM_PREFIX, WRITABLE_DISK,
};
use crate::agent::AgentClient;
use crate::pod::{member_name, PodRecord, PodSpec};
use crate::run::{unless_vm_dies, RunDir, Runtime};
use crate::spec::ProcessOptions;
use crate::start::{StartedVm, VmNeeds};

/// A pod's VM while it runs, shared by its containers' supervisors.
pub(crate) struct PodVm<V> {
    pub vm: V,
    pub agent: AgentClient,
    _run_dir: RunDir,
}

/// Where a pod's running VM is kept; its lock orders boot and power-off.
pub(super) type PodSlot<V> = Arc<tokio::sync::Mutex<Option<Arc<PodVm<V>>>>>;

/// A pod's state, from its containers'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodStatus {
    /// `running` while any container runs, `exited` once all have run and
    /// stopped, `created` before the first start.
    pub state: &'static str,
    pub running: usize,
    pub containers: usize,
}

/// The directory of a pod's VM: detached, as containers' VMs are.
pub(super) fn pod_vm_name(pod: &str) -> String {
    format!("{DETACHED_VM_PREFIX}pod-{}", &pod[..16.min(pod.len())])
}

fn rootfs_serial(index: usize) -> String {
    format!("hull-rootfs-{index}")
}

fn writable_serial(index: usize) -> String {
    format!("hull-rw-{index}")
}

fn next_stream() -> u32 {
    NEXT_STREAM.fetch_add(1, Ordering::Relaxed)
}

impl<H: Hypervisor> Containers<H> {
    /// Every pod, newest first.
    pub fn pods(&self) -> Vec<Arc<PodRecord>> {
        self.pods.list()
    }

    /// A pod by id, name or unique id prefix.
    pub fn pod(&self, reference: &str) -> Result<Arc<PodRecord>, ContainerError> {
        Ok(self.pods.get(reference)?)
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

    /// Creates a pod's containers (named `<pod>.<container>`) and its record.
    pub async fn create_pod(&self, spec: PodSpec) -> Result<Arc<PodRecord>, ContainerError> {
        self.pods.check_name(&spec.name)?;
        let id = crate::run::new_container_id();
        let mut members: Vec<Arc<Container>> = Vec::new();
        let mut created = Ok(());
        for (index, member) in spec.containers.iter().enumerate() {
            let mut labels = spec.labels.clone();
            labels.insert("sh.hull.pod".into(), spec.name.clone());
            labels.insert("sh.hull.pod.container".into(), member.name.clone());
            let options = CreateOptions {
                name: Some(member_name(&spec.name, &member.name)),
                image: member.image.clone(),
                process: ProcessOptions {
                    cmd: member.args.clone().unwrap_or_default(),
                    entrypoint: member.command.clone(),
                    env: member.env.clone(),
                    workdir: member.working_dir.clone(),
                    user: None,
                    tty: member.tty,
                    rlimits: Vec::new(),
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
        let record = created.and_then(|()| {
            Ok(self.pods.insert(PodRecord {
                id: id.clone(),
                created: std::time::SystemTime::now(),
                spec,
                members: members.iter().map(|c| c.id.clone()).collect(),
            })?)
        });
        if record.is_err() {
            for member in &members {
                self.remove_now(member);
            }
        }
        let record = record?;
        info!(pod = %record.name(), id = %record.id, "pod created");
        Ok(record)
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
        self.pods.remove(&pod.id);
        lock(&self.pod_vms).remove(&pod.id);
        info!(pod = %pod.name(), "pod removed");
        Ok(())
    }

    fn pod_slot(&self, pod: &str) -> PodSlot<H::Vm> {
        lock(&self.pod_vms)
            .entry(pod.to_owned())
            .or_default()
            .clone()
    }

    /// Starts a pod's container in the pod's VM, booting the VM if it is
    /// not running.
    pub(super) async fn launch_member(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        membership: &PodMembership,
    ) -> Result<(), ContainerError> {
        let pod = self.pods.get(&membership.pod)?;
        let slot = self.pod_slot(&pod.id);
        // Held until the process runs, so that no power-off takes the VM
        // from under it.
        let mut running_vm = slot.lock().await;
        let pod_vm = match running_vm
            .as_ref()
            .filter(|p| p.vm.exit().borrow().is_none())
        {
            Some(pod_vm) => pod_vm.clone(),
            None => {
                *running_vm = None;
                let booted = Arc::new(self.boot_pod(runtime, &pod).await?);
                *running_vm = Some(booted.clone());
                booted
            }
        };
        let config = container.config();
        let streams = StreamIds {
            stdin: config.open_stdin.then(next_stream),
            stdout: next_stream(),
            stderr: (!config.process.tty).then(next_stream),
        };
        let agent = pod_vm.agent.clone();
        let (pid, exited, stdio) =
            start_main_process(&pod_vm.vm, &agent, container, streams).await?;
        debug!(container = %container.id, pod = %pod.name(), pid, "pod container started");
        let ports = pod
            .spec
            .containers
            .get(membership.index)
            .map(|c| c.ports.clone())
            .unwrap_or_default();
        container.update(|s| {
            s.streams = Some(streams);
            s.ports = ports;
            s.ip_address = hull_net::USER_ADDRESS.to_owned();
        });
        let run = Run {
            sandbox: Sandbox::Pod(pod_vm),
            agent,
            exited,
        };
        self.watch_run(runtime, container, run, stdio, pid, true)
    }

    /// Boots the pod's VM with the disks of all its containers and mounts
    /// each container's rootfs.
    async fn boot_pod(
        &self,
        runtime: &Arc<Runtime<H>>,
        pod: &PodRecord,
    ) -> Result<PodVm<H::Vm>, ContainerError> {
        let members = pod
            .members
            .iter()
            .map(|id| self.get(id))
            .collect::<Result<Vec<_>, _>>()?;
        // Containers of one image share its read-only disk.
        let mut image_disks: BTreeMap<String, usize> = BTreeMap::new();
        let mut disks = Vec::new();
        let mut creates = Vec::new();
        for (index, member) in members.iter().enumerate() {
            let config = member.config();
            let next = image_disks.len();
            let disk = *image_disks.entry(config.image_id.clone()).or_insert(next);
            if disk == next {
                disks.push(DiskConfig {
                    id: format!("rootfs{disk}"),
                    path: self.image_rootfs(&config.image_id).await?,
                    serial: rootfs_serial(disk),
                    read_only: true,
                });
            }
            if config.persistent {
                disks.push(DiskConfig {
                    id: format!("writable{index}"),
                    path: member.dir.join(WRITABLE_DISK),
                    serial: writable_serial(index),
                    read_only: false,
                });
            }
            creates.push(Request::CreateContainer(ContainerSpec {
                id: member.id.clone(),
                hostname: pod.spec.hostname.clone(),
                rootfs: RootfsSpec {
                    serial: rootfs_serial(disk),
                    fs_type: "erofs".into(),
                },
                writable: config.persistent.then(|| RootfsSpec {
                    serial: writable_serial(index),
                    fs_type: "ext4".into(),
                }),
                mounts: config.pod.map(|p| p.mounts).unwrap_or_default(),
                host_etc_files: Vec::new(),
            }));
        }
        let ports: Vec<_> = pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().cloned())
            .collect();
        let (backend, network) = hull_net::user_network(&ports);
        let StartedVm { vm, agent, run_dir } = runtime
            .vms
            .start_with(
                &pod_vm_name(&pod.id),
                disks,
                true,
                VmNeeds {
                    size: pod.spec.size,
                    network: backend,
                    shares: Vec::new(),
                },
            )
            .await?;
        let vm = KillUnlessReleased(Some(vm));
        let configure = Request::ConfigureNetwork(network);
        unless_vm_dies(vm.get(), vm.get().exit(), agent.request_done(&configure)).await?;
        for create in &creates {
            let exit = vm.get().exit();
            unless_vm_dies(vm.get(), exit, agent.request_done(create)).await?;
        }
        info!(pod = %pod.name(), containers = creates.len(), "pod VM ready");
        Ok(PodVm {
            vm: vm.release(),
            agent,
            _run_dir: run_dir,
        })
    }

    /// Powers the pod's VM off if the container was a pod's last running one.
    pub(super) async fn settle_pod_of(&self, container: &Container) {
        if let Some(membership) = container.config().pod {
            self.settle_pod(&membership.pod).await;
        }
    }

    /// Powers the pod's VM off if none of its containers runs.
    async fn settle_pod(&self, pod: &str) {
        let slot = self.pod_slot(pod);
        let mut running_vm = slot.lock().await;
        let Some(pod_vm) = running_vm.clone() else {
            return;
        };
        let busy = self
            .pods
            .get(pod)
            .map(|record| {
                self.pod_members(&record)
                    .iter()
                    .any(|c| c.state().running())
            })
            .unwrap_or(false);
        if busy {
            return;
        }
        *running_vm = None;
        let mut exit = pod_vm.vm.exit();
        power_off(&pod_vm.vm, &pod_vm.agent, &mut exit).await;
        info!(pod, "pod VM powered off");
    }

    /// Takes back the VMs of pods whose containers ran when the previous
    /// hulld stopped.
    pub(super) async fn reattach_pods(self: &Arc<Self>, runtime: &Arc<Runtime<H>>) {
        for pod in self.pods.list() {
            let members = self.pod_members(&pod);
            let orphans: Vec<_> = members
                .iter()
                .filter(|c| c.state().running() && lock(&c.run).is_none())
                .cloned()
                .collect();
            if orphans.is_empty() {
                continue;
            }
            if let Err(err) = self.reattach_pod(runtime, &pod, &orphans).await {
                let message = format!("{}: {}", super::INTERRUPTED, crate::error_chain(&err));
                warn!(pod = %pod.name(), error = %message, "cannot re-attach to the pod's VM");
                crate::run::remove_dir(&runtime.vms.run_root.join(pod_vm_name(&pod.id)));
                for container in &orphans {
                    self.interrupted_exit(runtime, container, message.clone());
                }
            }
            self.settle_pod(&pod.id).await;
        }
    }

    async fn reattach_pod(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        pod: &PodRecord,
        orphans: &[Arc<Container>],
    ) -> Result<(), ContainerError> {
        let slot = self.pod_slot(&pod.id);
        let mut running_vm = slot.lock().await;
        let name = pod_vm_name(&pod.id);
        let path = runtime.vms.run_root.join(&name);
        let (vm, agent) = adopt(runtime, &name, &path).await?;
        // Listen before the agent resumes the output it held back.
        let mut listening = Vec::new();
        for container in orphans {
            let state = container.state();
            let exited = agent.watch_exit(&container.id, "init");
            let outputs = state.streams.map(|streams| {
                (
                    agent.open_output(streams.stdout),
                    streams.stderr.map(|stream| agent.open_output(stream)),
                )
            });
            listening.push((container, state, exited, outputs));
        }
        let processes = processes_after_reattach(&agent).await?;
        // Streams of this hulld must not reuse those the agent still has open.
        let highest = processes
            .iter()
            .flat_map(|p| [p.stdin, Some(p.stdout), p.stderr])
            .flatten()
            .max()
            .unwrap_or(0);
        NEXT_STREAM.fetch_max(highest + 1, Ordering::Relaxed);
        let pod_vm = Arc::new(PodVm {
            vm: vm.release(),
            agent: agent.clone(),
            _run_dir: RunDir::adopt(
                path,
                runtime
                    .vms
                    .count_adopted(pod.spec.size.unwrap_or(runtime.vms.default_size)),
            ),
        });
        *running_vm = Some(pod_vm.clone());
        drop(running_vm);
        for (container, state, exited, outputs) in listening {
            let init = processes
                .iter()
                .find(|p| p.container == container.id && p.process == "init");
            let found = match (state.status, init, outputs) {
                (Status::Running, Some(init), Some(outputs)) => Some((init, outputs)),
                _ => None,
            };
            let Some((init, outputs)) = found else {
                let message = format!("{}: {}", super::INTERRUPTED, ContainerError::ProcessLost);
                self.interrupted_exit(runtime, container, message);
                continue;
            };
            let (exited, outputs, stdin) = match init.exited {
                Some(status) => {
                    let (tx, rx) = oneshot::channel();
                    let _ = tx.send(status);
                    (rx, None, None)
                }
                None => (
                    exited,
                    Some(outputs),
                    init.stdin.map(|stream| agent.open_input(stream)),
                ),
            };
            let run = Run {
                sandbox: Sandbox::Pod(pod_vm.clone()),
                agent: agent.clone(),
                exited,
            };
            let stdio = Stdio { outputs, stdin };
            self.watch_run(runtime, container, run, stdio, init.pid, false)?;
            info!(container = %container.id, pod = %pod.name(), "re-attached to its pod's VM");
        }
        Ok(())
    }
}
