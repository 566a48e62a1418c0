//! Starting a container in a VM of its own, and watching it until the VM is
//! gone: logs, attached clients, restart policies, removal at exit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hull_proto::{
    ContainerSpec, ExitStatus, MountSource, MountSpec, ProcessSpec, ProcessState, Request,
    Response, RootfsSpec,
};
use hull_vm::{DiskConfig, HostShare, Hypervisor, NetBackend, Vm, VmExit};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::attach::StdinMessage;
use super::logs::{LogStream, LogWriter};
use super::pod::PodVm;
use super::{
    lock, Container, ContainerError, Containers, RunHandle, Status, StreamIds, WRITABLE_DISK,
};
use crate::agent::{AgentClient, AgentError, InputStream, OutputStream};
use crate::network::{self, NetworkMode};
use crate::run::{
    remove_dir, start_process, unless_vm_dies, wait_exit, RunDir, RunError, Runtime, ROOTFS_SERIAL,
    STDERR, STDIN, STDOUT,
};
use crate::start::{StartedVm, VmNeeds};
use crate::volume::VolumeSource;

const WRITABLE_SERIAL: &str = "hull-writable";

/// How long a re-attached agent may take to answer.
pub(super) const REATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest gets to sync its disks and power off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long output may trail the exit event (it normally precedes it).
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// Restart delays double from this, as docker's do, up to `MAX_RESTART_DELAY`.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A run this long resets the restart delay.
const STABLE_RUN: Duration = Duration::from_secs(10);

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
    fn launch<'a>(
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
        let id = container.id.clone();
        let mut disks = vec![DiskConfig {
            id: "rootfs".into(),
            path: self.image_rootfs(&config.image_id).await?,
            serial: ROOTFS_SERIAL.into(),
            read_only: true,
        }];
        if config.persistent {
            disks.push(DiskConfig {
                id: "writable".into(),
                path: container.dir.join(WRITABLE_DISK),
                serial: WRITABLE_SERIAL.into(),
                read_only: false,
            });
        }
        let (mounts, shares) = self.volume_mounts(container, &mut disks)?;
        let (backend, network, ports) = match &config.network {
            NetworkMode::None => (NetBackend::Isolated, None, Vec::new()),
            NetworkMode::User => {
                let ports = network::assign_host_ports(&config.ports)?;
                let (backend, spec) = network::user_network(&ports);
                (backend, Some(spec), ports)
            }
            NetworkMode::Network(network) => {
                let ports = network::assign_host_ports(&config.ports)?;
                let attachment = self.networks.attach(network, &id, &ports)?;
                (attachment.backend, Some(attachment.spec), ports)
            }
        };
        // Until the run is handed to its supervisor, an error must take the
        // container's tap and port rules down again.
        let attached = DetachUnlessReleased {
            networks: &self.networks,
            container_id: matches!(config.network, NetworkMode::Network(_)).then(|| id.clone()),
        };
        let StartedVm { vm, agent, run_dir } = runtime
            .vms
            .start_with(
                &vm_name(&id),
                disks,
                true,
                VmNeeds {
                    size: config.size,
                    network: backend,
                    shares,
                },
            )
            .await?;
        // Detached VMs outlive their handle: until the run is handed to its
        // supervisor, an error must stop the VM explicitly.
        let vm = KillUnlessReleased(Some(vm));
        let exit = vm.get().exit();
        let size = config.size.unwrap_or(runtime.vms.default_size);
        let limited = crate::run::apply_limits(vm.get(), &agent, size, config.limits);
        unless_vm_dies(vm.get(), exit.clone(), limited).await?;
        let ip_address = match network {
            Some(spec) => {
                let address = spec.interfaces[0].address.clone();
                let configure = Request::ConfigureNetwork(spec);
                unless_vm_dies(vm.get(), exit.clone(), agent.request_done(&configure)).await?;
                address.split('/').next().unwrap_or_default().to_owned()
            }
            None => String::new(),
        };
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
        let (pid, exited, stdio) = start_main_process(vm.get(), &agent, container, streams).await?;
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
            remove_dir(&runtime.vms.run_root.join(vm_name(&container.id)));
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
        let tty = container.config().process.tty;
        let exited = agent.watch_exit(&id, "init");
        let stdout = agent.open_output(STDOUT);
        let stderr = (!tty).then(|| agent.open_output(STDERR));
        let processes = processes_after_reattach(&agent).await?;
        let init = processes
            .into_iter()
            .find(|p| p.container == id && p.process == "init")
            .ok_or(ContainerError::ProcessLost)?;
        let run_dir = RunDir::adopt(path);
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

    /// Records a started (or re-attached) run and hands it to a supervisor.
    pub(super) fn watch_run(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        run: Run<H::Vm>,
        stdio: Stdio,
        pid: i32,
        fresh: bool,
    ) -> Result<(), ContainerError> {
        let log = LogWriter::open(&container.log_path(), container.log.clone())?;
        let kill = CancellationToken::new();
        let (guest_memory, memory_requests) = match run.sandbox {
            Sandbox::Own { .. } => {
                let (sender, receiver) = tokio::sync::mpsc::channel(1);
                (Some(sender), Some(receiver))
            }
            Sandbox::Pod(_) => (None, None),
        };
        *lock(&container.run) = Some(RunHandle {
            agent: run.agent.clone(),
            kill: kill.clone(),
            guest_memory,
        });
        container.update(|s| {
            s.status = Status::Running;
            s.pid = pid;
            if fresh {
                s.started_at = Some(SystemTime::now());
                s.exit_code = 0;
                s.error.clear();
            }
        });
        if fresh {
            self.emit(container, "start", &[]);
        }
        let pump = tokio::spawn(pump_output(container.clone(), log, stdio.outputs));
        let stdin_pump = stdio
            .stdin
            .map(|input| tokio::spawn(pump_stdin(container.clone(), input)));
        let watched = Watched {
            run,
            pump,
            stdin_pump,
            kill,
            memory_requests,
        };
        tokio::spawn(
            self.clone()
                .supervise(runtime.clone(), container.clone(), watched),
        );
        Ok(())
    }

    /// Waits for the process to exit (or the VM to die), powers the VM off,
    /// records the exit, and restarts or removes the container as configured.
    async fn supervise(
        self: Arc<Self>,
        runtime: Arc<Runtime<H>>,
        container: Arc<Container>,
        run: Watched<H::Vm>,
    ) {
        let Watched {
            run:
                Run {
                    sandbox,
                    agent,
                    exited,
                },
            pump,
            stdin_pump,
            kill,
            mut memory_requests,
        } = run;
        let started = std::time::Instant::now();
        let vm = sandbox.vm();
        let mut vm_exit = vm.exit();
        let mut exited = std::pin::pin!(exited);
        let (code, error) = loop {
            let memory_request = async {
                match &mut memory_requests {
                    Some(requests) => requests.recv().await,
                    None => std::future::pending().await,
                }
            };
            break tokio::select! {
                status = &mut exited => match status {
                    Ok(status) => (status.code(), String::new()),
                    Err(_) => (255, format!("the connection to the VM's agent was lost; its console ends with:\n{}", vm.console_tail())),
                },
                code = wait_exit(&mut vm_exit) => (255, format!("the VM stopped unexpectedly ({code}); its console ends with:\n{}", vm.console_tail())),
                () = kill.cancelled() => {
                    if matches!(sandbox, Sandbox::Pod(_)) {
                        // The guest ignores even SIGKILL: the pod's VM goes.
                        vm.kill();
                    }
                    (137, "the VM did not answer and was killed".to_owned())
                }
                Some(request) = memory_request => {
                    let result = vm
                        .set_guest_memory(request.bytes)
                        .await
                        .map_err(|e| RunError::Hypervisor(Box::new(e)));
                    let _ = request.done.send(result);
                    continue;
                }
            };
        };
        if tokio::time::timeout(OUTPUT_DRAIN, pump).await.is_err() {
            warn!(container = %container.id, "the container's output did not end with its process");
        }
        if let Some(stdin_pump) = stdin_pump {
            stdin_pump.abort();
        }
        let in_pod = match sandbox {
            Sandbox::Own { vm, run_dir } => {
                power_off(&vm, &agent, &mut vm_exit).await;
                self.flush_volumes(&container).await;
                drop(vm);
                drop(run_dir);
                self.networks.detach(&container.id);
                false
            }
            Sandbox::Pod(_) => true,
        };
        *lock(&container.run) = None;

        let config = container.config();
        let mut restart = false;
        container.update(|s| {
            s.status = Status::Exited;
            s.pid = 0;
            s.ports.clear();
            s.ip_address.clear();
            s.exit_code = code;
            s.error = error;
            s.finished_at = Some(SystemTime::now());
            s.exits += 1;
            restart = !config.auto_remove
                && config
                    .restart
                    .restarts(code, s.restart_count, s.stopped_by_user);
            if restart {
                s.status = Status::Restarting;
                s.restart_count += 1;
            }
        });
        LogWriter::close(&container.log);
        info!(container = %container.id, code, restart, "container exited");
        self.emit(&container, "die", &[("exitCode", code.to_string())]);
        if in_pod {
            self.settle_pod_of(&container).await;
        }
        if config.auto_remove {
            let _op = container.ops.lock().await;
            self.remove_now(&container);
            return;
        }
        if !restart {
            return;
        }
        let count = container.state().restart_count;
        let delay = if started.elapsed() >= STABLE_RUN {
            FIRST_RESTART_DELAY
        } else {
            (FIRST_RESTART_DELAY * 2u32.saturating_pow(count.saturating_sub(1).min(16)))
                .min(MAX_RESTART_DELAY)
        };
        tokio::time::sleep(delay).await;
        let _op = container.ops.lock().await;
        let state = container.state();
        if state.status != Status::Restarting
            || state.stopped_by_user
            || container.changes.borrow().removed
        {
            return;
        }
        if let Err(err) = self.launch(&runtime, &container).await {
            warn!(container = %container.id, error = %err, "cannot restart the container");
            self.settle_pod_of(&container).await;
        }
    }
}

impl<H: Hypervisor> Containers<H> {
    /// The disks (added to `disks`), 9p shares and mounts of the
    /// container's volumes. A named volume's disk goes to one VM at a time.
    fn volume_mounts(
        &self,
        container: &Container,
        disks: &mut Vec<DiskConfig>,
    ) -> Result<(Vec<MountSpec>, Vec<HostShare>), ContainerError> {
        let config = container.config();
        let (mut mounts, mut shares) = (Vec::new(), Vec::new());
        for (index, mount) in config.volumes.iter().enumerate() {
            let source = match &mount.source {
                VolumeSource::Volume { name } | VolumeSource::Anonymous { name } => {
                    let busy = self
                        .volume_users(name)
                        .into_iter()
                        .find(|other| other.id != container.id && lock(&other.run).is_some());
                    if let Some(other) = busy {
                        return Err(ContainerError::VolumeBusy {
                            volume: name.clone(),
                            container: other.name(),
                        });
                    }
                    let volume = self.volumes.get(name)?;
                    let serial = super::volumes::volume_serial(index);
                    disks.push(DiskConfig {
                        id: format!("volume{index}"),
                        path: volume.disk,
                        serial: serial.clone(),
                        read_only: false,
                    });
                    MountSource::Disk {
                        serial,
                        fs_type: "ext4".into(),
                    }
                }
                VolumeSource::Bind { path } => {
                    // As `docker run -v` does, a missing host directory is made.
                    std::fs::create_dir_all(path).map_err(|source| ContainerError::Io {
                        what: "create the bind-mounted directory",
                        path: path.clone(),
                        source,
                    })?;
                    let tag = format!("hull9p{index}");
                    shares.push(HostShare {
                        tag: tag.clone(),
                        path: path.clone(),
                        read_only: mount.read_only,
                    });
                    MountSource::HostDir { tag }
                }
            };
            // A new volume starts with the image's files at its target, as
            // docker's do; a host directory is shown as it is.
            let copy_up = matches!(source, MountSource::Disk { .. });
            mounts.push(MountSpec {
                source,
                target: mount.target.clone(),
                read_only: mount.read_only,
                copy_up,
            });
        }
        Ok((mounts, shares))
    }
}

/// Where a container's process runs.
pub(super) enum Sandbox<V> {
    /// A VM of its own, powered off when the process ends.
    Own { vm: V, run_dir: RunDir },
    /// Its pod's VM, powered off when the pod's last process ends.
    Pod(Arc<PodVm<V>>),
}

impl<V> Sandbox<V> {
    fn vm(&self) -> &V {
        match self {
            Self::Own { vm, .. } => vm,
            Self::Pod(pod) => &pod.vm,
        }
    }
}

/// A container's VM with its process started or found running.
pub(super) struct Run<V> {
    pub sandbox: Sandbox<V>,
    pub agent: AgentClient,
    pub exited: oneshot::Receiver<ExitStatus>,
}

/// The process's stdio, as far as it is still open.
pub(super) struct Stdio {
    /// Stdout and stderr; `None` once they have ended.
    pub outputs: Option<(OutputStream, Option<OutputStream>)>,
    pub stdin: Option<InputStream>,
}

/// One run of a container, handed to its supervisor.
struct Watched<V> {
    run: Run<V>,
    pump: JoinHandle<()>,
    stdin_pump: Option<JoinHandle<()>>,
    kill: CancellationToken,
    memory_requests: Option<tokio::sync::mpsc::Receiver<GuestMemoryRequest>>,
}

/// A change of a running VM's guest memory, made by the run's supervisor,
/// which owns the VM.
pub(super) struct GuestMemoryRequest {
    pub bytes: u64,
    pub done: oneshot::Sender<Result<(), RunError>>,
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
    /// The erofs rootfs of the image, built if it is not yet.
    pub(super) async fn image_rootfs(
        &self,
        image_id: &str,
    ) -> Result<std::path::PathBuf, ContainerError> {
        let images = self.images.clone();
        let image_id = image_id.to_owned();
        let rootfs = tokio::task::spawn_blocking(move || {
            let image = images.resolve(&image_id)?;
            images.rootfs(&image)
        })
        .await
        .expect("image tasks do not panic")?;
        Ok(rootfs)
    }
}

/// Starts the container's main process (`init`) in `vm` on `streams`,
/// listening on them before it runs; returns its pid, its exit and its stdio.
pub(super) async fn start_main_process<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    container: &Container,
    streams: StreamIds,
) -> Result<(i32, oneshot::Receiver<ExitStatus>, Stdio), ContainerError> {
    let config = container.config();
    let process = &config.process;
    let spec = ProcessSpec {
        container: container.id.clone(),
        id: "init".into(),
        args: process.args.clone(),
        env: process.env.clone(),
        cwd: process.cwd.clone(),
        user: process.user.clone(),
        terminal: process.tty,
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
        rlimits: process.rlimits.clone(),
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
    let control = vm
        .take_control_channel()
        .expect("an adopted VM has its channel");
    let vm = KillUnlessReleased(Some(vm));
    match tokio::time::timeout(REATTACH_TIMEOUT, AgentClient::reconnect(control)).await {
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
fn vm_name(container: &str) -> String {
    format!(
        "{}{}",
        super::DETACHED_VM_PREFIX,
        &container[..16.min(container.len())]
    )
}

/// Lets the guest sync the writable layer and power off; kills it if it
/// does not in time.
pub(super) async fn power_off<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    exit: &mut tokio::sync::watch::Receiver<Option<VmExit>>,
) {
    if exit.borrow().is_some() {
        return;
    }
    let asked = tokio::time::timeout(SHUTDOWN_GRACE, agent.request_done(&Request::Shutdown)).await;
    if !matches!(asked, Ok(Ok(()))) {
        debug!(vm = vm.id(), "the agent did not confirm its shutdown");
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, exit.wait_for(Option::is_some))
        .await
        .is_err()
    {
        warn!(vm = vm.id(), "the VM did not power off; killing it");
        vm.kill();
        let _ = exit.wait_for(Option::is_some).await;
    }
}

/// Copies the process's output to the log and to attached clients.
async fn pump_output(
    container: Arc<Container>,
    mut log: LogWriter,
    outputs: Option<(OutputStream, Option<OutputStream>)>,
) {
    if let Some((mut stdout, mut stderr)) = outputs {
        let mut stdout_open = true;
        while stdout_open || stderr.is_some() {
            let (stream, chunk) = tokio::select! {
                chunk = stdout.recv(), if stdout_open => (LogStream::Stdout, chunk),
                chunk = async { stderr.as_mut().expect("checked").recv().await }, if stderr.is_some() => (LogStream::Stderr, chunk),
            };
            match chunk {
                Some(bytes) => {
                    log.append(stream, &bytes, SystemTime::now());
                    container.output.publish(stream, &bytes).await;
                }
                None if stream == LogStream::Stdout => stdout_open = false,
                None => stderr = None,
            }
        }
    }
    log.flush(SystemTime::now());
    container.output.close();
}

/// Feeds what attached clients write to the process's stdin.
async fn pump_stdin(container: Arc<Container>, input: InputStream) {
    let Some(pipe) = &container.stdin else {
        return;
    };
    let mut messages = pipe.rx.lock().await;
    while let Some(message) = messages.recv().await {
        match message {
            StdinMessage::Data(bytes) => {
                if input.write(&bytes).await.is_err() {
                    return;
                }
            }
            StdinMessage::Close => {
                let _ = input.close();
                return;
            }
        }
    }
}

/// Takes a container's tap and port rules down when dropped, unless
/// released: a start that fails part-way leaves nothing behind.
struct DetachUnlessReleased<'a> {
    networks: &'a crate::network::Networks,
    container_id: Option<String>,
}

impl DetachUnlessReleased<'_> {
    fn release(mut self) {
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
