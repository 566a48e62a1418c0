//! `run`: one container in its own VM, from image to exit status.

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hull_image::{ImageStore, StoreError};
use hull_proto::{
    ContainerSpec, ErrorKind, ExitStatus, ProcessSpec, Request, Response, RootfsSpec,
};
use hull_vm::{DiskConfig, Hypervisor, Vm, VmExit};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::agent::{AgentClient, AgentError, OutputStream};
use crate::prime::Prime;
use crate::size::{Limits, VmSize};
use crate::spec::{process_config, ProcessOptions, SpecError};
use crate::start::{pooled_network, StartedVm, VmFactory, VmNeeds};
use crate::template::{TemplateConfig, Templates};

/// How long a VM may take from QEMU start to the agent's hello. Generous:
/// under TCG on a loaded machine a boot can take several seconds.
pub(crate) const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) const ROOTFS_SERIAL: &str = "hull-rootfs";
/// Stream ids of a container's main process; execs take ids above them.
pub(crate) const STDIN: u32 = 1;
pub(crate) const STDOUT: u32 = 2;
pub(crate) const STDERR: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Image(#[from] StoreError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("cannot prepare the VM directory {}", .path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
    #[error("cannot start the VM")]
    Hypervisor(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot change the guest's memory")]
    GuestMemory(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot pause or resume the VM")]
    Freeze(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot plug a network into the VM or unplug one")]
    Nic(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the VM did not come up within {}s; its console ends with:\n{console}", BOOT_TIMEOUT.as_secs())]
    BootTimeout { console: String },
    #[error("the VM stopped unexpectedly ({exit}); its console ends with:\n{console}")]
    VmDied { exit: VmExit, console: String },
    #[error("{0}")]
    CommandNotFound(String),
    #[error("{0}")]
    CommandNotExecutable(String),
    /// The agent refused the process as specified (an unknown user, say).
    #[error("{0}")]
    InvalidProcess(String),
    #[error("talking to the guest agent failed")]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Admission(#[from] crate::admission::AdmissionError),
    #[error("cannot warm a pooled VM")]
    Warm(#[source] Box<crate::warm::WarmError>),
}

impl From<crate::warm::WarmError> for RunError {
    fn from(err: crate::warm::WarmError) -> Self {
        RunError::Warm(Box::new(err))
    }
}

impl RunError {
    /// The exit code `hull run` reports for this error, as docker does.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::CommandNotFound(_) => 127,
            Self::CommandNotExecutable(_) => 126,
            _ => 125,
        }
    }
}

/// Sizes and places for VMs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Parent of the per-VM directories.
    pub run_root: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Clone VMs from a template; `None` boots every VM cold.
    pub templates: Option<TemplateConfig>,
    /// Template clones kept resumed and idle for the next runs, by size
    /// (`None`: the default size).
    pub pools: Vec<(Option<VmSize>, usize)>,
    /// Where the rootfs that warms pooled VMs is kept (see [`crate::warm`]);
    /// `None`: pooled VMs are handed out as resumed.
    pub warm_dir: Option<PathBuf>,
    /// How many VMs, and how much of their memory, the host takes.
    pub admission: crate::admission::AdmissionConfig,
    /// The mount tag of the 9p share every VM gets (see [`crate::share`]);
    /// a template made with one must have the same.
    pub share_tag: Option<String>,
    /// Memory that image templates may hold in all, in MiB (see
    /// [`crate::image_template`]); 0: none are made.
    pub image_template_mib: u64,
}

/// Holds a fresh VM of `size`, which has all of its size, to the `limits`.
pub(crate) async fn apply_limits<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    size: VmSize,
    limits: Limits,
) -> Result<(), RunError> {
    change_limits(vm, agent, size, Limits::default(), limits).await
}

/// Moves a VM of `size` held to `from` to `to`: the balloon takes the
/// memory beyond the limits and the agent takes vCPUs beyond them offline.
/// Only what changes is sent.
pub async fn change_limits<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    size: VmSize,
    from: Limits,
    to: Limits,
) -> Result<(), RunError> {
    let memory = to.guest_memory(size);
    if memory != from.guest_memory(size) {
        vm.set_guest_memory(memory)
            .await
            .map_err(|e| RunError::GuestMemory(Box::new(e)))?;
    }
    let cpus = to.online_cpus(size);
    if cpus != from.online_cpus(size) {
        agent
            .request_done(&Request::SetOnlineCpus { count: cpus })
            .await?;
    }
    Ok(())
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub image: String,
    pub options: ProcessOptions,
    /// Whether the caller sends stdin; otherwise the process reads /dev/null.
    pub stdin: bool,
    /// The VM's size; `None`: the daemon's default.
    pub size: Option<VmSize>,
    /// Memory and CPU limits within that size.
    pub limits: Limits,
}

/// Asynchronous requests from the caller while the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunControl {
    Resize { rows: u16, cols: u16 },
    Signal(i32),
}

/// The caller's ends of the process's stdio. Closing `stdin` is EOF;
/// `stdout`/`stderr` are bounded so a slow reader slows the process.
pub struct RunIo {
    pub stdin: mpsc::Receiver<Bytes>,
    pub stdout: mpsc::Sender<Bytes>,
    pub stderr: mpsc::Sender<Bytes>,
    pub control: mpsc::Receiver<RunControl>,
}

/// Runs containers in VMs started by `H`.
pub struct Runtime<H: Hypervisor> {
    images: Arc<ImageStore>,
    pub(crate) vms: Arc<VmFactory<H>>,
}

impl<H: Hypervisor> Runtime<H> {
    pub fn new(hypervisor: H, images: Arc<ImageStore>, config: RuntimeConfig) -> Self {
        let default_size = VmSize {
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
        };
        let pool_targets = config
            .pools
            .iter()
            .map(|(size, target)| (size.unwrap_or(default_size), *target))
            .collect();
        let vms = VmFactory::new(
            hypervisor,
            config.run_root,
            default_size,
            config.templates,
            pool_targets,
            crate::admission::Admission::new(config.admission),
        )
        .warming_in(config.warm_dir)
        .sharing(config.share_tag)
        .with_image_templates(config.image_template_mib);
        Self {
            images,
            vms: Arc::new(vms),
        }
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// Checks what can be checked before a VM starts, so an unknown image or a
    /// missing command is an error and not a failed boot.
    pub async fn prepare(&self, request: &RunRequest) -> Result<Prepared, RunError> {
        let images = self.images.clone();
        let reference = request.image.clone();
        let image = blocking(move || images.resolve(&reference)).await?;
        let process = process_config(&image.config, &request.options)?;
        let images = self.images.clone();
        let (rootfs, image) = blocking(move || Ok((images.rootfs(&image)?, image))).await?;
        Ok(Prepared {
            id: new_container_id(),
            process,
            prime: Prime::for_image(rootfs.clone(), &image.config),
            rootfs,
            stdin: request.stdin,
            size: request.size,
            limits: request.limits,
        })
    }

    /// Builds the VM template, then fills the pool, in the background;
    /// runs boot cold until the template is ready.
    pub fn prepare_template(&self) {
        self.vms.prepare();
    }

    /// The template of the default size, once templates are on.
    pub fn templates(&self) -> Option<Arc<Templates>> {
        self.vms.class(self.vms.default_size).templates.clone()
    }

    /// Every size's template so far, smallest first.
    pub fn templates_by_size(&self) -> Vec<(VmSize, Arc<Templates>)> {
        self.vms
            .classes()
            .iter()
            .filter_map(|class| Some((class.size, class.templates.clone()?)))
            .collect()
    }

    /// How the most recent VMs were started, oldest first.
    pub fn recent_starts(&self) -> Vec<crate::start::StartRecord> {
        self.vms.recent_starts()
    }

    /// Has `hook` told of every VM start from now on; only the first hook
    /// set is kept.
    pub fn on_start(&self, hook: crate::start::StartHook) {
        let _ = self.vms.on_start.set(hook);
    }

    /// The VMs this runtime holds, by size, smallest first: containers',
    /// runs', pods', idle pooled ones and template builds alike.
    pub fn vms_by_size(&self) -> Vec<(VmSize, usize)> {
        self.vms.admission.held_by_size()
    }

    /// Each pool's size, target and idle VMs, smallest first.
    pub fn pool_status(&self) -> Vec<crate::pool::PoolReport> {
        self.vms
            .classes()
            .iter()
            .filter_map(|class| {
                let pool = class.pool.as_ref()?;
                Some(crate::pool::PoolReport {
                    size: class.size,
                    target: pool.target(),
                    ready: pool.len(),
                    primed: pool.primed(),
                })
            })
            .collect()
    }

    /// Runs the prepared process in a VM of its own with `io`, and returns how
    /// it exited. The VM is gone when this returns or is dropped.
    pub async fn run(&self, prepared: Prepared, io: RunIo) -> Result<ExitStatus, RunError> {
        let id = prepared.id.clone();
        let rootfs = DiskConfig {
            id: "rootfs".into(),
            path: prepared.rootfs.clone(),
            serial: ROOTFS_SERIAL.into(),
            read_only: true,
        };
        let needs = VmNeeds {
            size: prepared.size,
            network: pooled_network(),
            prime: Some(prepared.prime.clone()),
        };
        let StartedVm {
            vm,
            agent,
            run_dir,
            network_ready,
        } = self.vms.start_with(&id, vec![rootfs], false, needs).await?;
        let exit = vm.exit();
        let size = prepared.size.unwrap_or(self.vms.default_size);
        let limited = apply_limits(&vm, &agent, size, prepared.limits);
        unless_vm_dies(&vm, exit.clone(), limited).await?;
        if !network_ready {
            let (_, network) = hull_net::user_network(&[]);
            let configure = Request::ConfigureNetwork(network);
            unless_vm_dies(&vm, exit.clone(), agent.request_done(&configure)).await?;
        }

        let create = on_rootfs(&id, &id[..12], ROOTFS_SERIAL);
        unless_vm_dies(&vm, exit.clone(), agent.request_done(&create)).await?;
        debug!(container = %id, "container created");

        let status =
            unless_vm_dies(&vm, exit.clone(), run_process(&agent, &id, prepared, io)).await?;
        debug!(container = %id, ?status, "process exited");
        // The caller has its status now; the VM ends behind it, and its
        // directory and admission go once QEMU is gone.
        vm.kill();
        let mut exit = exit;
        tokio::spawn(async move {
            let _ = exit.wait_for(Option::is_some).await;
            drop((vm, run_dir));
        });
        Ok(status)
    }
}

/// Creates container `id` on the erofs rootfs plugged in as `serial`, with
/// no writable disk and no mounts: a run's, and the warm-up's.
pub(crate) fn on_rootfs(id: &str, hostname: &str, serial: &str) -> Request {
    Request::CreateContainer(ContainerSpec {
        id: id.to_owned(),
        hostname: hostname.to_owned(),
        rootfs: RootfsSpec {
            serial: serial.into(),
            fs_type: "erofs".into(),
        },
        writable: None,
        mounts: Vec::new(),
        host_etc_files: Vec::new(),
    })
}

/// Waits for a freshly booted VM's agent to say hello.
pub(crate) async fn greet<V: Vm>(vm: &mut V) -> Result<AgentClient, RunError> {
    let control = vm.take_control_channel().expect("a new VM has its channel");
    let greeted = unless_vm_dies(vm, vm.exit(), AgentClient::handshake(vm.id(), control));
    match tokio::time::timeout(BOOT_TIMEOUT, greeted).await {
        Ok(agent) => agent,
        Err(_) => Err(RunError::BootTimeout {
            console: vm.console_tail(),
        }),
    }
}

/// What `prepare` found: the process to run and the image's rootfs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The run's container id, known before it starts so that it can be
    /// metered.
    pub id: String,
    pub process: crate::spec::ProcessConfig,
    pub rootfs: PathBuf,
    /// What the pool's next VMs are primed with.
    pub prime: Prime,
    pub stdin: bool,
    pub size: Option<VmSize>,
    pub limits: Limits,
}

async fn run_process(
    agent: &AgentClient,
    container: &str,
    prepared: Prepared,
    io: RunIo,
) -> Result<ExitStatus, RunError> {
    let process = prepared.process;
    let spec = ProcessSpec {
        container: container.to_string(),
        id: "init".into(),
        args: process.args,
        env: process.env,
        cwd: process.cwd,
        user: process.user,
        terminal: process.tty,
        stdin: prepared.stdin.then_some(STDIN),
        stdout: STDOUT,
        stderr: (!process.tty).then_some(STDERR),
        rlimits: process.rlimits,
        groups: Vec::new(),
        terminal_size: None,
    };
    let exited = agent.watch_exit(container, "init");
    let mut pumps = vec![tokio::spawn(forward(agent.open_output(STDOUT), io.stdout))];
    if spec.stderr.is_some() {
        pumps.push(tokio::spawn(forward(agent.open_output(STDERR), io.stderr)));
    }
    let input = spec.stdin.map(|stream| agent.open_input(stream));

    let pid = start_process(agent, spec).await?;
    debug!(container, pid, "process started");

    let stdin_pump = input.map(|input| {
        let mut stdin = io.stdin;
        tokio::spawn(async move {
            while let Some(chunk) = stdin.recv().await {
                if input.write(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = input.close().await;
        })
    });
    let control_pump = tokio::spawn(relay_control(
        agent.clone(),
        container.to_string(),
        io.control,
    ));

    let status = exited.await.map_err(|_| agent.lost())?;
    // The agent reports the exit after the last output, so the pumps end soon.
    for pump in pumps {
        let _ = pump.await;
    }
    control_pump.abort();
    if let Some(pump) = stdin_pump {
        pump.abort();
    }
    Ok(status)
}

async fn forward(mut output: OutputStream, to: mpsc::Sender<Bytes>) {
    while let Some(chunk) = output.recv().await {
        if to.send(chunk).await.is_err() {
            // The caller went away; keep draining so the process never blocks.
            while output.recv().await.is_some() {}
            return;
        }
    }
}

async fn relay_control(
    agent: AgentClient,
    container: String,
    mut control: mpsc::Receiver<RunControl>,
) {
    while let Some(request) = control.recv().await {
        let request = match request {
            RunControl::Signal(signal) => Request::Signal {
                container: container.clone(),
                process: "init".into(),
                signal,
            },
            RunControl::Resize { rows, cols } => Request::ResizeTerminal {
                container: container.clone(),
                process: "init".into(),
                rows,
                cols,
            },
        };
        if let Err(err) = agent.request(&request).await {
            debug!(error = %err, "control request failed");
        }
    }
}

/// How long a lost control channel may precede the VM's exit and still be
/// reported as the VM's death: both follow from one QEMU exit.
const EXIT_AFTER_DISCONNECT: Duration = Duration::from_secs(2);

/// Runs `work` unless the VM stops first, which becomes `VmDied`. A channel
/// lost because the VM died is reported as the death, not the symptom.
pub(crate) async fn unless_vm_dies<V: Vm, T, E: Into<RunError>>(
    vm: &V,
    mut exit: watch::Receiver<Option<VmExit>>,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, RunError> {
    let died = |code: VmExit| RunError::VmDied {
        exit: code,
        console: vm.console_tail(),
    };
    let result = tokio::select! {
        result = work => result.map_err(Into::into),
        code = wait_exit(&mut exit) => return Err(died(code)),
    };
    match result {
        // A channel lost to a dying VM: the VM's end is what to report, and
        // the loss may be seen first however the channel learnt of it.
        Err(RunError::Agent(lost @ (AgentError::Disconnected | AgentError::Closed { .. }))) => {
            match tokio::time::timeout(EXIT_AFTER_DISCONNECT, wait_exit(&mut exit)).await {
                Ok(code) => Err(died(code)),
                Err(_) => Err(lost.into()),
            }
        }
        other => other,
    }
}

/// Starts a process; the agent's refusals become the errors docker's exit
/// codes follow (127, 126).
pub(crate) async fn start_process(agent: &AgentClient, spec: ProcessSpec) -> Result<i32, RunError> {
    match agent.request(&Request::StartProcess(spec)).await {
        Ok(Response::Started { pid }) => Ok(pid),
        Ok(other) => Err(AgentError::UnexpectedResponse(other).into()),
        Err(AgentError::Refused(refusal)) => Err(match refusal.kind {
            ErrorKind::CommandNotFound => RunError::CommandNotFound(refusal.message),
            ErrorKind::CommandNotExecutable => RunError::CommandNotExecutable(refusal.message),
            ErrorKind::InvalidRequest => RunError::InvalidProcess(refusal.message),
            _ => AgentError::Refused(refusal).into(),
        }),
        Err(other) => Err(other.into()),
    }
}

pub(crate) async fn wait_exit(exit: &mut watch::Receiver<Option<VmExit>>) -> VmExit {
    match exit.wait_for(Option::is_some).await {
        Ok(code) => (*code).expect("waited for an exit"),
        // The sender lives as long as the QEMU child's waiter task.
        Err(_) => VmExit::Exited(-1),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RunError> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("image store tasks do not panic")
        .map_err(RunError::from)
}

/// A 64-hex-digit id like docker's.
pub use hull_net::records::new_id as new_container_id;
pub(crate) use hull_net::records::random_bytes;

/// A VM's place on the host: its directory, removed when dropped, and its
/// admission, given back then. It lives exactly as long as the VM.
pub struct RunDir {
    pub(crate) path: PathBuf,
    _ticket: crate::admission::Ticket,
}

impl RunDir {
    /// The existing directory of a VM taken back from an earlier hulld.
    pub(crate) fn adopt(path: PathBuf, ticket: crate::admission::Ticket) -> Self {
        Self {
            path,
            _ticket: ticket,
        }
    }

    pub(crate) fn create(
        path: PathBuf,
        ticket: crate::admission::Ticket,
    ) -> Result<Self, RunError> {
        fs::create_dir_all(&path).map_err(|source| RunError::RunDir {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            _ticket: ticket,
        })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        remove_vm_dir(&self.path);
    }
}

/// Removes a VM's directory, its share's binds released first: the tree
/// goes only once the share is gone, so nothing is ever removed through a
/// bind (a volume, a host directory) that stayed mounted.
pub fn remove_vm_dir(path: &Path) {
    if crate::share::Share::of(path).release_all() {
        remove_dir(path);
    } else {
        warn!(dir = %path.display(), "host directories stay mounted in the VM's share; leaving its directory");
    }
}

pub(crate) fn remove_dir(path: &Path) {
    if let Err(err) = fs::remove_dir_all(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %err, "cannot remove a directory");
        }
    }
}
