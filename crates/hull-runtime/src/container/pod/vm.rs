//! A pod's VM: booted with the disks of all its containers on the first
//! start, on the pod's network, and powered off after the last stops.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hull_proto::{ContainerSpec, Request, RootfsSpec};
use hull_vm::{DiskConfig, Hypervisor, NetBackend, Vm};
use tracing::{debug, info};

use super::super::exec::NEXT_STREAM;
use super::super::run::{start_main_process, DetachUnlessReleased, KillUnlessReleased};
use super::super::supervise::{power_off, Run, Sandbox};
use super::super::{
    lock, Container, ContainerError, Containers, PodMembership, StreamIds, DETACHED_VM_PREFIX,
    WRITABLE_DISK,
};
use crate::agent::AgentClient;
use crate::pod::PodRecord;
use crate::run::{unless_vm_dies, RunDir, Runtime};
use crate::start::{StartedVm, VmNeeds};
use hull_net::{self as network, NetworkMode, PortBinding};

/// A pod's VM while it runs, shared by its containers' supervisors.
pub(crate) struct PodVm<V> {
    pub vm: V,
    pub agent: AgentClient,
    /// The pod's address, which each of its containers shows as its own.
    pub address: String,
    pub(super) _run_dir: RunDir,
}

/// Where a pod's running VM is kept; its lock orders boot and power-off.
pub(in crate::container) type PodSlot<V> = Arc<tokio::sync::Mutex<Option<Arc<PodVm<V>>>>>;

/// The directory of a pod's VM: detached, as containers' VMs are.
pub fn pod_vm_name(pod: &str) -> String {
    format!("{DETACHED_VM_PREFIX}pod-{}", &pod[..16.min(pod.len())])
}

fn rootfs_serial(index: usize) -> String {
    format!("hull-rootfs-{index}")
}

fn writable_serial(index: usize) -> String {
    format!("hull-rw-{index}")
}

pub(super) fn next_stream() -> u32 {
    NEXT_STREAM.fetch_add(1, Ordering::Relaxed)
}

/// The address a pod's containers show: its own on a user-defined
/// network, QEMU's guest address on the user-mode one.
pub(super) fn pod_address<H: Hypervisor>(containers: &Containers<H>, pod: &PodRecord) -> String {
    match &pod.network {
        NetworkMode::User => network::USER_ADDRESS.to_owned(),
        NetworkMode::None => String::new(),
        NetworkMode::Network(id) => containers
            .networks
            .get(id)
            .ok()
            .and_then(|n| n.endpoints.get(&pod.id).map(|e| e.address.to_string()))
            .unwrap_or_default(),
    }
}

impl<H: Hypervisor> Containers<H> {
    pub(super) fn pod_slot(&self, pod: &str) -> PodSlot<H::Vm> {
        lock(&self.pod_vms)
            .entry(pod.to_owned())
            .or_default()
            .clone()
    }

    /// Starts a pod's container in the pod's VM, booting the VM if it is
    /// not running.
    pub(in crate::container) async fn launch_member(
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
                // A VM that died on its own leaves its tap behind.
                if running_vm.take().is_some() {
                    self.detach_pod(&pod);
                }
                let booted = Arc::new(self.boot_pod(runtime, &pod).await?);
                self.announce_pod_vm(&pod.id, &booted.vm);
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
            start_main_process(&pod_vm.vm, &agent, container, streams, Vec::new()).await?;
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
            s.ip_address = pod_vm.address.clone();
        });
        let run = Run {
            sandbox: Sandbox::Pod(pod_vm),
            agent,
            exited,
        };
        self.watch_run(runtime, container, run, stdio, pid, true)
    }

    /// Tells the pods' VM feed that this pod's VM runs, and later that it
    /// ended. A VM that hulld merely lets go of (at its own exit) has not
    /// ended: that is its witness's to see.
    pub(super) fn announce_pod_vm(self: &Arc<Self>, pod: &str, vm: &H::Vm) {
        self.events.emit_pod_vm(pod, true);
        let mut exit = vm.exit();
        let (containers, pod) = (Arc::downgrade(self), pod.to_owned());
        tokio::spawn(async move {
            if exit.wait_for(Option::is_some).await.is_ok() {
                if let Some(containers) = containers.upgrade() {
                    containers.events.emit_pod_vm(&pod, false);
                }
            }
        });
    }

    /// Whether the pod's VM runs now; one being booted or powered off
    /// this moment counts as running.
    pub fn pod_vm_running(&self, pod: &str) -> bool {
        let Some(slot) = lock(&self.pod_vms).get(pod).cloned() else {
            return false;
        };
        let running = slot
            .try_lock()
            .map(|vm| vm.as_ref().is_some_and(|p| p.vm.exit().borrow().is_none()));
        running.unwrap_or(true)
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
                    path: self.image_prime(&config.image_id).await?.rootfs,
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
        let ports: Vec<PortBinding> = pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().cloned())
            .collect();
        let (backend, network) = self.pod_network(pod, &ports)?;
        // Until the VM is handed over, an error takes the pod's tap down.
        let attached = DetachUnlessReleased {
            networks: &self.networks,
            container_id: matches!(pod.network, NetworkMode::Network(_)).then(|| pod.id.clone()),
        };
        let StartedVm {
            vm, agent, run_dir, ..
        } = runtime
            .vms
            .start_with(
                &pod_vm_name(&pod.id),
                disks,
                true,
                VmNeeds {
                    size: pod.spec.size,
                    network: backend,
                    prime: None,
                },
            )
            .await?;
        let vm = KillUnlessReleased(Some(vm));
        if let Some(network) = network {
            let configure = Request::ConfigureNetwork(network);
            unless_vm_dies(vm.get(), vm.get().exit(), agent.request_done(&configure)).await?;
        }
        for create in &creates {
            let exit = vm.get().exit();
            unless_vm_dies(vm.get(), exit, agent.request_done(create)).await?;
        }
        info!(pod = %pod.qualified_name(), containers = creates.len(), "pod VM ready");
        attached.release();
        Ok(PodVm {
            vm: vm.release(),
            agent,
            address: pod_address(self, pod),
            _run_dir: run_dir,
        })
    }

    /// The pod VM's network device and the guest's settings for it.
    fn pod_network(
        &self,
        pod: &PodRecord,
        ports: &[PortBinding],
    ) -> Result<(NetBackend, Option<hull_proto::NetworkSpec>), ContainerError> {
        Ok(match &pod.network {
            NetworkMode::User => {
                let (backend, spec) = network::user_network(ports);
                (backend, Some(spec))
            }
            NetworkMode::None => (NetBackend::Isolated, None),
            NetworkMode::Network(network) => {
                let attachment = self.networks.attach(network, &pod.id, ports)?;
                (attachment.backend, Some(attachment.spec))
            }
        })
    }

    /// Takes down the pod's tap and port rules, once its VM is gone.
    pub(super) fn detach_pod(&self, pod: &PodRecord) {
        if matches!(pod.network, NetworkMode::Network(_)) {
            self.networks.detach(&pod.id);
        }
    }

    /// Powers the pod's VM off if the container was a pod's last running one.
    pub(in crate::container) async fn settle_pod_of(&self, container: &Container) {
        if let Some(membership) = container.config().pod {
            self.settle_pod(&membership.pod).await;
        }
    }

    /// Powers the pod's VM off if none of its containers runs.
    pub(super) async fn settle_pod(&self, pod: &str) {
        let slot = self.pod_slot(pod);
        let mut running_vm = slot.lock().await;
        let Some(pod_vm) = running_vm.clone() else {
            return;
        };
        let record = self.pods.get(pod).ok();
        let busy = record
            .as_ref()
            .is_some_and(|record| self.pod_members(record).iter().any(|c| c.state().running()));
        if busy {
            return;
        }
        *running_vm = None;
        let mut exit = pod_vm.vm.exit();
        power_off(&pod_vm.vm, &pod_vm.agent, &mut exit).await;
        if let Some(record) = &record {
            self.detach_pod(record);
        }
        info!(pod, "pod VM powered off");
    }
}
