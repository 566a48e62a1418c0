//! Watching a container's run until its VM is gone: output to the log
//! and attached clients, the exit recorded, the VM powered off (halted
//! when the guest does not answer), and the restart policy applied.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hull_proto::{ExitStatus, Request};
use hull_vm::{Hypervisor, Vm, VmExit};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::attach::StdinMessage;
use super::logs::{LogStream, LogWriter};
use super::pod::PodVm;
use super::{lock, Container, ContainerError, Containers, Status};
use crate::agent::{AgentClient, AgentError, InputStream, OutputStream};
use crate::halt::halt;
use crate::run::{wait_exit, RunDir, RunError, Runtime};

/// How long the guest gets to sync its disks and power off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long output may trail the exit event (it normally precedes it).
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);
/// Restart delays double from this, as docker's do, up to `MAX_RESTART_DELAY`.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// A run this long resets the restart delay.
const STABLE_RUN: Duration = Duration::from_secs(10);

impl<H: Hypervisor> Containers<H> {
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
        let log = LogWriter::open(
            &container.log_path(),
            container.config().log,
            container.log.clone(),
        )?;
        let kill = CancellationToken::new();
        let (vm_requests, vm_request_rx) = match run.sandbox {
            Sandbox::Own { .. } => {
                let (sender, receiver) = tokio::sync::mpsc::channel(1);
                (Some(sender), Some(receiver))
            }
            Sandbox::Pod(_) => (None, None),
        };
        *lock(&container.run) = Some(RunHandle {
            agent: run.agent.clone(),
            kill: kill.clone(),
            vm_requests,
        });
        let own_vm = matches!(run.sandbox, Sandbox::Own { .. });
        container.changes.send_modify(|s| s.vm_up = own_vm);
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
        let health = self.watch_health(container, fresh);
        let pump = tokio::spawn(pump_output(container.clone(), log, stdio.outputs));
        let stdin_pump = stdio
            .stdin
            .map(|input| tokio::spawn(pump_stdin(container.clone(), input)));
        let watched = Watched {
            run,
            pump,
            stdin_pump,
            kill,
            vm_request_rx,
            health,
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
            mut vm_request_rx,
            health,
        } = run;
        let started = std::time::Instant::now();
        let vm = sandbox.vm();
        let mut vm_exit = vm.exit();
        let mut exited = std::pin::pin!(exited);
        let (code, error) = loop {
            let memory_request = async {
                match &mut vm_request_rx {
                    Some(requests) => requests.recv().await,
                    None => std::future::pending().await,
                }
            };
            break tokio::select! {
                status = &mut exited => match status {
                    Ok(status) => (status.code(), String::new()),
                    Err(_) => match agent.lost() {
                        // The guest broke the protocol: its console is its own to fill.
                        lost @ AgentError::Closed { .. } => (255, lost.to_string()),
                        _ => (255, format!("the connection to the VM's agent was lost; its console ends with:\n{}", vm.console_tail())),
                    },
                },
                code = wait_exit(&mut vm_exit) => (255, format!("the VM stopped unexpectedly ({code}); its console ends with:\n{}", vm.console_tail())),
                () = kill.cancelled() => {
                    // The guest ignores even SIGKILL, or does not answer at
                    // all: its VM (a pod's too) goes.
                    halt(vm).await;
                    (137, "the VM did not answer and was killed".to_owned())
                }
                Some(request) = memory_request => {
                    match request {
                        VmRequest::GuestMemory { bytes, done } => {
                            let result = vm
                                .set_guest_memory(bytes)
                                .await
                                .map_err(|e| RunError::GuestMemory(Box::new(e)));
                            let _ = done.send(result);
                        }
                        VmRequest::Running { running, done } => {
                            let result = vm
                                .set_running(running)
                                .await
                                .map_err(|e| RunError::Freeze(Box::new(e)));
                            let _ = done.send(result);
                        }
                        VmRequest::Nic { slot, tap, done } => {
                            let result = match &tap {
                                Some(tap) => vm.plug_nic(slot, tap).await,
                                None => vm.unplug_nic(slot).await,
                            };
                            let _ = done.send(result.map_err(|e| RunError::Nic(Box::new(e))));
                        }
                    }
                    continue;
                }
            };
        };
        // Requests for the VM that came too late are answered now (their
        // senders see it closed), not after the teardown: a caller holding
        // the container's lock waits for the answer, and the teardown for
        // that lock.
        drop(vm_request_rx);
        // Probes end with the process, before the VM goes.
        drop(health);
        if tokio::time::timeout(OUTPUT_DRAIN, pump).await.is_err() {
            warn!(container = %container.id, "the container's output did not end with its process");
        }
        if let Some(stdin_pump) = stdin_pump {
            stdin_pump.abort();
        }
        // The exit is recorded as soon as the process is gone, as docker
        // records it: waiters and inspect see it while the VM powers off.
        // A container with volumes is exited once their disks are flushed
        // to the host: its exit promises its volumes' data.
        let config = container.config();
        let has_volumes = config
            .volumes
            .iter()
            .any(|m| m.source.volume_name().is_some());
        let mut exit = Some((code, error));
        let mut restart = false;
        if !has_volumes {
            let (code, error) = exit.take().expect("not yet recorded");
            restart = self.record_exit(&container, &config, code, error);
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
        container.changes.send_modify(|s| s.vm_up = false);
        if let Some((code, error)) = exit {
            restart = self.record_exit(&container, &config, code, error);
        }
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

    /// Records an exit; returns whether the restart policy starts the
    /// container again.
    fn record_exit(
        &self,
        container: &Container,
        config: &super::ContainerConfig,
        code: i32,
        error: String,
    ) -> bool {
        let mut restart = false;
        container.update(|s| {
            s.status = Status::Exited;
            s.paused = false;
            s.pid = 0;
            s.ports.clear();
            s.ip_address.clear();
            s.plugged.clear();
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
        self.emit(container, "die", &[("exitCode", code.to_string())]);
        restart
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
    vm_request_rx: Option<tokio::sync::mpsc::Receiver<VmRequest>>,
    /// Stops the run's health checks when dropped.
    health: Option<tokio_util::sync::DropGuard>,
}

/// A change of a running VM, made by the run's supervisor, which owns it:
/// its guest's memory, or whether its vCPUs run.
pub(super) enum VmRequest {
    GuestMemory {
        bytes: u64,
        done: oneshot::Sender<Result<(), RunError>>,
    },
    Running {
        running: bool,
        done: oneshot::Sender<Result<(), RunError>>,
    },
    /// Plugs the tap of that name into spare network device `slot`, or
    /// with `None` unplugs what is there.
    Nic {
        slot: usize,
        tap: Option<String>,
        done: oneshot::Sender<Result<(), RunError>>,
    },
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
    // A guest whose channel is gone (or was closed on it) is not asked.
    if !agent.is_closed() {
        let asked =
            tokio::time::timeout(SHUTDOWN_GRACE, agent.request_done(&Request::Shutdown)).await;
        match asked {
            Ok(Ok(())) => {
                if tokio::time::timeout(SHUTDOWN_GRACE, exit.wait_for(Option::is_some))
                    .await
                    .is_ok()
                {
                    return;
                }
                warn!(vm = vm.id(), "the VM did not power off; stopping it");
            }
            _ => debug!(vm = vm.id(), "the agent did not confirm its shutdown"),
        }
    }
    halt(vm).await;
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
                let _ = input.close().await;
                return;
            }
        }
    }
}

/// How to reach the VM of a running container.
#[derive(Clone)]
pub(super) struct RunHandle {
    pub(super) agent: AgentClient,
    /// Cancelled to stop the VM at once.
    pub(super) kill: CancellationToken,
    /// To the run's supervisor, which owns the VM: its guest's memory, its
    /// pause; `None` in a pod, whose VM is the pod's.
    pub(super) vm_requests: Option<tokio::sync::mpsc::Sender<VmRequest>>,
}

impl RunHandle {
    /// Has the run's supervisor resize the guest's memory. A run that ends
    /// meanwhile drops the request: the next start applies the limits.
    pub(super) async fn set_guest_memory(&self, bytes: u64) -> Result<(), RunError> {
        let Some(vm_requests) = &self.vm_requests else {
            return Ok(());
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let request = VmRequest::GuestMemory { bytes, done };
        if vm_requests.send(request).await.is_err() {
            return Ok(());
        }
        result.await.unwrap_or(Ok(()))
    }
}
