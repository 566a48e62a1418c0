//! Containers with a life: created, started in a VM of their own, stopped,
//! started again with their files intact, removed. Their records and logs
//! live under one directory each, so a restarted hulld knows them all.

mod archive;
pub mod attach;
pub mod events;
mod exec;
mod inspect;
pub mod logs;
pub mod names;
mod networks;
pub use networks::EndpointOptions;
mod pod;
pub mod record;
mod run;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hull_image::{ImageStore, StoreError};
use hull_proto::Request;
use hull_vm::Hypervisor;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::{AgentClient, AgentError};
use crate::network::NetworkMode;
use crate::run::{new_container_id, remove_dir, RunError};
use crate::size::{Limits, VmSize};
use crate::spec::{process_config, ProcessOptions, SpecError};
use crate::volume::VolumeSource;

pub use attach::{OutputChunk, StdinMessage};
pub use exec::{ExecConfig, ExecInfo, ExecIo};
pub use logs::{LogEntry, LogFilter, LogStream};
pub use pod::PodStatus;
pub use record::{
    ContainerConfig, ContainerState, PodMembership, Record, RestartPolicy, Status, StoredProcess,
    StreamIds,
};

use attach::{OutputHub, StdinPipe};
use exec::Exec;
use logs::LogProgress;

/// Directories of containers' VMs under the VM root start with this; they
/// outlive hulld, unlike the others.
pub const DETACHED_VM_PREFIX: &str = "c-";
/// The writable layer's disk image in a container's directory.
const WRITABLE_DISK: &str = "writable.ext4";
/// Its size: sparse, so only what the container writes takes space.
const WRITABLE_DISK_BYTES: u64 = 10 << 30;
/// The error of containers whose VM stopped with the hulld that ran it.
pub const INTERRUPTED: &str = "hulld stopped while the container ran, and its VM is gone";
/// Docker's default grace period for `stop`.
const DEFAULT_STOP_TIMEOUT: u32 = 10;
/// How long a killed process may take to be reported gone before its VM is
/// killed outright.
const KILL_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("No such container: {0}")]
    NotFound(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    #[error("cannot remove container \"/{0}\": container is running: stop the container before removing or force remove")]
    RemoveRunning(String),
    #[error("No such exec instance: {0}")]
    ExecNotFound(String),
    #[error("exec {0} has already run")]
    ExecAlreadyRan(String),
    #[error("invalid signal: {0}")]
    InvalidSignal(String),
    #[error("container {0} is not running: Hull copies files only while the container runs")]
    CopyNotRunning(String),
    #[error("Could not find the file {path} in container {container}")]
    PathNotFound { path: String, container: String },
    /// The agent refused a copy as asked (not a directory, a malformed tar).
    #[error("{0}")]
    CopyRefused(String),
    #[error("cannot read the archive to copy into {path}")]
    ArchiveBody {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error(transparent)]
    Log(#[from] logs::LogError),
    #[error("cannot create the writable layer {}", .path.display())]
    WritableDisk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest agent refused: {0}")]
    Agent(#[from] AgentError),
    #[error("it was restarting")]
    Interrupted,
    #[error("the guest agent did not answer")]
    AgentSilent,
    #[error("the guest has no record of the container's process")]
    ProcessLost,
    #[error(transparent)]
    Pod(#[from] crate::pod::PodError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Snapshot(#[from] crate::volume::snapshot::SnapshotError),
    #[error("volume {volume} is attached to the running container {container}: Hull gives a volume's disk to one VM at a time")]
    VolumeBusy { volume: String, container: String },
    #[error("container {container} belongs to pod {pod}: its limits are the pod's VM size")]
    PodLimits { container: String, pod: String },
    #[error(transparent)]
    Size(#[from] crate::size::SizeError),
    #[error("container {container} belongs to pod {pod}: remove the pod instead")]
    PodMember { container: String, pod: String },
    #[error("cannot remove pod {0}: its containers are running: stop the pod before removing it or force remove")]
    PodRunning(String),
}

/// What `create` is given, besides the image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    pub image: String,
    pub process: ProcessOptions,
    pub hostname: Option<String>,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    pub auto_remove: bool,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    /// The pod whose VM it runs in.
    pub pod: Option<PodMembership>,
    /// Its VM's size; `None`: the daemon's default.
    pub size: Option<crate::size::VmSize>,
    /// Its memory and CPU limits within that size.
    pub limits: crate::size::Limits,
    pub network: crate::network::NetworkMode,
    /// How it joins a user-defined `network`.
    pub endpoint: EndpointOptions,
    pub ports: Vec<crate::network::PortBinding>,
    /// Named volumes (created if missing) and host directories.
    pub volumes: Vec<crate::volume::VolumeMount>,
}

/// What docker's `update` changes; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct ContainerUpdate {
    pub limits: Limits,
    pub restart: Option<RestartPolicy>,
}

/// A container's state and whether it still exists, as waiters see it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub state: ContainerState,
    pub removed: bool,
}

/// Which change `wait` waits for, as docker's `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    NotRunning,
    NextExit,
    Removed,
}

/// One container.
pub struct Container {
    pub id: String,
    dir: PathBuf,
    record: Mutex<Record>,
    changes: watch::Sender<Snapshot>,
    /// Serializes start, stop, restart and remove.
    ops: tokio::sync::Mutex<()>,
    /// The VM running the container, while it runs.
    run: Mutex<Option<RunHandle>>,
    output: OutputHub,
    stdin: Option<StdinPipe>,
    log: watch::Sender<LogProgress>,
    execs: Mutex<BTreeMap<String, Arc<Exec>>>,
}

impl Container {
    fn new(dir: PathBuf, record: Record) -> Self {
        let stdin = record.config.open_stdin.then(StdinPipe::new);
        let snapshot = Snapshot {
            state: record.state.clone(),
            removed: false,
        };
        Self {
            id: record.id.clone(),
            dir,
            record: Mutex::new(record),
            changes: watch::channel(snapshot).0,
            ops: tokio::sync::Mutex::new(()),
            run: Mutex::new(None),
            output: OutputHub::default(),
            stdin,
            log: watch::channel(LogProgress::default()).0,
            execs: Mutex::default(),
        }
    }

    /// A copy of the record.
    pub fn record(&self) -> Record {
        lock(&self.record).clone()
    }

    pub fn name(&self) -> String {
        lock(&self.record).name.clone()
    }

    pub fn state(&self) -> ContainerState {
        lock(&self.record).state.clone()
    }

    pub fn config(&self) -> ContainerConfig {
        lock(&self.record).config.clone()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }

    /// Where the container's record, logs and writable layer live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Changes the state, saves the record and tells waiters.
    fn update(&self, change: impl FnOnce(&mut ContainerState)) {
        let mut record = lock(&self.record);
        change(&mut record.state);
        if let Err(err) = record.save(&self.dir) {
            warn!(container = %self.id, error = %err, "cannot save the container's state");
        }
        let state = record.state.clone();
        drop(record);
        self.changes.send_modify(|s| s.state = state);
    }

    fn running_agent(&self) -> Result<AgentClient, ContainerError> {
        lock(&self.run)
            .as_ref()
            .map(|run| run.agent.clone())
            .ok_or_else(|| ContainerError::NotRunning(self.id.clone()))
    }

    /// Receives the container's live output until its current (or next)
    /// run ends.
    pub fn attach_output(&self, stdout: bool, stderr: bool) -> mpsc::Receiver<OutputChunk> {
        self.output.subscribe(stdout, stderr)
    }

    /// Where attached clients write the container's stdin; `None` unless the
    /// container was created with stdin open.
    pub fn stdin(&self) -> Option<mpsc::Sender<StdinMessage>> {
        self.stdin.as_ref().map(|pipe| pipe.tx.clone())
    }

    /// Log entries, and with `follow` new ones until the process ends.
    pub fn logs(
        &self,
        filter: LogFilter,
        follow: bool,
    ) -> mpsc::Receiver<Result<LogEntry, logs::LogError>> {
        let path = self.log_path();
        if follow && self.state().running() {
            return logs::follow(path, filter, self.log.subscribe());
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::task::spawn_blocking(move || match logs::read(&path, &filter) {
            Ok(entries) => {
                for entry in entries {
                    if tx.blocking_send(Ok(entry)).is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                let _ = tx.blocking_send(Err(err));
            }
        });
        rx
    }

    /// Sends `signal` to the main process.
    pub async fn signal(&self, signal: i32) -> Result<(), ContainerError> {
        let agent = self.running_agent()?;
        let request = Request::Signal {
            container: self.id.clone(),
            process: "init".into(),
            signal,
        };
        match agent.request_done(&request).await {
            Ok(()) => Ok(()),
            // It exited between our look and the agent's.
            Err(AgentError::Refused(refusal))
                if refusal.kind == hull_proto::ErrorKind::NotFound =>
            {
                Err(ContainerError::NotRunning(self.id.clone()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Resizes the main process's terminal.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ContainerError> {
        let agent = self.running_agent()?;
        let request = Request::ResizeTerminal {
            container: self.id.clone(),
            process: "init".into(),
            rows,
            cols,
        };
        agent.request_done(&request).await.map_err(Into::into)
    }

    /// Waits for `condition`; returns the exit code and error of the last exit.
    pub async fn wait(&self, condition: WaitCondition) -> (i32, String) {
        let mut changes = self.changes.subscribe();
        let exits = changes.borrow().state.exits;
        let done = changes
            .wait_for(|s| match condition {
                WaitCondition::Removed => s.removed,
                WaitCondition::NextExit => s.removed || s.state.exits > exits,
                WaitCondition::NotRunning => s.removed || !s.state.running(),
            })
            .await
            .map(|s| {
                // A start that failed is not an exit: only errors of a run are reported.
                let error = if s.state.finished_at.is_some() {
                    s.state.error.clone()
                } else {
                    String::new()
                };
                (s.state.exit_code, error)
            });
        done.unwrap_or_else(|_| {
            let state = self.state();
            (state.exit_code, state.error)
        })
    }

    /// Marks the container exited because its VM was lost with hulld;
    /// returns whether its restart policy wants it started again.
    pub fn record_lost(&self, message: String) -> bool {
        let config = self.config();
        let mut restart = false;
        self.update(|s| {
            s.status = Status::Exited;
            s.pid = 0;
            s.exit_code = 255;
            s.error = message;
            s.finished_at = Some(SystemTime::now());
            s.exits += 1;
            restart = config.restart != RestartPolicy::No && !s.stopped_by_user;
        });
        restart
    }

    /// The container's exec instances.
    pub fn execs(&self) -> Vec<String> {
        lock(&self.execs).keys().cloned().collect()
    }

    fn stop_signal(&self) -> i32 {
        self.config()
            .stop_signal
            .as_deref()
            .and_then(|s| parse_signal(s).ok())
            .unwrap_or(libc::SIGTERM)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A signal by number or by name, with or without `SIG` (`9`, `KILL`, `SIGUSR1`).
pub fn parse_signal(text: &str) -> Result<i32, ContainerError> {
    let invalid = || ContainerError::InvalidSignal(text.to_owned());
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=64).contains(&number) {
            Ok(number)
        } else {
            Err(invalid())
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(invalid()),
    };
    Ok(number)
}

/// Every container hulld knows.
pub struct Containers<H: Hypervisor> {
    dir: PathBuf,
    images: Arc<ImageStore>,
    table: Mutex<BTreeMap<String, Arc<Container>>>,
    events: events::Events,
    pods: crate::pod::Pods,
    volumes: crate::volume::Volumes,
    networks: crate::network::Networks,
    /// Each pod's VM while it runs; the lock orders its boot and power-off.
    pod_vms: Mutex<BTreeMap<String, pod::PodSlot<H::Vm>>>,
}

impl<H: Hypervisor> Containers<H> {
    /// Loads the containers recorded under `dir` and the pods under
    /// `pods_dir`. Those a previous hulld left running are taken back by
    /// `reattach_all`.
    pub fn open(
        dir: &Path,
        pods_dir: &Path,
        volumes_dir: &Path,
        networks_dir: &Path,
        images: Arc<ImageStore>,
        vm_uids: hull_vm::uids::VmUids,
    ) -> Result<Self, ContainerError> {
        std::fs::create_dir_all(dir).map_err(|source| ContainerError::Io {
            what: "create",
            path: dir.to_owned(),
            source,
        })?;
        let mut table = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|source| ContainerError::Io {
            what: "read",
            path: dir.to_owned(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let record = match Record::load(&path) {
                Ok(record) => record,
                Err(err) => {
                    warn!(dir = %path.display(), error = %err, "skipping a container directory");
                    continue;
                }
            };
            if record.state.status == Status::Removing {
                remove_dir(&path);
                continue;
            }
            // Running ones keep their state until `reattach_all` finds their VM.
            let container = Container::new(path, record);
            table.insert(container.id.clone(), Arc::new(container));
        }
        info!(containers = table.len(), "containers loaded");
        let pods = crate::pod::Pods::open(pods_dir)?;
        let volumes = crate::volume::Volumes::open(volumes_dir)?;
        let networks = crate::network::Networks::open(networks_dir, vm_uids)?;
        let containers = Self {
            dir: dir.to_owned(),
            images,
            table: Mutex::new(table),
            events: events::Events::default(),
            pods,
            volumes,
            networks,
            pod_vms: Mutex::default(),
        };
        containers.restore_networks();
        Ok(containers)
    }

    /// Networks as the last hulld left them, with every container that was
    /// running: those whose VM turns out to be gone are detached as
    /// `reattach_all` finds them.
    fn restore_networks(&self) {
        let running: Vec<_> = self
            .list()
            .into_iter()
            .filter(|c| c.state().status == Status::Running && c.config().pod.is_none())
            .filter_map(|c| match c.config().network {
                NetworkMode::Network(network) => Some((c.id.clone(), network, c.state().ports)),
                _ => None,
            })
            .collect();
        self.networks.restore(&running);
    }

    /// Finds a container by full id, name, or unique id prefix, as docker does.
    pub fn get(&self, reference: &str) -> Result<Arc<Container>, ContainerError> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        crate::records::find(&lock(&self.table), reference, |c| c.name())
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(reference.to_owned()))
    }

    /// Every container, newest first.
    pub fn list(&self) -> Vec<Arc<Container>> {
        let mut all: Vec<Arc<Container>> = lock(&self.table).values().cloned().collect();
        all.sort_by_key(|c| std::cmp::Reverse(lock(&c.record).created));
        all
    }

    /// The feed of container events.
    pub fn events(&self) -> &events::Events {
        &self.events
    }

    pub(crate) fn emit(&self, container: &Container, action: &str, extra: &[(&str, String)]) {
        let record = lock(&container.record);
        let mut attributes = BTreeMap::from([
            ("name".to_owned(), record.name.clone()),
            ("image".to_owned(), record.config.image.clone()),
        ]);
        attributes.extend(record.config.labels.clone());
        drop(record);
        attributes.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self.events.emit(events::ContainerEvent {
            id: container.id.clone(),
            action: action.to_owned(),
            attributes,
            time: SystemTime::now(),
        });
    }

    /// Image ids used by any container, so that `rmi` leaves them.
    pub fn image_ids(&self) -> Vec<String> {
        lock(&self.table)
            .values()
            .map(|c| lock(&c.record).config.image_id.clone())
            .collect()
    }

    /// Creates a container of `options.image`: its record, and the disk that
    /// will hold its writable layer.
    pub async fn create(
        &self,
        mut options: CreateOptions,
    ) -> Result<Arc<Container>, ContainerError> {
        let images = self.images.clone();
        let reference = options.image.clone();
        let image = tokio::task::spawn_blocking(move || images.resolve(&reference))
            .await
            .expect("image lookups do not panic")?;
        let process = process_config(&image.config, &options.process)?;
        if options.pod.is_none() {
            crate::volume::add_image_volumes(
                &mut options.volumes,
                image.config.volumes.iter().flat_map(|v| v.keys()),
                new_container_id,
            );
        }
        for mount in &options.volumes {
            if let Some(name) = mount.source.volume_name() {
                let anonymous = matches!(mount.source, VolumeSource::Anonymous { .. });
                self.volumes.create(name, None, anonymous)?;
            }
        }
        if let Some(size) = options.size {
            options.limits.check(size)?;
        }
        let network = match options.network {
            NetworkMode::Network(reference) => {
                NetworkMode::Network(self.networks.get(&reference)?.id)
            }
            other => other,
        };
        let id = new_container_id();
        let dir = self.dir.join(&id);

        let mut table = lock(&self.table);
        let name = match options.name.filter(|n| !n.is_empty()) {
            Some(name) => {
                let name = name.strip_prefix('/').unwrap_or(&name).to_owned();
                if !names::is_valid(&name) {
                    return Err(ContainerError::InvalidName(name));
                }
                if let Some(other) = table.values().find(|c| c.name() == name) {
                    return Err(ContainerError::NameInUse {
                        name,
                        id: other.id.clone(),
                    });
                }
                name
            }
            None => names::generate(|n| table.values().any(|c| c.name() == n)),
        };
        let entrypoint = options
            .process
            .entrypoint
            .clone()
            .unwrap_or_else(|| image.config.entrypoint.clone().unwrap_or_default());
        let cmd = if options.process.cmd.is_empty() && options.process.entrypoint.is_none() {
            image.config.cmd.clone().unwrap_or_default()
        } else {
            options.process.cmd.clone()
        };
        let record = Record {
            id: id.clone(),
            name,
            created: SystemTime::now(),
            config: ContainerConfig {
                image: options.image,
                image_id: image.id.clone(),
                hostname: options.hostname.unwrap_or_else(|| id[..12].to_owned()),
                process: process.into(),
                cmd,
                entrypoint,
                open_stdin: options.open_stdin,
                stdin_once: options.stdin_once,
                attach_stdin: options.attach_stdin,
                attach_stdout: options.attach_stdout,
                attach_stderr: options.attach_stderr,
                labels: options.labels,
                restart: options.restart,
                auto_remove: options.auto_remove,
                stop_signal: options.stop_signal,
                stop_timeout: options.stop_timeout,
                // A container removed at exit needs no disk: its changes die with it.
                persistent: !options.auto_remove,
                pod: options.pod,
                size: options.size,
                limits: options.limits,
                network,
                ports: options.ports,
                volumes: options.volumes,
            },
            state: ContainerState::default(),
        };
        let io_error = |what, path: &Path| {
            let path = path.to_owned();
            move |source| ContainerError::Io { what, path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        let created = (|| {
            if let NetworkMode::Network(network) = &record.config.network {
                self.networks.connect(
                    network,
                    &id,
                    &record.name,
                    options.endpoint.aliases,
                    options.endpoint.address,
                )?;
            }
            if record.config.persistent {
                create_writable_disk(&dir.join(WRITABLE_DISK))?;
            }
            record.save(&dir)?;
            Ok::<_, ContainerError>(())
        })();
        if let Err(err) = created {
            self.networks.forget(&id);
            remove_dir(&dir);
            return Err(err);
        }
        let container = Arc::new(Container::new(dir, record));
        table.insert(id, container.clone());
        drop(table);
        self.emit(&container, "create", &[]);
        Ok(container)
    }

    /// Renames a container.
    pub fn rename(&self, reference: &str, new_name: &str) -> Result<(), ContainerError> {
        let container = self.get(reference)?;
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !names::is_valid(new_name) {
            return Err(ContainerError::InvalidName(new_name.to_owned()));
        }
        let table = lock(&self.table);
        if let Some(other) = table
            .values()
            .find(|c| c.name() == new_name && c.id != container.id)
        {
            return Err(ContainerError::NameInUse {
                name: new_name.to_owned(),
                id: other.id.clone(),
            });
        }
        let mut record = lock(&container.record);
        let old_name = std::mem::replace(&mut record.name, new_name.to_owned());
        record.save(&container.dir)?;
        drop(record);
        self.networks.rename(&container.id, new_name);
        drop(table);
        self.emit(&container, "rename", &[("oldName", format!("/{old_name}"))]);
        Ok(())
    }

    /// Changes a container's limits and restart policy, as docker's
    /// `update`. Limits stay within the VM's size (`default_size` for a
    /// container without one) and take effect at once if it runs.
    pub async fn update(
        &self,
        container: &Arc<Container>,
        default_size: VmSize,
        update: ContainerUpdate,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let config = container.config();
        let limits = config.limits.updated(update.limits);
        if limits != config.limits {
            if let Some(membership) = &config.pod {
                return Err(ContainerError::PodLimits {
                    container: container.name(),
                    pod: membership.pod.clone(),
                });
            }
            let size = config.size.unwrap_or(default_size);
            limits.check(size)?;
            let run = lock(&container.run).clone();
            if let Some(run) = run {
                run.set_guest_memory(limits.guest_memory(size)).await?;
                let count = limits.online_cpus(size);
                run.agent
                    .request_done(&Request::SetOnlineCpus { count })
                    .await?;
            }
        }
        let mut record = lock(&container.record);
        record.config.limits = limits;
        if let Some(restart) = update.restart {
            record.config.restart = restart;
        }
        record.save(&container.dir)?;
        drop(record);
        self.emit(container, "update", &[]);
        Ok(())
    }

    /// Stops the main process: its stop signal, then SIGKILL after `timeout`
    /// seconds. Returns false if it was not running.
    pub async fn stop(
        &self,
        container: &Arc<Container>,
        timeout: Option<u32>,
    ) -> Result<bool, ContainerError> {
        let _op = container.ops.lock().await;
        let stopped = self.stop_locked(container, timeout).await?;
        if stopped {
            self.emit(container, "stop", &[]);
        }
        // One stopped while it waited to restart leaves its pod's VM idle.
        self.settle_pod_of(container).await;
        Ok(stopped)
    }

    async fn stop_locked(
        &self,
        container: &Arc<Container>,
        timeout: Option<u32>,
    ) -> Result<bool, ContainerError> {
        let state = container.state();
        if state.status == Status::Restarting {
            container.update(|s| {
                s.stopped_by_user = true;
                s.status = Status::Exited;
            });
            return Ok(true);
        }
        if !state.running() {
            return Ok(false);
        }
        container.update(|s| s.stopped_by_user = true);
        let timeout = timeout
            .or(container.config().stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let mut changes = container.changes.subscribe();
        let exits = state.exits;
        let exited = |s: &Snapshot| s.state.exits > exits || s.removed;
        if timeout > 0 {
            let signal = container.stop_signal();
            self.emit(container, "kill", &[("signal", signal.to_string())]);
            match container.signal(signal).await {
                Ok(()) | Err(ContainerError::NotRunning(_)) => {}
                Err(err) => {
                    warn!(container = %container.id, error = %err, "cannot send the stop signal")
                }
            }
            let waited = tokio::time::timeout(
                Duration::from_secs(u64::from(timeout)),
                changes.wait_for(exited),
            );
            if waited.await.is_ok() {
                return Ok(true);
            }
            info!(container = %container.id, timeout, "the container ignored its stop signal; killing it");
        }
        self.kill_and_wait(container, &mut changes, exited).await;
        Ok(true)
    }

    async fn kill_and_wait(
        &self,
        container: &Arc<Container>,
        changes: &mut watch::Receiver<Snapshot>,
        exited: impl Fn(&Snapshot) -> bool + Copy,
    ) {
        self.emit(container, "kill", &[("signal", libc::SIGKILL.to_string())]);
        if let Err(err) = container.signal(libc::SIGKILL).await {
            warn!(container = %container.id, error = %err, "cannot kill the main process");
        }
        if tokio::time::timeout(KILL_GRACE, changes.wait_for(exited))
            .await
            .is_err()
        {
            warn!(container = %container.id, "the killed container did not exit; stopping its VM");
            container.kill_vm();
            let _ = tokio::time::timeout(KILL_GRACE, changes.wait_for(exited)).await;
        }
    }

    /// Sends `signal` to the main process; a user's kill keeps restart
    /// policies from starting the container again, as in docker.
    pub async fn kill(
        &self,
        container: &Arc<Container>,
        signal: i32,
    ) -> Result<(), ContainerError> {
        if !container.state().running() {
            return Err(ContainerError::NotRunning(container.id.clone()));
        }
        if signal == libc::SIGKILL {
            container.update(|s| s.stopped_by_user = true);
        }
        self.emit(container, "kill", &[("signal", signal.to_string())]);
        container.signal(signal).await
    }

    /// Removes a container, its logs and its writable layer. A running one
    /// is killed first when `force`, refused otherwise.
    pub async fn remove(
        &self,
        container: &Arc<Container>,
        force: bool,
    ) -> Result<(), ContainerError> {
        if let Some(membership) = &container.config().pod {
            if let Ok(pod) = self.pods.get(&membership.pod) {
                return Err(ContainerError::PodMember {
                    container: container.name(),
                    pod: pod.name().to_owned(),
                });
            }
        }
        self.remove_unchecked(container, force).await
    }

    /// Removes a container, whether or not a pod holds it.
    async fn remove_unchecked(
        &self,
        container: &Arc<Container>,
        force: bool,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let state = container.state();
        if state.running() {
            if !force {
                return Err(ContainerError::RemoveRunning(container.name()));
            }
            container.update(|s| s.stopped_by_user = true);
            if state.status == Status::Running {
                let mut changes = container.changes.subscribe();
                let exits = state.exits;
                self.kill_and_wait(container, &mut changes, move |s| {
                    s.state.exits > exits || s.removed
                })
                .await;
            }
        }
        self.remove_now(container);
        Ok(())
    }

    fn remove_now(&self, container: &Arc<Container>) {
        if container.changes.borrow().removed {
            return;
        }
        container.update(|s| s.status = Status::Removing);
        lock(&self.table).remove(&container.id);
        self.networks.forget(&container.id);
        remove_dir(&container.dir);
        container.changes.send_modify(|s| s.removed = true);
        self.emit(container, "destroy", &[]);
        info!(container = %container.id, "container removed");
    }
}

/// How to reach the VM of a running container.
#[derive(Clone)]
struct RunHandle {
    agent: AgentClient,
    /// Cancelled to stop the VM at once.
    kill: CancellationToken,
    /// To the run's supervisor, which owns the VM, to change its guest's
    /// memory; `None` in a pod, whose VM is the pod's.
    guest_memory: Option<mpsc::Sender<run::GuestMemoryRequest>>,
}

impl RunHandle {
    /// Has the run's supervisor resize the guest's memory. A run that ends
    /// meanwhile drops the request: the next start applies the limits.
    async fn set_guest_memory(&self, bytes: u64) -> Result<(), RunError> {
        let Some(guest_memory) = &self.guest_memory else {
            return Ok(());
        };
        let (done, result) = tokio::sync::oneshot::channel();
        let request = run::GuestMemoryRequest { bytes, done };
        if guest_memory.send(request).await.is_err() {
            return Ok(());
        }
        result.await.unwrap_or(Ok(()))
    }
}

impl Container {
    /// Stops the VM at once, when the guest does not answer.
    fn kill_vm(&self) {
        if let Some(run) = lock(&self.run).as_ref() {
            run.kill.cancel();
        }
    }
}

fn create_writable_disk(path: &Path) -> Result<(), ContainerError> {
    Ok(crate::volume::format_disk(path, WRITABLE_DISK_BYTES)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigusr1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        for bad in ["0", "65", "NOPE", ""] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
