//! The sandbox's containers and processes, driven through the guest agent:
//! what each Task API call does, apart from its wire types (in `task.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::protos::types::mount::Mount;
use hull_proto::{
    ContainerSpec, ErrorKind, GuestStats, ProcessInfo, ProcessSpec, Request, Response, RootfsSpec,
};
use hull_runtime::size::Limits;
use hull_runtime::AgentError;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::binds::{Bind, BindError};
use crate::config::ShimConfig;
use crate::events::{Event, Events};
use crate::resources::{self, ResourceError};
use crate::rootfs::{self, RootfsError};
use crate::sandbox::{Sandbox, SandboxError};
use crate::spec::{process_from_exec_json, ContainerConfig, SpecError};
use crate::state::{agent_process_id, Container, Exited, Process, Stdio};
use crate::stdio::{pump_input, pump_output, CloseInput, StdioError, Target};

mod ending;
mod limits;

/// How long a process's output may still be draining into its FIFOs after
/// it exited before the exit is reported anyway (a reader that left).
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("container {0} does not exist in this sandbox")]
    NoContainer(String),
    #[error("container {container} has no process {exec_id}")]
    NoProcess { container: String, exec_id: String },
    #[error("container {0} exists already")]
    ContainerExists(String),
    #[error("container {container} has a process {exec_id} already")]
    ProcessExists { container: String, exec_id: String },
    #[error("exec id {0:?} is reserved for the container's own process")]
    ReservedExecId(String),
    #[error("process {0} is started already")]
    AlreadyStarted(String),
    #[error("process {0} already finished")]
    Finished(String),
    #[error("container {0} is still running: kill it first")]
    StillRunning(String),
    #[error("the sandbox's VM is not running")]
    NoSandbox,
    #[error("cannot read the container's OCI spec")]
    Spec(#[from] SpecError),
    #[error("cannot prepare the container's rootfs")]
    Rootfs(#[from] RootfsError),
    #[error("cannot share a host directory with the VM")]
    Bind(#[from] BindError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error("{0}")]
    Refused(String),
    #[error("the guest agent answered {0:?} unexpectedly")]
    Unexpected(Box<Response>),
    #[error("cannot size the sandbox's VM")]
    Resources(#[from] ResourceError),
    #[error("cannot update container {id}'s resources")]
    Update {
        id: String,
        #[source]
        source: hull_runtime::size::SizeError,
    },
}

impl ServiceError {
    /// A refusal of the agent, as the error containerd shows its user.
    fn from_sandbox(err: SandboxError) -> Self {
        match err {
            SandboxError::Agent(AgentError::Refused(refusal)) => match refusal.kind {
                ErrorKind::NotFound
                | ErrorKind::InvalidRequest
                | ErrorKind::CommandNotFound
                | ErrorKind::CommandNotExecutable => Self::Refused(refusal.message),
                _ => Self::Sandbox(SandboxError::Agent(AgentError::Refused(refusal))),
            },
            other => Self::Sandbox(other),
        }
    }
}

/// The shim's one sandbox: its VM, booted with the first container, and
/// its containers.
pub struct Service {
    config: ShimConfig,
    namespace: String,
    events: Events,
    sandbox: OnceCell<Arc<Sandbox>>,
    /// The pod's limits (CRI's sandbox annotations), or the lone
    /// container's: what the guest is held to until every workload has
    /// limits of its own.
    pod_limits: std::sync::OnceLock<Limits>,
    pod_hostname: std::sync::OnceLock<String>,
    containers: Mutex<HashMap<String, Container>>,
    next_stream: AtomicU32,
    paused: AtomicBool,
}

/// What containerd's `Create` carries.
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: Stdio,
}

impl Service {
    pub fn new(config: ShimConfig, namespace: String, events: Events) -> Self {
        Self {
            config,
            namespace,
            events,
            sandbox: OnceCell::new(),
            pod_limits: std::sync::OnceLock::new(),
            pod_hostname: std::sync::OnceLock::new(),
            containers: Mutex::new(HashMap::new()),
            // The agent's stream ids are per connection; 0 stays unused.
            next_stream: AtomicU32::new(1),
            paused: AtomicBool::new(false),
        }
    }

    fn containers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Container>> {
        self.containers.lock().expect("container table lock")
    }

    fn sandbox(&self) -> Result<Arc<Sandbox>, ServiceError> {
        self.sandbox.get().cloned().ok_or(ServiceError::NoSandbox)
    }

    fn with_process<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&mut Process, &Path) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let mut containers = self.containers();
        let container = containers
            .get_mut(id)
            .ok_or_else(|| ServiceError::NoContainer(id.to_owned()))?;
        let bundle = container.bundle.clone();
        let process =
            container
                .processes
                .get_mut(exec_id)
                .ok_or_else(|| ServiceError::NoProcess {
                    container: id.to_owned(),
                    exec_id: exec_id.to_owned(),
                })?;
        f(process, &bundle)
    }

    /// Builds the rootfs image, boots the VM if this is its first
    /// container, plugs the image in and has the agent mount it.
    pub async fn create(&self, request: CreateRequest) -> Result<(), ServiceError> {
        if self.containers().contains_key(&request.id) {
            return Err(ServiceError::ContainerExists(request.id));
        }
        let config = ContainerConfig::load(&request.bundle)?;
        if !config.unsupported_mounts.is_empty() {
            warn!(container = %request.id, mounts = ?config.unsupported_mounts, "these mounts cannot be made in the VM yet; skipping them");
        }
        let (dirs, files): (Vec<Bind>, Vec<Bind>) = config
            .binds
            .iter()
            .cloned()
            .partition(|b| b.source.is_dir());
        let image = rootfs::build(&request.bundle, &request.rootfs, &files).await?;
        let sandbox = self
            .sandbox
            .get_or_try_init(|| self.boot_sandbox(&request.id, &config))
            .await?
            .clone();
        if let Err(err) = config.limits.check(sandbox.size()) {
            warn!(container = %request.id, error = %err, "the container's limits exceed the sandbox's VM; it may use all of the VM");
        }
        let disk = sandbox.attach_rootfs(&image).await?;
        // A pod's workloads join its UTS namespace: their specs name no
        // hostname, and they get the pod's, which its first container set.
        let pod_hostname = self
            .pod_hostname
            .get_or_init(|| config.hostname.clone())
            .clone();
        let hostname = match (config.hostname.as_str(), pod_hostname.as_str()) {
            ("", "") => request.id.chars().take(12).collect(),
            ("", pod) => pod.to_owned(),
            (name, _) => name.to_owned(),
        };
        let mounts = match sandbox.share_dirs(&request.id, &dirs) {
            Ok(mounts) => mounts,
            Err(err) => {
                sandbox.forget_container(&request.id, &disk).await;
                return Err(err.into());
            }
        };
        let spec = ContainerSpec {
            id: request.id.clone(),
            hostname,
            rootfs: RootfsSpec {
                serial: disk.serial.clone(),
                fs_type: "erofs".into(),
            },
            writable: None,
            mounts,
            host_etc_files: etc_files(&files),
        };
        let created = sandbox
            .request_done(&Request::CreateContainer(spec))
            .await
            .map_err(ServiceError::from_sandbox);
        if let Err(err) = created {
            sandbox.forget_container(&request.id, &disk).await;
            return Err(err);
        }
        let mut stdio = request.stdio;
        stdio.terminal |= config.process.tty;
        let init = Process::new(config.process, stdio.clone());
        self.containers().insert(
            request.id.clone(),
            Container {
                bundle: request.bundle.clone(),
                image,
                disk,
                processes: HashMap::from([(String::new(), init)]),
                limits: config.limits,
                workload: !resources::is_sandbox_container(&config.annotations),
            },
        );
        info!(container = %request.id, "container created");
        self.rehold_guest(&sandbox, &request.id).await;
        self.events.publish(Event::Create {
            container: request.id,
            bundle: request.bundle,
            rootfs: request.rootfs,
            stdio,
        });
        Ok(())
    }

    /// Starts a container's init process (`exec_id` empty) or an exec'd
    /// one, wiring its stdio; returns the guest's pid.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32, ServiceError> {
        let sandbox = self.sandbox()?;
        let (config, stdio, initial_size) = self.with_process(id, exec_id, |p, _| match p.pid {
            Some(_) => Err(ServiceError::AlreadyStarted(describe(id, exec_id))),
            None => Ok((p.config.clone(), p.stdio.clone(), p.pending_size)),
        })?;
        let terminal = stdio.terminal || config.tty;
        let base = self.next_stream.fetch_add(3, Ordering::Relaxed);
        let (stdin, stdout, stderr) = (base, base + 1, base + 2);
        let agent = sandbox.agent();
        let name = agent_process_id(exec_id);
        let spec = ProcessSpec {
            container: id.to_owned(),
            id: name.to_owned(),
            args: config.args,
            env: config.env,
            cwd: config.cwd,
            user: config.user,
            terminal,
            stdin: (!stdio.stdin.is_empty()).then_some(stdin),
            stdout,
            stderr: (!terminal).then_some(stderr),
            rlimits: config.rlimits,
            groups: config.groups,
            // A resize that came before the start (ctr's and docker's order):
            // the process sees its size from its first instruction.
            terminal_size: initial_size.filter(|_| terminal),
        };
        let stdout_target = Target::parse(&stdio.stdout)?;
        let stderr_target = Target::parse(&stdio.stderr)?;
        let exited = agent.watch_exit(id, name);
        let mut outputs = vec![pump_output(agent.open_output(stdout), stdout_target)];
        if !terminal {
            outputs.push(pump_output(agent.open_output(stderr), stderr_target));
        }
        let close_input = spec.stdin.map(|stream| {
            let close = CloseInput::default();
            pump_input(
                agent.open_input(stream),
                stdio.stdin.clone().into(),
                close.clone(),
            );
            close
        });
        let pid = match sandbox.request(&Request::StartProcess(spec)).await {
            Ok(Response::Started { pid }) => pid as u32,
            Ok(other) => return Err(ServiceError::Unexpected(Box::new(other))),
            Err(err) => return Err(ServiceError::from_sandbox(err)),
        };
        let (exit, size) = self.with_process(id, exec_id, |p, _| {
            p.pid = Some(pid);
            p.close_input = close_input;
            Ok((p.exit.clone(), p.pending_size.take()))
        })?;
        if let Some((rows, cols)) = size.filter(|s| terminal && Some(*s) != initial_size) {
            if let Err(err) = self.send_size(id, exec_id, rows, cols).await {
                warn!(container = id, error = %err, "cannot size the terminal");
            }
        }
        // The start is queued before the watcher can queue the exit.
        self.events.publish(match exec_id {
            "" => Event::Start {
                container: id.to_owned(),
                pid,
            },
            _ => Event::ExecStarted {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid,
            },
        });
        let events = self.events.clone();
        let (container, exec) = (id.to_owned(), exec_id.to_owned());
        tokio::spawn(async move {
            // A channel lost with the VM is an exit with 255, as runc's
            // shim reports a container whose init it could not wait for.
            let status = exited.await.map(|s| s.code() as u32).unwrap_or(255);
            for output in outputs {
                let _ = tokio::time::timeout(OUTPUT_DRAIN, output).await;
            }
            let exited = Exited {
                status,
                at: SystemTime::now(),
            };
            exit.send_replace(Some(exited));
            info!(container, exec, status, "process exited");
            events.publish(Event::Exit {
                container,
                exec_id: exec,
                pid,
                exited,
            });
        });
        Ok(pid)
    }

    /// Registers a process to run in a container with a later `start`.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        spec_json: &[u8],
        stdio: Stdio,
    ) -> Result<(), ServiceError> {
        if agent_process_id(exec_id) == "init" {
            return Err(ServiceError::ReservedExecId(exec_id.to_owned()));
        }
        let config = process_from_exec_json(spec_json)?;
        let mut containers = self.containers();
        let container = containers
            .get_mut(id)
            .ok_or_else(|| ServiceError::NoContainer(id.to_owned()))?;
        if container.processes.contains_key(exec_id) {
            return Err(ServiceError::ProcessExists {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
            });
        }
        container
            .processes
            .insert(exec_id.to_owned(), Process::new(config, stdio));
        drop(containers);
        self.events.publish(Event::ExecAdded {
            container: id.to_owned(),
            exec_id: exec_id.to_owned(),
        });
        Ok(())
    }

    /// The process's state: (pid, status, stdio, exit).
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState, ServiceError> {
        let paused = self.paused.load(Ordering::Relaxed);
        self.with_process(id, exec_id, |p, bundle| {
            Ok(ProcessState {
                bundle: bundle.to_owned(),
                pid: p.pid.unwrap_or(0),
                status: p.status(paused),
                stdio: p.stdio.clone(),
                exited: p.exited(),
            })
        })
    }

    /// Waits for a process to exit.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exited, ServiceError> {
        let mut exit = self.with_process(id, exec_id, |p, _| Ok(p.exit.subscribe()))?;
        let exited = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ServiceError::NoProcess {
                container: id.to_owned(),
                exec_id: exec_id.to_owned(),
            })?;
        Ok(exited.expect("waited for an exit"))
    }

    pub fn close_input(&self, id: &str, exec_id: &str) -> Result<(), ServiceError> {
        self.with_process(id, exec_id, |p, _| {
            if let Some(close) = p.close_input.take() {
                close.close();
            }
            Ok(())
        })
    }

    /// Resizes a process's terminal; one not started yet gets the size
    /// when it starts.
    pub async fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), ServiceError> {
        let started = self.with_process(id, exec_id, |p, _| {
            if p.pid.is_none() {
                p.pending_size = Some((rows, cols));
            }
            Ok(p.pid.is_some())
        })?;
        if started {
            self.send_size(id, exec_id, rows, cols).await?;
        }
        Ok(())
    }

    async fn send_size(
        &self,
        id: &str,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), ServiceError> {
        let request = Request::ResizeTerminal {
            container: id.to_owned(),
            process: agent_process_id(exec_id).to_owned(),
            rows,
            cols,
        };
        self.sandbox()?
            .request_done(&request)
            .await
            .map_err(ServiceError::from_sandbox)
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<ProcessInfo>, ServiceError> {
        self.state(id, "")?;
        let request = Request::ListProcesses {
            container: id.to_owned(),
        };
        match self.sandbox()?.request(&request).await {
            Ok(Response::Processes(processes)) => Ok(processes),
            Ok(other) => Err(ServiceError::Unexpected(Box::new(other))),
            Err(err) => Err(ServiceError::from_sandbox(err)),
        }
    }

    pub async fn stats(&self, id: &str) -> Result<GuestStats, ServiceError> {
        self.state(id, "")?;
        let request = Request::Stats {
            container: id.to_owned(),
        };
        match self.sandbox()?.request(&request).await {
            Ok(Response::Stats(stats)) => Ok(stats),
            Ok(other) => Err(ServiceError::Unexpected(Box::new(other))),
            Err(err) => Err(ServiceError::from_sandbox(err)),
        }
    }

    /// Pauses (or resumes) the whole VM: every container of the sandbox.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<(), ServiceError> {
        self.state(id, "")?;
        let sandbox = self.sandbox()?;
        if paused {
            sandbox.pause().await?;
        } else {
            sandbox.resume().await?;
        }
        self.paused.store(paused, Ordering::Relaxed);
        let container = id.to_owned();
        self.events.publish(if paused {
            Event::Paused { container }
        } else {
            Event::Resumed { container }
        });
        Ok(())
    }

    pub fn init_pid(&self, id: &str) -> u32 {
        self.containers()
            .get(id)
            .and_then(|c| c.init().pid)
            .unwrap_or(0)
    }
}

/// A process's state as `State` reports it.
pub struct ProcessState {
    pub bundle: PathBuf,
    pub pid: u32,
    pub status: containerd_shim::api::Status,
    pub stdio: Stdio,
    pub exited: Option<Exited>,
}

/// The files of `/etc` that the agent would write and that the spec binds
/// from the host instead (CRI's `hosts`, `hostname`, `resolv.conf`): the
/// copies in the rootfs image stay.
fn etc_files(files: &[Bind]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.destination.strip_prefix("/etc/"))
        .filter(|name| matches!(*name, "hosts" | "hostname" | "resolv.conf"))
        .map(str::to_owned)
        .collect()
}

fn describe(id: &str, exec_id: &str) -> String {
    match exec_id {
        "" => id.to_owned(),
        exec => format!("{exec} of {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etc_files_a_spec_binds_are_the_hosts() {
        let bind = |destination: &str| Bind {
            source: "/x".into(),
            destination: destination.into(),
            read_only: false,
        };
        let files = [
            bind("/etc/hosts"),
            bind("/etc/resolv.conf"),
            bind("/etc/passwd"),
            bind("/dev/termination-log"),
        ];
        assert_eq!(etc_files(&files), vec!["hosts", "resolv.conf"]);
    }
}
