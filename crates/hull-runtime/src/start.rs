//! How a run gets its VM: from the pool, as a template clone, or by a cold
//! boot, each one falling back to the next.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hull_proto::Request;
use hull_vm::{DiskConfig, HostShare, Hypervisor, MemoryFile, NetBackend, Vm, VmConfig};
use tracing::{info, warn};

use crate::agent::AgentClient;
use crate::pool::{Pool, PooledVm};
use crate::run::{
    greet, new_container_id, random_bytes, unless_vm_dies, RunDir, RunError, BOOT_TIMEOUT,
};
use crate::size::VmSize;
use crate::template::{Template, Templates};

/// A VM with a ready agent and its rootfs attached.
pub(crate) struct StartedVm<V> {
    pub vm: V,
    pub agent: AgentClient,
    pub run_dir: RunDir,
}

/// What a VM needs beyond its disks.
pub(crate) struct VmNeeds {
    /// `None`: the factory's size.
    pub size: Option<VmSize>,
    pub network: NetBackend,
    pub shares: Vec<HostShare>,
}

/// Starts remembered for `hull info`.
const START_HISTORY: usize = 20;

/// How one VM was started, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRecord {
    pub vm: String,
    /// `pool`, `template clone` or `cold boot`.
    pub path: &'static str,
    pub elapsed_ms: u64,
    pub at: std::time::SystemTime,
}

/// Builds VMs of one size.
pub(crate) struct VmFactory<H: Hypervisor> {
    pub hypervisor: Arc<H>,
    pub templates: Option<Arc<Templates>>,
    pub pool: Option<Arc<Pool<H::Vm>>>,
    pub run_root: std::path::PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub starts: std::sync::Mutex<std::collections::VecDeque<StartRecord>>,
}

impl<H: Hypervisor> VmFactory<H> {
    fn config(&self, id: &str, run_dir: &Path, disks: Vec<DiskConfig>, detached: bool) -> VmConfig {
        VmConfig {
            id: id.to_string(),
            run_dir: run_dir.to_owned(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            disks,
            memory_file: None,
            restore_from: None,
            detached,
            network: NetBackend::Isolated,
            shares: Vec::new(),
        }
    }

    /// Builds the template, then fills the pool, in the background.
    pub fn prepare(self: &Arc<Self>) {
        let Some(templates) = self.templates.clone() else {
            return;
        };
        let factory = self.clone();
        tokio::spawn(async move {
            let _ = templates
                .build(&*factory.hypervisor, factory.vcpus, factory.memory_mib)
                .await;
            factory.fill_pool().await;
        });
    }

    /// Adds clones to the pool until it is full; one task at a time.
    async fn fill_pool(&self) {
        let (Some(pool), Some(templates)) = (&self.pool, &self.templates) else {
            return;
        };
        if !pool.start_filling() {
            return;
        }
        while pool.missing() > 0 {
            let Some(template) = templates.ready() else {
                break;
            };
            let id = format!("pool-{}", &new_container_id()[..12]);
            let cloned = async {
                let run_dir = RunDir::create(self.run_root.join(&id))?;
                let (vm, agent) = self
                    .clone_template(&template, &id, &run_dir.path, false, pooled_network())
                    .await?;
                Ok::<_, RunError>(PooledVm { vm, agent, run_dir })
            };
            match cloned.await {
                Ok(pooled) => pool.add(pooled),
                Err(err) => {
                    warn!(error = %err, "cannot add a VM to the pool");
                    break;
                }
            }
        }
        pool.stop_filling();
    }

    /// A VM for container `id` with `disks` attached, of the factory's
    /// size, its network device on the user-mode network (as pooled VMs'
    /// are). A `detached` one outlives hulld (see [`VmConfig::detached`]);
    /// pooled VMs are not, so it is cloned or booted.
    pub async fn start(
        self: &Arc<Self>,
        id: &str,
        disks: Vec<DiskConfig>,
        detached: bool,
    ) -> Result<StartedVm<H::Vm>, RunError> {
        let needs = VmNeeds {
            size: None,
            network: pooled_network(),
            shares: Vec::new(),
        };
        self.start_with(id, disks, detached, needs).await
    }

    /// As [`Self::start`], with what `needs` says. The pool and the
    /// template have the factory's size, no 9p device and (pooled VMs) the
    /// user-mode network without forwarded ports: another size or shares
    /// boot cold, another network is cloned or booted.
    pub async fn start_with(
        self: &Arc<Self>,
        id: &str,
        disks: Vec<DiskConfig>,
        detached: bool,
        needs: VmNeeds,
    ) -> Result<StartedVm<H::Vm>, RunError> {
        let VmNeeds {
            size,
            network,
            shares,
        } = needs;
        let own_size = VmSize {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
        };
        let size = size.filter(|s| *s != own_size);
        // The template has neither another size nor 9p devices.
        if size.is_some() || !shares.is_empty() {
            let run_dir = RunDir::create(self.run_root.join(id))?;
            let mut config = self.config(id, &run_dir.path, disks, detached);
            if let Some(size) = size {
                config.vcpus = size.vcpus;
                config.memory_mib = size.memory_mib;
            }
            config.network = network;
            config.shares = shares;
            return self.boot(config, run_dir, Instant::now()).await;
        }
        let started = Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        let pooled = match (&self.pool, detached) {
            (Some(pool), false) if network == pooled_network() => pool.take(),
            _ => None,
        };
        if let Some(pooled) = pooled {
            let factory = self.clone();
            tokio::spawn(async move { factory.fill_pool().await });
            match attach(&pooled.vm, &disks).await {
                Ok(()) => {
                    self.record_start(id, "pool", elapsed_ms());
                    return Ok(StartedVm {
                        vm: pooled.vm,
                        agent: pooled.agent,
                        run_dir: pooled.run_dir,
                    });
                }
                Err(err) => warn!(error = %err, "a pooled VM refused its rootfs; cloning"),
            }
        }
        let run_dir = RunDir::create(self.run_root.join(id))?;
        if let Some(template) = self.templates.as_ref().and_then(|t| t.ready()) {
            let cloned = async {
                let (vm, agent) = self
                    .clone_template(&template, id, &run_dir.path, detached, network.clone())
                    .await?;
                if let Err(err) = attach(&vm, &disks).await {
                    vm.kill();
                    return Err(err);
                }
                Ok::<_, RunError>((vm, agent))
            };
            match cloned.await {
                Ok((vm, agent)) => {
                    self.record_start(id, "template clone", elapsed_ms());
                    return Ok(StartedVm { vm, agent, run_dir });
                }
                Err(err) => {
                    warn!(error = %err, "cloning the VM template failed; rebuilding it, booting cold");
                    if let Some(templates) = &self.templates {
                        templates.invalidate(&template);
                    }
                    self.prepare();
                }
            }
        }
        let mut config = self.config(id, &run_dir.path, disks, detached);
        config.network = network;
        let started_vm = self.boot(config, run_dir, started).await?;
        // A template that went missing (removed, or failed) is built again.
        if self
            .templates
            .as_ref()
            .is_some_and(|t| t.status() == "missing")
        {
            self.prepare();
        }
        Ok(started_vm)
    }

    /// Boots a VM cold and waits for its agent.
    async fn boot(
        &self,
        config: VmConfig,
        run_dir: RunDir,
        started: Instant,
    ) -> Result<StartedVm<H::Vm>, RunError> {
        let id = config.id.clone();
        let mut vm = self
            .hypervisor
            .start(config)
            .await
            .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
        let greeted = async {
            let agent = greet(&mut vm).await?;
            // The VM has no RTC: its clock starts from the host's.
            let exit = vm.exit();
            let resume = clock_and_entropy();
            unless_vm_dies(&vm, exit, agent.request_done(&resume)).await?;
            Ok::<_, RunError>(agent)
        };
        let agent = match greeted.await {
            Ok(agent) => agent,
            Err(err) => {
                vm.kill();
                return Err(err);
            }
        };
        self.record_start(&id, "cold boot", started.elapsed().as_millis() as u64);
        Ok(StartedVm { vm, agent, run_dir })
    }

    fn record_start(&self, vm: &str, path: &'static str, elapsed_ms: u64) {
        info!(container = %vm, start = path, elapsed_ms, "VM ready");
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        if starts.len() == START_HISTORY {
            starts.pop_front();
        }
        starts.push_back(StartRecord {
            vm: vm.to_owned(),
            path,
            elapsed_ms,
            at: SystemTime::now(),
        });
    }

    /// The most recent starts, oldest first.
    pub fn recent_starts(&self) -> Vec<StartRecord> {
        let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts.iter().cloned().collect()
    }

    /// Resumes a clone of `template` and gives it its own clock and entropy.
    async fn clone_template(
        &self,
        template: &Template,
        id: &str,
        run_dir: &Path,
        detached: bool,
        network: NetBackend,
    ) -> Result<(H::Vm, AgentClient), RunError> {
        let mut config = self.config(id, run_dir, Vec::new(), detached);
        config.network = network;
        config.memory_file = Some(MemoryFile {
            path: template.memory.clone(),
            shared: false,
        });
        config.restore_from = Some(template.state.clone());
        let mut vm = self
            .hypervisor
            .start(config)
            .await
            .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
        let control = vm.take_control_channel().expect("a new VM has its channel");
        let agent = AgentClient::resumed(control);
        let resume = clock_and_entropy();
        let resumed = unless_vm_dies(&vm, vm.exit(), agent.request_done(&resume));
        let result = match tokio::time::timeout(BOOT_TIMEOUT, resumed).await {
            Ok(result) => result,
            Err(_) => Err(RunError::BootTimeout {
                console: vm.console_tail(),
            }),
        };
        if let Err(err) = result {
            vm.kill();
            return Err(err);
        }
        Ok((vm, agent))
    }
}

/// Sets a new VM's clock from the host's (VMs have no RTC) and reseeds its
/// random number generator, so that no two clones share either.
pub fn clock_and_entropy() -> Request {
    Request::Resume {
        unix_time_nanos: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        entropy: random_bytes::<64>().to_vec(),
    }
}

/// The network of pooled VMs: the user-mode one, no ports forwarded.
fn pooled_network() -> NetBackend {
    NetBackend::User {
        forwards: Vec::new(),
    }
}

async fn attach<V: Vm>(vm: &V, disks: &[DiskConfig]) -> Result<(), RunError> {
    for disk in disks {
        let attached = tokio::time::timeout(Duration::from_secs(30), vm.attach_disk(disk));
        match attached.await {
            Ok(result) => result.map_err(|e| RunError::Hypervisor(Box::new(e)))?,
            Err(_) => {
                return Err(RunError::BootTimeout {
                    console: vm.console_tail(),
                })
            }
        }
    }
    Ok(())
}
