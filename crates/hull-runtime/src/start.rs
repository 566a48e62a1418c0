//! How a run gets its VM: from the pool, as a template clone, or by a cold
//! boot, each one falling back to the next.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hull_proto::Request;
use hull_vm::{DiskConfig, HostShare, Hypervisor, NetBackend, Vm, VmConfig};
use tracing::{info, warn};

use crate::agent::AgentClient;
use crate::pool::Pool;
use crate::prime::Prime;
use crate::run::{greet, random_bytes, unless_vm_dies, RunDir, RunError};
use crate::share::Share;
use crate::size::VmSize;
use crate::template::{Template, TemplateConfig, Templates};

/// A VM with a ready agent and its rootfs attached.
pub(crate) struct StartedVm<V> {
    pub vm: V,
    pub agent: AgentClient,
    pub run_dir: RunDir,
    /// Its network is the pooled VMs' one, configured by the warm-up.
    pub network_ready: bool,
}

/// What a VM needs beyond its disks.
pub(crate) struct VmNeeds {
    /// `None`: the factory's size.
    pub size: Option<VmSize>,
    pub network: NetBackend,
    /// What the run's VM, and so the size's next pooled VMs, are primed
    /// with: runs that may take a pooled VM say.
    pub prime: Option<Prime>,
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

/// Told of every start as it is recorded: how the operator's metrics
/// learn of starts without the runtime knowing of them.
pub type StartHook = Box<dyn Fn(&StartRecord) + Send + Sync>;

/// A size's template and pool of resumed clones.
pub(crate) struct SizeClass<V> {
    pub size: VmSize,
    pub templates: Option<Arc<Templates>>,
    pub pool: Option<Arc<Pool<V>>>,
    /// What new pooled VMs get primed with.
    pub priming: Mutex<crate::prime::Priming>,
}

impl<V> SizeClass<V> {
    pub(crate) fn priming(&self) -> std::sync::MutexGuard<'_, crate::prime::Priming> {
        self.priming.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Builds VMs: each size has a template of its own, made on its first use,
/// and a pool if the daemon was asked to keep one for it.
pub(crate) struct VmFactory<H: Hypervisor> {
    pub hypervisor: Arc<H>,
    pub run_root: std::path::PathBuf,
    /// The size of VMs that ask for none.
    pub default_size: VmSize,
    /// Where templates live and the digest of what they are built from,
    /// but their size; `None`: every VM boots cold.
    pub templates: Option<TemplateConfig>,
    /// Idle clones to keep, by size.
    pub pool_targets: BTreeMap<VmSize, usize>,
    pub classes: Mutex<BTreeMap<VmSize, Arc<SizeClass<H::Vm>>>>,
    pub starts: std::sync::Mutex<std::collections::VecDeque<StartRecord>>,
    pub on_start: std::sync::OnceLock<StartHook>,
    pub admission: Arc<crate::admission::Admission>,
    /// Where the warm-up rootfs is kept; `None`: pooled VMs are not warmed.
    pub warm_dir: Option<std::path::PathBuf>,
    /// The warm-up rootfs, once built; `None` in it: it cannot be.
    pub warm_rootfs: tokio::sync::OnceCell<Option<std::path::PathBuf>>,
    /// The mount tag of every VM's 9p share; `None`: VMs have none.
    pub share_tag: Option<String>,
    /// Templates with an image's rootfs in; `None` without templates.
    pub image_templates: Option<crate::image_template::ImageTemplates>,
}

impl<H: Hypervisor> VmFactory<H> {
    pub fn new(
        hypervisor: H,
        run_root: std::path::PathBuf,
        default_size: VmSize,
        templates: Option<TemplateConfig>,
        pool_targets: BTreeMap<VmSize, usize>,
        admission: Arc<crate::admission::Admission>,
    ) -> Self {
        let factory = Self {
            hypervisor: Arc::new(hypervisor),
            run_root,
            default_size,
            templates,
            pool_targets,
            classes: Mutex::default(),
            starts: Default::default(),
            on_start: std::sync::OnceLock::new(),
            admission,
            warm_dir: None,
            warm_rootfs: tokio::sync::OnceCell::new(),
            share_tag: None,
            image_templates: None,
        };
        // Templates of sizes in use before a restart are picked up (or,
        // if outdated, removed) now, so `template ls` shows them and their
        // memory is not left on tmpfs unaccounted for.
        if let Some(config) = &factory.templates {
            for entry in std::fs::read_dir(&config.dir)
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == crate::template::IMAGES_DIR {
                    continue;
                }
                match parse_token(&name) {
                    Some(size) => {
                        factory.class(size);
                    }
                    None => {
                        info!(path = %entry.path().display(), "removing an outdated VM template");
                        let _ = std::fs::remove_dir_all(entry.path());
                    }
                }
            }
        }
        factory
    }

    /// Warms pooled VMs with a rootfs kept in `dir` (see [`crate::warm`]).
    pub fn warming_in(mut self, dir: Option<std::path::PathBuf>) -> Self {
        self.warm_dir = dir;
        self
    }

    /// Gives every VM a 9p share under `tag`, through which directories
    /// reach it while it runs.
    pub fn sharing(mut self, tag: Option<String>) -> Self {
        self.share_tag = tag;
        self
    }

    /// Keeps image templates within `budget_mib` of memory; after
    /// [`Self::sharing`], whose tag they carry.
    pub fn with_image_templates(mut self, budget_mib: u64) -> Self {
        self.image_templates = self.templates.as_ref().map(|base| {
            let base = TemplateConfig {
                share_tag: self.share_tag.clone().or(base.share_tag.clone()),
                ..base.clone()
            };
            crate::image_template::ImageTemplates::new(base, budget_mib)
        });
        self
    }

    /// The warm-up rootfs, built on first use; `None` when warming is off
    /// or the rootfs cannot be built (pooled VMs then go out unwarmed).
    pub(crate) async fn warm_rootfs(&self) -> Option<std::path::PathBuf> {
        let dir = self.warm_dir.clone()?;
        self.warm_rootfs
            .get_or_init(|| async move {
                let built = tokio::task::spawn_blocking(move || crate::warm::rootfs(&dir))
                    .await
                    .expect("building the warm-up rootfs does not panic");
                built
                    .inspect_err(
                        |err| warn!(error = %crate::error_chain(err), "pooled VMs go out unwarmed"),
                    )
                    .ok()
            })
            .await
            .clone()
    }

    /// The template and pool of `size`, made on first use.
    pub fn class(&self, size: VmSize) -> Arc<SizeClass<H::Vm>> {
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        classes
            .entry(size)
            .or_insert_with(|| {
                let templates = self
                    .templates
                    .as_ref()
                    .map(|config| Arc::new(Templates::new(config.for_size(size))));
                let pool = match (self.pool_targets.get(&size), &templates) {
                    (Some(&target), Some(_)) if target > 0 => Some(Arc::new(Pool::new(target))),
                    _ => None,
                };
                Arc::new(SizeClass {
                    size,
                    templates,
                    pool,
                    priming: Mutex::default(),
                })
            })
            .clone()
    }

    /// Admits a VM of `size`: ready templates' memory counts as held.
    pub fn admit(&self, size: VmSize) -> Result<crate::admission::Ticket, RunError> {
        let templates_mib = self
            .classes()
            .iter()
            .filter(|class| {
                class
                    .templates
                    .as_ref()
                    .is_some_and(|t| t.ready().is_some())
            })
            .map(|class| u64::from(class.size.memory_mib))
            .sum::<u64>()
            + self.image_templates.as_ref().map_or(0, |t| t.held_mib());
        Ok(self.admission.admit(size, templates_mib)?)
    }

    /// Counts a VM of `size` that an earlier hulld started and this one takes back.
    pub fn count_adopted(&self, size: VmSize) -> crate::admission::Ticket {
        self.admission.count(size)
    }

    /// Every size's template and pool made so far, smallest first.
    pub fn classes(&self) -> Vec<Arc<SizeClass<H::Vm>>> {
        let classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        classes.values().cloned().collect()
    }

    /// A VM's configuration, its share made ready for QEMU.
    pub(crate) fn config(
        &self,
        id: &str,
        run_dir: &Path,
        disks: Vec<DiskConfig>,
        detached: bool,
        size: VmSize,
    ) -> Result<VmConfig, RunError> {
        let mut shares = Vec::new();
        if let Some(tag) = &self.share_tag {
            let share = Share::of(run_dir);
            share.prepare()?;
            shares.push(HostShare {
                tag: tag.clone(),
                path: share.path(),
                read_only: false,
            });
        }
        Ok(VmConfig {
            id: id.to_string(),
            run_dir: run_dir.to_owned(),
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            disks,
            memory_file: None,
            restore_from: None,
            detached,
            network: NetBackend::Isolated,
            shares,
        })
    }

    /// Builds the default size's template and those of sizes with a pool,
    /// then fills the pools, in the background.
    pub fn prepare(self: &Arc<Self>) {
        let mut sizes: Vec<VmSize> = self.pool_targets.keys().copied().collect();
        sizes.push(self.default_size);
        sizes.sort();
        sizes.dedup();
        for size in sizes {
            self.prepare_size(&self.class(size));
        }
    }

    /// Builds a size's template, then fills its pool, in the background.
    fn prepare_size(self: &Arc<Self>, class: &Arc<SizeClass<H::Vm>>) {
        let Some(templates) = class.templates.clone() else {
            return;
        };
        let (factory, class) = (self.clone(), class.clone());
        tokio::spawn(async move {
            let size = class.size;
            if templates.status() == "missing" {
                // The build's VM is a VM like any other while it runs.
                match factory.admit(size) {
                    Ok(_building) => {
                        let _ = templates
                            .build(&*factory.hypervisor, size.vcpus, size.memory_mib)
                            .await;
                    }
                    Err(err) => {
                        info!(error = %err, "not building the VM template now; VMs boot cold");
                        return;
                    }
                }
            }
            factory.fill_pool(&class).await;
        });
    }

    /// A VM for container `id` with `disks` attached and what `needs`
    /// says, from the pool, as a template clone, or booted. Each size has
    /// its own template and pool; pooled VMs are on the user-mode network
    /// without forwarded ports, so another network is cloned or booted. A `detached` VM
    /// outlives hulld (see [`VmConfig::detached`]); pooled VMs do not, so
    /// it is cloned or booted.
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
            prime,
        } = needs;
        let size = size.unwrap_or(self.default_size);
        let started = Instant::now();
        let class = self.class(size);
        let image = prime.clone();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        let pooled = match (&class.pool, detached) {
            (Some(pool), false) if network == pooled_network() => {
                let rootfs = disks.iter().find(|d| d.id == crate::prime::ROOTFS_DISK);
                let pooled = pool.take(rootfs.map(|d| d.path.as_path()));
                if let Some(prime) = prime {
                    class.priming().ran(prime);
                }
                if pool.missing() > 0 {
                    let (factory, refill) = (self.clone(), class.clone());
                    tokio::spawn(async move { factory.fill_pool(&refill).await });
                }
                pooled
            }
            _ => None,
        };
        if let Some(pooled) = pooled {
            match crate::prime::attach_to_pooled(&pooled, &disks).await {
                Ok(()) => {
                    self.record_start(id, "pool", elapsed_ms());
                    return Ok(StartedVm {
                        vm: pooled.vm,
                        agent: pooled.agent,
                        run_dir: pooled.run_dir,
                        network_ready: pooled.network_ready,
                    });
                }
                Err(err) => warn!(error = %err, "a pooled VM refused its rootfs; cloning"),
            }
        }
        let run_dir = RunDir::create(self.run_root.join(id), self.admit(size)?)?;
        let spec = (id, detached, &network, size);
        if let Some((vm, agent)) = self
            .from_image_template(image, spec, &run_dir, &disks)
            .await
        {
            self.record_start(id, "image template clone", elapsed_ms());
            return Ok(StartedVm {
                vm,
                agent,
                run_dir,
                network_ready: false,
            });
        }
        if let Some(template) = class.templates.as_ref().and_then(|t| t.ready()) {
            let cloned = async {
                let (vm, agent) = self
                    .clone_template(
                        &template,
                        id,
                        &run_dir.path,
                        detached,
                        network.clone(),
                        size,
                    )
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
                    return Ok(StartedVm {
                        vm,
                        agent,
                        run_dir,
                        network_ready: false,
                    });
                }
                Err(err) => {
                    warn!(error = %err, "cloning the VM template failed; rebuilding it, booting cold");
                    if let Some(templates) = &class.templates {
                        templates.invalidate(&template);
                    }
                }
            }
        }
        let mut config = self.config(id, &run_dir.path, disks, detached, size)?;
        config.network = network;
        let started_vm = self.boot(config, run_dir, started).await?;
        // A size's first VM, or one whose template went missing (removed,
        // or failed), has its template built for the next.
        if class
            .templates
            .as_ref()
            .is_some_and(|t| t.status() == "missing")
        {
            self.prepare_size(&class);
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
        Ok(StartedVm {
            vm,
            agent,
            run_dir,
            network_ready: false,
        })
    }

    pub(crate) fn record_start(&self, vm: &str, path: &'static str, elapsed_ms: u64) {
        info!(container = %vm, start = path, elapsed_ms, "VM ready");
        let record = StartRecord {
            vm: vm.to_owned(),
            path,
            elapsed_ms,
            at: SystemTime::now(),
        };
        if let Some(hook) = self.on_start.get() {
            hook(&record);
        }
        let mut starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        if starts.len() == START_HISTORY {
            starts.pop_front();
        }
        starts.push_back(record);
    }

    /// The most recent starts, oldest first.
    pub fn recent_starts(&self) -> Vec<StartRecord> {
        let starts = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        starts.iter().cloned().collect()
    }

    /// Resumes a clone of `template` and gives it its own clock and entropy.
    pub(crate) async fn clone_template(
        &self,
        template: &Template,
        id: &str,
        run_dir: &Path,
        detached: bool,
        network: NetBackend,
        size: VmSize,
    ) -> Result<(H::Vm, AgentClient), RunError> {
        let mut config = self.config(id, run_dir, Vec::new(), detached, size)?;
        config.network = network;
        crate::template::clone_vm(&*self.hypervisor, template, config).await
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
pub(crate) fn pooled_network() -> NetBackend {
    NetBackend::User {
        forwards: Vec::new(),
    }
}

pub(crate) async fn attach<V: Vm>(vm: &V, disks: &[DiskConfig]) -> Result<(), RunError> {
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

/// The size a template directory's name (`1x64`) stands for.
fn parse_token(name: &str) -> Option<VmSize> {
    let (vcpus, memory_mib) = name.split_once('x')?;
    Some(VmSize {
        vcpus: vcpus.parse().ok().filter(|v| *v > 0)?,
        memory_mib: memory_mib.parse().ok().filter(|m| *m > 0)?,
    })
}
