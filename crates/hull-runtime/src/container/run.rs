//! Starting a container in a VM of its own, and watching it until the VM is
//! gone: logs, attached clients, restart policies, removal at exit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hull_net::NetworkMode;
use hull_proto::{
    ContainerSpec, ExitStatus, ProcessSpec, ProcessState, Request, Response, RootfsSpec,
};
use hull_vm::{DiskConfig, Hypervisor, NetBackend, Vm};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::supervise::{Run, Sandbox, Stdio};
use super::{lock, Container, ContainerError, Containers, Status, StreamIds, WRITABLE_DISK};
use crate::agent::{AgentClient, AgentError};
use crate::prime::Prime;
use crate::run::{
    start_process, unless_vm_dies, RunDir, RunError, Runtime, ROOTFS_SERIAL, STDERR, STDIN, STDOUT,
};
use crate::start::{StartedVm, VmNeeds};

pub(super) const WRITABLE_SERIAL: &str = "hull-writable";

/// How long a re-attached agent may take to answer.
pub(super) const REATTACH_TIMEOUT: Duration = Duration::from_secs(10);

type Launch<'a> = Pin<Box<dyn Future<Output = Result<(), ContainerError>> + Send + 'a>>;

impl<H: Hypervisor> Containers<H> {
    /// Starts a created or stopped container. Returns false if it was running.
    pub async fn start(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
    ) -> Result<bool, ContainerError> {
        let _op = container.ops.lock().await;
        if container.state().running() {
            return Ok(false);
        }
        container.update(|s| s.stopped_by_user = false);
        let launched = self.launch(runtime, container).await;
        if launched.is_err() && container.config().auto_remove {
            // Nothing will ever run in it: docker removes it too.
            self.remove_now(container);
        }
        launched.map(|()| true)
    }

    /// Stops the container if it runs, then starts it.
    pub async fn restart(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        timeout: Option<u32>,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        self.stop_locked(container, timeout).await?;
        container.update(|s| s.stopped_by_user = false);
        self.launch(runtime, container).await?;
        self.emit(container, "restart", &[]);
        Ok(())
    }

    /// Containers recorded as running that no VM of this hulld runs: those
    /// of an earlier hulld, until `reattach_all` finds them.
    pub fn orphans(&self) -> Vec<Arc<Container>> {
        self.list()
            .into_iter()
            .filter(|c| c.state().running() && lock(&c.run).is_none())
            .collect()
    }

    /// Boots the container's VM and starts its process. Boxed: a restart
    /// launches from inside the supervisor that a launch spawned.
    pub(super) fn launch<'a>(
        self: &'a Arc<Self>,
        runtime: &'a Arc<Runtime<H>>,
        container: &'a Arc<Container>,
    ) -> Launch<'a> {
        Box::pin(async move {
            match self.try_launch(runtime, container).await {
                Ok(()) => Ok(()),
                Err(err) => {
                    let code = match &err {
                        ContainerError::Run(run) => run.exit_code(),
                        _ => 125,
                    };
                    let message = crate::error_chain(&err);
                    container.update(|s| {
                        if s.status == Status::Restarting {
                            s.status = Status::Exited;
                        }
                        s.exit_code = code;
                        s.error = message;
                    });
                    Err(err)
                }
            }
        })
    }

    async fn try_launch(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
    ) -> Result<(), ContainerError> {
        let config = container.config();
        if let Some(membership) = &config.pod {
            return self.launch_member(runtime, container, membership).await;
        }
        self.vms_gone(container).await;
        let id = container.id.clone();
        // Before any VM: a linked container that is not running fails the start.
        let linked = self.link_views(container)?;
        let (mut disks, prime) = self.container_disks(container).await?;
        let (mounts, binds) = self.volume_mounts(container, &mut disks)?;
        let (backend, mut network, ports) = match &config.network {
            NetworkMode::None => (NetBackend::Isolated, None, Vec::new()),
            NetworkMode::User => {
                let ports = hull_net::assign_host_ports(&config.ports)?;
                let (backend, spec) = hull_net::user_network(&ports);
                (backend, Some(spec), ports)
            }
            NetworkMode::Network(network) => {
                let ports = hull_net::assign_host_ports(&config.ports)?;
                let attachment = self.networks.attach(network, &id, &ports)?;
                (attachment.backend, Some(attachment.spec), ports)
            }
        };
        if let (Some(spec), Some(mac)) = (network.as_mut(), config.mac_address()) {
            if let Some(interface) = spec.interfaces.first_mut() {
                interface.mac = mac.to_owned();
            }
        }
        // Until the run is handed to its supervisor, an error must take the
        // container's tap and port rules down again.
        // Secondary networks' taps too.
        let attached = DetachUnlessReleased {
            networks: &self.networks,
            container_id: Some(id.clone()),
        };
        let StartedVm {
            vm, agent, run_dir, ..
        } = runtime
            .vms
            .start_with(
                &vm_name(&id),
                disks,
                true,
                VmNeeds {
                    size: config.size,
                    network: backend,
                    prime: Some(prime),
                },
            )
            .await?;
        // Detached VMs outlive their handle: until the run is handed to its
        // supervisor, an error must stop the VM explicitly.
        let vm = KillUnlessReleased(Some(vm));
        let exit = vm.get().exit();
        super::volumes::bind_into_share(&run_dir.path, &id, &binds)?;
        let size = config.size.unwrap_or(runtime.vms.default_size);
        let limited = crate::run::apply_limits(vm.get(), &agent, size, config.limits);
        unless_vm_dies(vm.get(), exit.clone(), limited).await?;
        // Sent without a network too: the container's /etc/hosts takes
        // its extra hosts.
        let mut spec = network.unwrap_or_default();
        let ip_address = spec.interfaces.first().map_or_else(String::new, |i| {
            i.address.split('/').next().unwrap_or_default().to_owned()
        });
        spec.hosts = super::links::etc_hosts(&config.extra_hosts, &spec, linked.hosts);
        // Off user-defined networks, names come from the first one joined
        // besides, whose resolver answers for all of the container's.
        if !matches!(config.network, NetworkMode::Network(_)) {
            if let Some(network) = self.secondary_networks(&id).first() {
                spec.dns.insert(0, network.gateway.to_string());
            }
        }
        let configure = Request::ConfigureNetwork(spec);
        unless_vm_dies(vm.get(), exit.clone(), agent.request_done(&configure)).await?;
        // Before the process, which finds all its networks up.
        let secondary =
            async { Ok::<_, RunError>(self.plug_secondary(vm.get(), &agent, &id).await) };
        let plugged = unless_vm_dies(vm.get(), exit.clone(), secondary).await??;
        let create = Request::CreateContainer(ContainerSpec {
            id: id.clone(),
            hostname: config.hostname.clone(),
            rootfs: RootfsSpec {
                serial: ROOTFS_SERIAL.into(),
                fs_type: "erofs".into(),
            },
            writable: config.persistent.then(|| RootfsSpec {
                serial: WRITABLE_SERIAL.into(),
                fs_type: "ext4".into(),
            }),
            mounts,
            host_etc_files: Vec::new(),
        });
        unless_vm_dies(vm.get(), exit.clone(), agent.request_done(&create)).await?;

        let streams = StreamIds {
            stdin: config.open_stdin.then_some(STDIN),
            stdout: STDOUT,
            stderr: (!config.process.tty).then_some(STDERR),
        };
        let (pid, exited, stdio) =
            start_main_process(vm.get(), &agent, container, streams, linked.env.clone()).await?;
        debug!(container = %id, pid, "container process started");
        let run = Run {
            sandbox: Sandbox::Own {
                vm: vm.release(),
                run_dir,
            },
            agent,
            exited,
        };
        container.update(|s| {
            s.streams = None;
            s.ports = ports;
            s.ip_address = ip_address;
            s.plugged = plugged;
            s.link_env = linked.env;
        });
        attached.release();
        self.watch_run(runtime, container, run, stdio, pid, true)
    }

    /// Takes back the VMs of containers that were running when the previous
    /// hulld stopped; a container whose VM is gone is marked exited, and
    /// started again if its restart policy says so.
    pub async fn reattach_all(self: &Arc<Self>, runtime: &Arc<Runtime<H>>) {
        self.reattach_pods(runtime).await;
        for container in self.list() {
            let state = container.state();
            if !state.running()
                || lock(&container.run).is_some()
                || container.config().pod.is_some()
            {
                continue;
            }
            let _op = container.ops.lock().await;
            let reattached = if state.status == Status::Running {
                self.reattach(runtime, &container).await
            } else {
                Err(ContainerError::Interrupted)
            };
            match reattached {
                Ok(()) => info!(container = %container.id, "re-attached to its VM"),
                Err(err) => {
                    let message = format!("{}: {}", super::INTERRUPTED, crate::error_chain(&err));
                    warn!(container = %container.id, error = %message, "cannot re-attach");
                    self.interrupted_exit(runtime, &container, message);
                }
            }
        }
    }

    /// Records that a container's VM was lost with hulld, and restarts it
    /// if its policy says so.
    pub(super) fn interrupted_exit(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        message: String,
    ) {
        if container.config().pod.is_none() {
            crate::run::remove_vm_dir(&runtime.vms.run_root.join(vm_name(&container.id)));
            self.networks.detach(&container.id);
        }
        if container.record_lost(message) {
            let (containers, runtime, container) =
                (self.clone(), runtime.clone(), container.clone());
            tokio::spawn(async move {
                info!(container = %container.id, "starting again by its restart policy");
                if let Err(err) = containers.start(&runtime, &container).await {
                    warn!(container = %container.id, error = %err, "cannot start the container again");
                }
            });
        }
    }

    async fn reattach(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
    ) -> Result<(), ContainerError> {
        let id = container.id.clone();
        let name = vm_name(&id);
        let path = runtime.vms.run_root.join(&name);
        let (vm, agent) = adopt(runtime, &name, &path).await?;
        if container.state().paused {
            container.update(|s| s.paused = false);
        }
        let tty = container.config().process.tty;
        let exited = agent.watch_exit(&id, "init");
        let stdout = agent.open_output(STDOUT);
        let stderr = (!tty).then(|| agent.open_output(STDERR));
        let processes = processes_after_reattach(&agent).await?;
        let init = processes
            .into_iter()
            .find(|p| p.container == id && p.process == "init")
            .ok_or(ContainerError::ProcessLost)?;
        let size = container.config().size.unwrap_or(runtime.vms.default_size);
        let run_dir = RunDir::adopt(path, runtime.vms.count_adopted(size));
        let (exited, outputs, stdin) = match init.exited {
            // It ended while no hulld listened: its output is over too.
            Some(status) => {
                let (tx, rx) = oneshot::channel();
                let _ = tx.send(status);
                (rx, None, None)
            }
            None => (
                exited,
                Some((stdout, stderr)),
                init.stdin.map(|stream| agent.open_input(stream)),
            ),
        };
        let run = Run {
            sandbox: Sandbox::Own {
                vm: vm.release(),
                run_dir,
            },
            agent,
            exited,
        };
        let stdio = Stdio { outputs, stdin };
        self.watch_run(runtime, container, run, stdio, init.pid, false)
    }
}

impl<H: Hypervisor> Containers<H> {
    /// Waits until the VMs that still hold the container's disks are gone:
    /// that of its own last run, and those of other containers, done with
    /// the volumes it mounts, that are still powering off.
    async fn vms_gone(&self, container: &Container) {
        container.vm_gone().await;
        for mount in &container.config().volumes {
            if let Some(name) = mount.source.volume_name() {
                self.volume_users_gone(name).await;
            }
        }
    }

    /// Waits until the VMs of the volume's users whose process has exited
    /// are gone.
    pub(super) async fn volume_users_gone(&self, volume: &str) {
        for user in self.volume_users(volume) {
            if user.state().status != Status::Running {
                user.vm_gone().await;
            }
        }
    }
}

/// A detached VM, killed if dropped before it is released to a supervisor.
pub(super) struct KillUnlessReleased<V: Vm>(pub Option<V>);

impl<V: Vm> KillUnlessReleased<V> {
    pub fn get(&self) -> &V {
        self.0.as_ref().expect("not yet released")
    }

    pub fn release(mut self) -> V {
        self.0.take().expect("released once")
    }
}

impl<V: Vm> Drop for KillUnlessReleased<V> {
    fn drop(&mut self) {
        if let Some(vm) = &self.0 {
            vm.kill();
        }
    }
}

impl<H: Hypervisor> Containers<H> {
    /// The disks of a container's own filesystem: its image's rootfs and,
    /// when it keeps one, its writable disk; beside them, what an image
    /// template of its image holds (see [`Self::image_prime`]).
    pub(super) async fn container_disks(
        &self,
        container: &Container,
    ) -> Result<(Vec<DiskConfig>, Prime), ContainerError> {
        let config = container.config();
        let prime = self.image_prime(&config.image_id).await?;
        let mut disks = vec![prime.disk()];
        if config.persistent {
            disks.push(DiskConfig {
                id: "writable".into(),
                path: container.dir.join(WRITABLE_DISK),
                serial: WRITABLE_SERIAL.into(),
                read_only: false,
            });
        }
        Ok((disks, prime))
    }

    /// The erofs rootfs of the image, built if it is not yet, and the
    /// image's own program: what an image template of it holds, never a
    /// container's (a template serves every container of the image).
    pub(super) async fn image_prime(&self, image_id: &str) -> Result<Prime, ContainerError> {
        let images = self.images.clone();
        let image_id = image_id.to_owned();
        let prime = tokio::task::spawn_blocking(move || {
            let image = images.resolve(&image_id)?;
            let rootfs = images.rootfs(&image)?;
            Ok::<_, hull_image::StoreError>(Prime::for_image(rootfs, &image.config))
        })
        .await
        .expect("image tasks do not panic")?;
        Ok(prime)
    }
}

/// Starts the container's main process (`init`) in `vm` on `streams`,
/// listening on them before it runs, with its links' variables before its
/// own; returns its pid, its exit and its stdio.
pub(super) async fn start_main_process<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    container: &Container,
    streams: StreamIds,
    link_env: Vec<String>,
) -> Result<(i32, oneshot::Receiver<ExitStatus>, Stdio), ContainerError> {
    let config = container.config();
    let process = &config.process;
    let spec = ProcessSpec {
        container: container.id.clone(),
        id: "init".into(),
        args: process.args.clone(),
        env: super::links::merge_env(link_env, &process.env),
        cwd: process.cwd.clone(),
        user: process.user.clone(),
        terminal: process.tty,
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
        rlimits: process.rlimits.clone(),
        groups: process.groups.clone(),
        terminal_size: None,
    };
    let exited = agent.watch_exit(&container.id, "init");
    let stdio = Stdio {
        outputs: Some((
            agent.open_output(streams.stdout),
            streams.stderr.map(|stream| agent.open_output(stream)),
        )),
        stdin: streams.stdin.map(|stream| agent.open_input(stream)),
    };
    let pid = unless_vm_dies(vm, vm.exit(), start_process(agent, spec)).await?;
    Ok((pid, exited, stdio))
}

/// Takes back the detached VM `name` of an earlier hulld and reconnects to
/// its agent; the VM is killed if dropped before it is released.
pub(super) async fn adopt<H: Hypervisor>(
    runtime: &Runtime<H>,
    name: &str,
    path: &std::path::Path,
) -> Result<(KillUnlessReleased<H::Vm>, AgentClient), ContainerError> {
    let mut vm = runtime
        .vms
        .hypervisor
        .adopt(name, path)
        .await
        .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
    // A VM paused under the hulld before goes on: its agent must answer,
    // and its record's pause is cleared with it.
    if let Err(err) = vm.set_running(true).await {
        tracing::warn!(vm = %name, error = %err, "cannot resume an adopted VM");
    }
    let control = vm
        .take_control_channel()
        .expect("an adopted VM has its channel");
    let vm = KillUnlessReleased(Some(vm));
    match tokio::time::timeout(REATTACH_TIMEOUT, AgentClient::reconnect(name, control)).await {
        Ok(agent) => Ok((vm, agent?)),
        Err(_) => Err(ContainerError::AgentSilent),
    }
}

/// Asks a reconnected agent for its processes, which resumes their output:
/// the caller listens on their streams first.
pub(super) async fn processes_after_reattach(
    agent: &AgentClient,
) -> Result<Vec<ProcessState>, ContainerError> {
    let listed = tokio::time::timeout(REATTACH_TIMEOUT, agent.request(&Request::Reattach)).await;
    match listed {
        Ok(Ok(Response::Reattached(processes))) => Ok(processes),
        Ok(Ok(other)) => Err(AgentError::UnexpectedResponse(other).into()),
        Ok(Err(err)) => Err(err.into()),
        Err(_) => Err(ContainerError::AgentSilent),
    }
}

/// The directory name of a container's VM: short, because QEMU's sockets
/// live in it and socket paths are limited to 108 bytes.
pub fn vm_name(container: &str) -> String {
    format!(
        "{}{}",
        super::DETACHED_VM_PREFIX,
        &container[..16.min(container.len())]
    )
}

/// Takes a container's tap and port rules down when dropped, unless
/// released: a start that fails part-way leaves nothing behind.
pub(super) struct DetachUnlessReleased<'a> {
    pub networks: &'a hull_net::Networks,
    /// The key of its address: a container's id, or a pod's.
    pub container_id: Option<String>,
}

impl DetachUnlessReleased<'_> {
    pub fn release(mut self) {
        self.container_id = None;
    }
}

impl Drop for DetachUnlessReleased<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.container_id.take() {
            self.networks.detach(&id);
        }
    }
}
