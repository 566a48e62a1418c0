//! The sandbox's VM: booted for its first container, given each container's
//! rootfs disk by hot-plug and rid of it by unplug when the container goes,
//! paused and resumed with QMP, and powered off when its last container is
//! gone.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hull_proto::{MountSource, MountSpec, Request};
use hull_runtime::size::{Limits, VmSize};
use hull_runtime::{AgentClient, AgentError, TemplateConfig, Templates};
use hull_vm::accel::{self, SystemProbe};
use hull_vm::{
    ArtifactError, ArtifactSources, DiskConfig, GuestArtifacts, HostShare, Hypervisor, NetBackend,
    Qemu, QemuError, QemuVm, Vm, VmConfig, VmExit,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::binds::{Bind, BindError};
use crate::config::{ConfigError, ShimConfig};
use crate::podnet::{PodNetError, PodNetwork};
use hull_runtime::share::Share;

/// The tag of the sandbox's one virtio-9p share, where the host
/// directories bind-mounted into its containers appear.
pub const SHARE_TAG: &str = "hullshim";

/// A cold boot under TCG takes seconds; a wedged one is reported.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a powered-off guest may take to end its QEMU.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot find the guest's kernel and agent")]
    Artifacts(#[from] ArtifactError),
    #[error("cannot create the VM directory {}", .path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Share(#[from] hull_runtime::share::ShareError),
    #[error("cannot start the sandbox's VM")]
    Start(#[source] QemuError),
    #[error("the sandbox's VM did not come up within {}s; its console ends with:\n{console}", BOOT_TIMEOUT.as_secs())]
    BootTimeout { console: String },
    #[error("the sandbox's VM stopped ({exit}); its console ends with:\n{console}")]
    Died { exit: VmExit, console: String },
    #[error("cannot build the sandbox VM template")]
    Template(#[source] hull_runtime::RunError),
    #[error("cannot reach the guest agent")]
    Agent(#[from] AgentError),
    #[error("cannot plug the rootfs {} into the VM", .path.display())]
    AttachDisk {
        path: PathBuf,
        #[source]
        source: QemuError,
    },
    #[error("cannot keep sandbox templates")]
    TemplateDir(#[from] hull_runtime::TemplateDirError),
    #[error("cannot give the VM the pod's network")]
    PodNetwork(#[from] PodNetError),
    #[error("cannot hold the guest to its limits")]
    Hold(#[source] hull_runtime::RunError),
    #[error("cannot unplug the disk {id} from the VM")]
    DetachDisk {
        id: String,
        #[source]
        source: QemuError,
    },
    #[error("cannot {action} the VM over QMP")]
    Qmp {
        action: &'static str,
        #[source]
        source: hull_vm::qmp::QmpError,
    },
}

/// QEMU with the guest's kernel and agent, on the accelerator this host has.
async fn hypervisor(config: &ShimConfig) -> Result<Qemu, SandboxError> {
    let accel = accel::decide(config.accel_choice()?, &SystemProbe, false);
    info!("{}", accel.reason);
    let sources = ArtifactSources {
        kernel: config.kernel.clone(),
        agent: config.agent.clone(),
    };
    let cache = config.cache_dir.join("artifacts");
    let artifacts = tokio::task::spawn_blocking(move || GuestArtifacts::prepare(&sources, &cache))
        .await
        .expect("preparing artifacts does not panic")?;
    Ok(Qemu::new(accel.accel, artifacts))
}

/// The template of sandbox VMs of `size`; `None` when this QEMU cannot
/// keep a clone from writing its template, so sandboxes boot cold.
fn templates(
    config: &ShimConfig,
    qemu: &Qemu,
    size: VmSize,
) -> Result<Option<Templates>, SandboxError> {
    if !qemu.can_clone() {
        return Ok(None);
    }
    hull_runtime::template::ensure_dir(&config.template_dir)?;
    let shape = TemplateConfig {
        dir: config.template_dir.clone(),
        key: qemu.template_key(),
        share_tag: Some(SHARE_TAG.into()),
    };
    Ok(Some(Templates::new(shape.for_size(size))))
}

/// The argument that makes the shim build a template and exit.
pub const BUILD_TEMPLATE: &str = "build-template";

/// Builds the sandbox template of `size` unless one is ready or being
/// built (by another process, which holds the template directory's lock).
pub async fn build_template(config: &ShimConfig, size: VmSize) -> Result<(), SandboxError> {
    let qemu = hypervisor(config).await?;
    let Some(templates) = templates(config, &qemu, size)? else {
        return Ok(());
    };
    if templates.status() == "ready" {
        return Ok(());
    }
    templates
        .build(&qemu, size.vcpus, size.memory_mib)
        .await
        .map_err(SandboxError::Template)
}

/// Starts this binary as the builder of the template of `size`, in a
/// process group of its own, with the shim's environment, and reaps it
/// when it is done.
fn spawn_template_builder(size: VmSize) {
    let spawned = std::env::current_exe().and_then(|shim| {
        std::process::Command::new(shim)
            .args([BUILD_TEMPLATE, &size.token()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    match spawned {
        Ok(mut builder) => {
            std::thread::spawn(move || builder.wait());
        }
        Err(e) => warn!(error = %e, "cannot start the sandbox template's builder"),
    }
}

/// What the sandbox's VM is made of, from its first container.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    pub size: VmSize,
    /// The pod's network namespace, whose interface the VM takes over.
    pub netns: Option<PathBuf>,
}

/// A container's rootfs image plugged into the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsDisk {
    /// The VM's name of the disk, to unplug it by.
    pub id: String,
    /// The SCSI serial the agent finds it by.
    pub serial: String,
}

/// One VM and the connection to its agent.
pub struct Sandbox {
    vm: QemuVm,
    agent: AgentClient,
    run_dir: PathBuf,
    next_disk: AtomicU32,
    size: VmSize,
    network: Option<PodNetwork>,
    /// What the guest is held to now; a new VM has all of its size.
    hold: tokio::sync::Mutex<Limits>,
    /// Keeps the VM's console log to its cap while the VM runs.
    console_cap: tokio::task::JoinHandle<()>,
}

impl Sandbox {
    /// Boots the VM of the sandbox `grouping` of containerd's `namespace`
    /// as `plan` says, and waits for its agent.
    pub async fn boot(
        config: &ShimConfig,
        namespace: &str,
        grouping: &str,
        plan: &SandboxPlan,
    ) -> Result<Self, SandboxError> {
        let qemu = hypervisor(config).await?;
        // containerd's ids are long; a short, unique directory name keeps
        // the VM's socket paths within the 108 bytes a Unix address holds.
        // Ids are unique per namespace only.
        let name = short_name(&format!("{namespace}-{grouping}"));
        let run_dir = config.run_root.join(&name);
        // A shim that died left its directory, perhaps with binds in it.
        remove_run_dir(&run_dir);
        let share = Share::of(&run_dir);
        share.prepare()?;
        let network = match &plan.netns {
            Some(netns) => PodNetwork::attach(netns)?,
            None => None,
        };
        let vm_config = VmConfig {
            id: format!("shim-{name}"),
            run_dir: run_dir.clone(),
            vcpus: plan.size.vcpus,
            memory_mib: plan.size.memory_mib,
            disks: Vec::new(),
            memory_file: None,
            restore_from: None,
            detached: false,
            // Without a pod network (`ctr run` without `--with-ns`), the
            // containers have loopback only, as runc's would.
            network: network
                .as_ref()
                .map_or(NetBackend::Isolated, PodNetwork::backend),
            shares: vec![HostShare {
                tag: SHARE_TAG.into(),
                path: share.path(),
                read_only: false,
            }],
        };
        // A guest that prints without end would fill the host's disk.
        let console_cap = hull_runtime::console::keep_vm_capped(run_dir.clone());
        let started = Self::start_vm(config, &qemu, plan.size, vm_config).await;
        let (vm, agent) = match started {
            Ok(started) => started,
            Err(err) => {
                console_cap.abort();
                if let Some(network) = &network {
                    network.detach();
                }
                return Err(err);
            }
        };
        let sandbox = Self {
            vm,
            agent,
            console_cap,
            run_dir,
            next_disk: AtomicU32::new(0),
            size: plan.size,
            network,
            hold: tokio::sync::Mutex::new(Limits::default()),
        };
        if let Some(network) = &sandbox.network {
            // Before the first container, which finds its interface up.
            let configure = Request::ConfigureNetwork(network.guest_network());
            if let Err(err) = sandbox.request_done(&configure).await {
                sandbox.shutdown().await;
                return Err(err);
            }
        }
        Ok(sandbox)
    }

    /// A clone of the template of `size` if one is ready, else a cold boot
    /// (after which the template is built for the next sandbox, by a
    /// process of its own that outlives this sandbox and its shim).
    async fn start_vm(
        config: &ShimConfig,
        qemu: &Qemu,
        size: VmSize,
        vm_config: VmConfig,
    ) -> Result<(QemuVm, AgentClient), SandboxError> {
        let templates = if config.templates {
            templates(config, qemu, size)?
        } else {
            None
        };
        if let Some(template) = templates.as_ref().and_then(|t| t.ready()) {
            match hull_runtime::template::clone_vm(qemu, &template, vm_config.clone()).await {
                Ok((vm, agent)) => {
                    info!(vm = %vm.id(), %size, "sandbox VM cloned from its template");
                    return Ok((vm, agent));
                }
                Err(err) => {
                    warn!(error = %hull_runtime::error_chain(&err), "cloning the sandbox template failed; booting cold");
                    if let Some(templates) = &templates {
                        templates.invalidate(&template);
                    }
                }
            }
        }
        let booted = Self::boot_cold(qemu, vm_config).await?;
        if templates.is_some_and(|t| t.status() == "missing") {
            spawn_template_builder(size);
        }
        Ok(booted)
    }

    async fn boot_cold(
        qemu: &Qemu,
        vm_config: VmConfig,
    ) -> Result<(QemuVm, AgentClient), SandboxError> {
        let mut vm = qemu.start(vm_config).await.map_err(SandboxError::Start)?;
        let control = vm.take_control_channel().expect("a new VM has its channel");
        let greeted = unless_vm_dies(&vm, async {
            let agent = AgentClient::handshake(vm.id(), control).await?;
            // The VM has no RTC: its clock starts from the host's.
            agent
                .request_done(&hull_runtime::clock_and_entropy())
                .await?;
            Ok(agent)
        });
        let agent = match tokio::time::timeout(BOOT_TIMEOUT, greeted).await {
            Ok(agent) => agent?,
            Err(_) => {
                return Err(SandboxError::BootTimeout {
                    console: vm.console_tail(),
                })
            }
        };
        info!(vm = %vm.id(), "sandbox VM booted");
        Ok((vm, agent))
    }

    pub fn size(&self) -> VmSize {
        self.size
    }

    /// Holds the guest to `limits` within the VM's size: the balloon
    /// leaves it that much memory, and the vCPUs beyond the CPUs (rounded
    /// up) go offline. Only what changed is sent.
    pub async fn hold(&self, limits: Limits) -> Result<(), SandboxError> {
        let mut held = self.hold.lock().await;
        unless_vm_dies(&self.vm, async {
            hull_runtime::run::change_limits(&self.vm, &self.agent, self.size, *held, limits)
                .await
                .map_err(SandboxError::Hold)
        })
        .await?;
        *held = limits;
        Ok(())
    }

    /// The VM's 9p share.
    pub fn share(&self) -> Share {
        Share::of(&self.run_dir)
    }

    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    pub fn exit(&self) -> watch::Receiver<Option<VmExit>> {
        self.vm.exit()
    }

    pub fn console_tail(&self) -> String {
        self.vm.console_tail()
    }

    /// Hot-plugs a read-only rootfs image.
    pub async fn attach_rootfs(&self, image: &Path) -> Result<RootfsDisk, SandboxError> {
        let n = self.next_disk.fetch_add(1, Ordering::Relaxed);
        let disk = DiskConfig {
            id: format!("rootfs{n}"),
            path: image.to_owned(),
            serial: format!("hull-shim-{n}"),
            read_only: true,
        };
        unless_vm_dies(&self.vm, async {
            self.vm
                .attach_disk(&disk)
                .await
                .map_err(|source| SandboxError::AttachDisk {
                    path: image.to_owned(),
                    source,
                })
        })
        .await?;
        Ok(RootfsDisk {
            id: disk.id,
            serial: disk.serial,
        })
    }

    /// Unplugs a rootfs disk whose container the agent removed.
    pub async fn detach_rootfs(&self, disk: &RootfsDisk) -> Result<(), SandboxError> {
        unless_vm_dies(&self.vm, async {
            self.vm
                .detach_disk(&disk.id)
                .await
                .map_err(|source| SandboxError::DetachDisk {
                    id: disk.id.clone(),
                    source,
                })
        })
        .await
    }

    /// Puts a container's host directories into the share, and says where
    /// the agent finds them.
    pub fn share_dirs(&self, id: &str, dirs: &[Bind]) -> Result<Vec<MountSpec>, BindError> {
        let (share, name) = (self.share(), short_name(id));
        let mut mounts = Vec::new();
        for (index, bind) in dirs.iter().enumerate() {
            let path = share.mount(&name, index, &bind.source, bind.read_only)?;
            mounts.push(MountSpec {
                source: MountSource::HostSubdir {
                    tag: SHARE_TAG.into(),
                    path,
                },
                target: bind.destination.clone(),
                read_only: bind.read_only,
                copy_up: false,
            });
        }
        Ok(mounts)
    }

    /// Has the agent remove a deleted container, then unplugs its disk and
    /// takes its host directories out of the share. A failure costs only
    /// a disk that stays plugged (and mounts in the VM) until the VM ends.
    pub async fn remove_container(&self, id: &str, disk: &RootfsDisk) {
        let request = Request::RemoveContainer {
            container: id.to_owned(),
        };
        let removed = self.request_done(&request).await;
        self.share().release(&short_name(id));
        let detached = match removed {
            Ok(()) => self.detach_rootfs(disk).await,
            Err(err) => Err(err),
        };
        match detached {
            Ok(()) => info!(container = id, disk = %disk.id, "container removed from the VM"),
            Err(err) => {
                let error = hull_runtime::error_chain(&err);
                warn!(
                    container = id,
                    error, "the container's disk stays in the VM"
                );
            }
        }
    }

    /// Undoes what a container's create did before the agent made it.
    pub async fn forget_container(&self, id: &str, disk: &RootfsDisk) {
        self.share().release(&short_name(id));
        if let Err(err) = self.detach_rootfs(disk).await {
            let error = hull_runtime::error_chain(&err);
            warn!(
                container = id,
                error, "the disk of a container not created stays in the VM"
            );
        }
    }

    /// Runs `request` unless the VM stops first.
    pub async fn request(&self, request: &Request) -> Result<hull_proto::Response, SandboxError> {
        unless_vm_dies(&self.vm, async { Ok(self.agent.request(request).await?) }).await
    }

    pub async fn request_done(&self, request: &Request) -> Result<(), SandboxError> {
        unless_vm_dies(&self.vm, async {
            Ok(self.agent.request_done(request).await?)
        })
        .await
    }

    /// Stops the VM's vCPUs (QMP `stop`): every container in it pauses.
    pub async fn pause(&self) -> Result<(), SandboxError> {
        self.qmp("stop", "pause").await
    }

    pub async fn resume(&self) -> Result<(), SandboxError> {
        self.qmp("cont", "resume").await
    }

    async fn qmp(&self, command: &str, action: &'static str) -> Result<(), SandboxError> {
        self.vm
            .qmp(command, None)
            .await
            .map(drop)
            .map_err(|source| SandboxError::Qmp { action, source })
    }

    /// Stops the VM now, as hulld stops one whose guest does not answer:
    /// QMP `quit`, then SIGKILL. Returns once QEMU is gone; every
    /// container of the sandbox is then reported exited.
    pub async fn halt(&self) {
        hull_runtime::halt::halt(&self.vm).await;
    }

    /// Asks the guest to power off, and halts the VM if it does not.
    pub async fn shutdown(&self) {
        let mut exit = self.vm.exit();
        if exit.borrow().is_none() {
            match self.agent.request_done(&Request::Shutdown).await {
                Ok(()) => {
                    let off = exit.wait_for(Option::is_some);
                    if tokio::time::timeout(POWEROFF_TIMEOUT, off).await.is_err() {
                        warn!("the guest did not power off; halting its VM");
                    }
                }
                Err(err) => {
                    warn!(error = %err, "the guest did not take the shutdown; halting its VM")
                }
            }
            self.halt().await;
        }
        self.console_cap.abort();
        if let Some(network) = &self.network {
            network.detach();
        }
        remove_run_dir(&self.run_dir);
    }
}

/// Removes a VM's directory, its share's binds released first: the tree
/// goes only if the share is gone, so nothing is ever removed through a
/// bind that stayed mounted.
fn remove_run_dir(run_dir: &Path) {
    let share = Share::of(run_dir);
    if share.release_all() {
        let _ = std::fs::remove_dir_all(run_dir);
    } else {
        warn!(dir = %share.path().display(), "host directories stay mounted in the sandbox's share; leaving it");
    }
}

/// Runs `work` unless the VM stops first, which becomes `Died`.
async fn unless_vm_dies<T>(
    vm: &QemuVm,
    work: impl std::future::Future<Output = Result<T, SandboxError>>,
) -> Result<T, SandboxError> {
    let mut exit = vm.exit();
    tokio::select! {
        result = work => result,
        died = exit.wait_for(Option::is_some) => {
            let exit = died.ok().and_then(|e| *e).unwrap_or(VmExit::Exited(-1));
            Err(SandboxError::Died { exit, console: vm.console_tail() })
        }
    }
}

/// A file name of at most 24 characters for a containerd id.
pub fn short_name(id: &str) -> String {
    let clean: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if clean.len() <= 24 && clean.len() == id.len() && !clean.is_empty() {
        return clean;
    }
    // FNV-1a: stable across runs, so a restarted shim finds the same name.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_stay_and_long_ones_are_hashed() {
        assert_eq!(short_name("default-t1"), "default-t1");
        let long = "a".repeat(64);
        assert_eq!(short_name(&long).len(), 16);
        assert_eq!(short_name(&long), short_name(&long));
        assert_ne!(short_name(&long), short_name(&"b".repeat(64)));
        assert_ne!(short_name("a/b"), "ab");
    }
}
