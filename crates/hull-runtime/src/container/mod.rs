//! Containers with a life: created, started in a VM of their own, stopped,
//! started again with their files intact, removed. Their records and logs
//! live under one directory each, so a restarted hulld knows them all.

mod archive;
pub mod attach;
mod create;
pub mod events;
mod exec;
mod filesystem;
pub mod health;
mod inspect;
pub mod links;
pub mod logs;
pub mod names;
mod networks;
mod pause;
pub use networks::EndpointOptions;
mod pod;
pub mod record;
mod run;
mod stop;
mod supervise;
mod sweep;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use hull_image::{ImageStore, StoreError};
use hull_proto::Request;
use hull_vm::Hypervisor;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::agent::{AgentClient, AgentError};
use crate::run::{remove_dir, RunError};
use crate::spec::SpecError;
use supervise::RunHandle;

pub use attach::{OutputChunk, StdinMessage};
pub use create::{ContainerUpdate, CreateOptions};
pub use exec::{ExecConfig, ExecInfo, ExecIo};
pub use filesystem::FilesystemView;
pub use logs::{LogEntry, LogFilter, LogStream};
pub use pod::pod_vm_name;
pub use pod::{MemberOptions, PodOptions, PodStatus};
pub use record::{
    mac_address_in, valid_mac, ClientSettings, ContainerConfig, ContainerState, PodMembership,
    Record, RestartPolicy, Status, StoredProcess, StreamIds,
};
pub use run::vm_name;
pub use stop::parse_signal;

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
/// The longest a VM's power-off takes: the guest's grace to power off
/// twice over (asked, then awaited), and its halt.
const VM_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(40);
/// The error of containers whose VM stopped with the hulld that ran it.
pub const INTERRUPTED: &str = "hulld stopped while the container ran, and its VM is gone";

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
    #[error("Container {0} is paused, unpause the container before exec")]
    Paused(String),
    #[error("Container {0} is already paused")]
    AlreadyPaused(String),
    #[error("Container {0} is not paused")]
    NotPaused(String),
    #[error("container {container} belongs to pod {pod}, whose containers share one VM: Hull pauses a container's own VM only")]
    PodPause { container: String, pod: String },
    #[error("container {0} is already running")]
    AlreadyRunning(String),
    /// Docker 20's words, which docker-py's tests compare.
    #[error("You cannot remove a running container {0}. Stop the container before attempting removal or force remove")]
    RemoveRunning(String),
    #[error("No such exec instance: {0}")]
    ExecNotFound(String),
    #[error("exec {0} has already run")]
    ExecAlreadyRan(String),
    #[error("invalid signal: {0}")]
    InvalidSignal(String),
    #[error("container {0} stopped while its files were copied: try again")]
    CopyNotRunning(String),
    #[error("container {0} is between runs (restarting, or its VM is being found again): wait until it runs or stops, then try again")]
    FilesBusy(String),
    #[error("container {container} of pod {pod} is not running: Hull reads a pod member's files only while its pod runs; start the pod first")]
    PodMemberFiles { container: String, pod: String },
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
    #[error(transparent)]
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
    Link(#[from] links::LinkError),
    #[error(transparent)]
    Network(#[from] hull_net::NetworkError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Snapshot(#[from] crate::volume::snapshot::SnapshotError),
    #[error("volume {volume} is attached to the running container {container}: a block volume's disk goes to one VM at a time")]
    VolumeBusy { volume: String, container: String },
    #[error("container {container} belongs to pod {pod}: its limits are the pod's VM size")]
    PodLimits { container: String, pod: String },
    #[error(transparent)]
    Size(#[from] crate::size::SizeError),
    #[error("container {container} belongs to pod {pod}: remove the pod instead")]
    PodMember { container: String, pod: String },
    #[error("container {container} belongs to pod {pod}, whose network is the pod's: a pod's containers join no other")]
    PodNetwork { container: String, pod: String },
    #[error("cannot remove pod {0}: its containers are running: stop the pod before removing it or force remove")]
    PodRunning(String),
}

/// A container's state and whether it still exists, as waiters see it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub state: ContainerState,
    pub removed: bool,
    /// Whether a VM of the container's is still up: it outlives the
    /// process by its power-off, which the exit does not wait for.
    pub vm_up: bool,
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
            vm_up: false,
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

    /// Where its name is unique; `None` for the host's own containers.
    pub fn namespace(&self) -> Option<String> {
        lock(&self.record).namespace.clone()
    }

    /// Its name qualified by its namespace (`acme/web`), unique among all
    /// containers: how the host's operator names another namespace's.
    pub fn qualified_name(&self) -> String {
        let record = lock(&self.record);
        match &record.namespace {
            Some(namespace) => format!("{namespace}/{}", record.name),
            None => record.name.clone(),
        }
    }

    fn is_named(&self, namespace: Option<&str>, name: &str) -> bool {
        let record = lock(&self.record);
        record.name == name && record.namespace.as_deref() == namespace
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

    /// The agent of the running process's VM; none once the process has
    /// exited, though its VM may still be powering off.
    fn running_agent(&self) -> Result<AgentClient, ContainerError> {
        let not_running = || ContainerError::NotRunning(self.id.clone());
        if self.state().status != Status::Running {
            return Err(not_running());
        }
        lock(&self.run)
            .as_ref()
            .map(|run| run.agent.clone())
            .ok_or_else(not_running)
    }

    /// Waits until the VM of the container's last run is gone: its exit is
    /// recorded first, its power-off follows, and nothing may use its disks
    /// (start again, read its files, remove it) before that ends.
    async fn vm_gone(&self) {
        let mut changes = self.changes.subscribe();
        let gone = changes.wait_for(|s| !s.vm_up || s.removed);
        if tokio::time::timeout(VM_GONE_GRACE, gone).await.is_err() {
            warn!(container = %self.id, "the VM of the container's last run is still powering off");
        }
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
        tokio::task::spawn_blocking(move || {
            let sent = logs::read(&path, &filter, &mut |entry| {
                tx.blocking_send(Ok(entry)).is_ok()
            });
            if let Err(err) = sent {
                let _ = tx.blocking_send(Err(err));
            }
        });
        rx
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
                // As docker's: an exit ends the wait even when the restart
                // policy starts the container again.
                WaitCondition::NotRunning => {
                    s.removed || !s.state.running() || s.state.exits > exits
                }
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
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every container hulld knows.
pub struct Containers<H: Hypervisor> {
    dir: PathBuf,
    images: Arc<ImageStore>,
    table: Mutex<BTreeMap<String, Arc<Container>>>,
    events: events::Events,
    pods: crate::pod::Pods,
    volumes: crate::volume::Volumes,
    networks: hull_net::Networks,
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
        crate::records::sweep_unrecorded(dir, record::RECORD_FILE);
        let mut table = BTreeMap::new();
        let mut creating = Vec::new();
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
            if record.creating {
                creating.push((record, path));
                continue;
            }
            // Running ones keep their state until `reattach_all` finds their VM.
            let container = Container::new(path, record);
            table.insert(container.id.clone(), Arc::new(container));
        }
        info!(containers = table.len(), "containers loaded");
        let pods = crate::pod::Pods::open(pods_dir)?;
        let volumes = crate::volume::Volumes::open(volumes_dir)?;
        let networks = hull_net::Networks::open(networks_dir, vm_uids)?;
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
        containers.recover(creating);
        Ok(containers)
    }

    /// Networks as the last hulld left them, with every container that was
    /// running: those whose VM turns out to be gone are detached as
    /// `reattach_all` finds them.
    fn restore_networks(&self) {
        let plugged: Vec<(String, usize, String)> = self
            .list()
            .into_iter()
            .filter(|c| c.state().status == Status::Running && c.config().pod.is_none())
            .flat_map(|c| {
                let id = c.id.clone();
                c.state()
                    .plugged
                    .into_iter()
                    .map(move |(slot, network)| (id.clone(), slot, network))
            })
            .collect();
        let mut running: Vec<_> = self
            .list()
            .into_iter()
            .filter(|c| c.state().status == Status::Running && c.config().pod.is_none())
            .filter_map(|c| match c.config().network {
                hull_net::NetworkMode::Network(network) => {
                    Some((c.id.clone(), network, c.state().ports))
                }
                _ => None,
            })
            .collect();
        let pods = self
            .running_pods()
            .into_iter()
            .filter_map(|pod| match &pod.network {
                hull_net::NetworkMode::Network(network) => {
                    let ports = pod.spec.containers.iter().flat_map(|c| c.ports.clone());
                    Some((pod.id.clone(), network.clone(), ports.collect()))
                }
                _ => None,
            });
        running.extend(pods);
        self.networks.restore(&running, &plugged);
    }

    /// Finds a container by full id, name, or unique id prefix, as docker
    /// does; a namespace's container by its qualified name (`acme/web`).
    pub fn get(&self, reference: &str) -> Result<Arc<Container>, ContainerError> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        crate::records::find(&lock(&self.table), reference, |c| c.qualified_name())
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(reference.to_owned()))
    }

    /// As [`Containers::get`], among only the containers `visible` accepts:
    /// one it rejects is not found, whatever the reference, so a caller
    /// shown part of the table learns nothing of the rest. Names are
    /// matched unqualified: `visible` must accept one namespace at most.
    pub fn get_visible(
        &self,
        reference: &str,
        visible: impl Fn(&Container) -> bool,
    ) -> Result<Arc<Container>, ContainerError> {
        let reference = reference.strip_prefix('/').unwrap_or(reference);
        let table: BTreeMap<String, Arc<Container>> = lock(&self.table)
            .iter()
            .filter(|(_, c)| visible(c))
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        crate::records::find(&table, reference, |c| c.name())
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
}
