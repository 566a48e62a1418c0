//! Taking back the VMs of pods whose containers ran when the previous
//! hulld stopped.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hull_vm::Hypervisor;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::super::exec::NEXT_STREAM;
use super::super::run::{adopt, processes_after_reattach};
use super::super::supervise::{Run, Sandbox, Stdio};
use super::super::{lock, Container, ContainerError, Containers, Status};
use super::vm::{pod_address, pod_vm_name, PodVm};
use crate::pod::PodRecord;
use crate::run::{RunDir, Runtime};

impl<H: Hypervisor> Containers<H> {
    /// Takes back the VMs of pods whose containers ran when the previous
    /// hulld stopped.
    pub(in crate::container) async fn reattach_pods(self: &Arc<Self>, runtime: &Arc<Runtime<H>>) {
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
                let message = format!(
                    "{}: {}",
                    super::super::INTERRUPTED,
                    crate::error_chain(&err)
                );
                warn!(pod = %pod.name(), error = %message, "cannot re-attach to the pod's VM");
                crate::run::remove_vm_dir(&runtime.vms.run_root.join(pod_vm_name(&pod.id)));
                self.detach_pod(&pod);
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
            address: pod_address(self, pod),
            _run_dir: RunDir::adopt(
                path,
                runtime
                    .vms
                    .count_adopted(pod.spec.size.unwrap_or(runtime.vms.default_size)),
            ),
        });
        self.announce_pod_vm(&pod.id, &pod_vm.vm);
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
                let message = format!(
                    "{}: {}",
                    super::super::INTERRUPTED,
                    ContainerError::ProcessLost
                );
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
