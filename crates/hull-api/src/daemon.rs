//! The daemon's state: the image store and the runtime that boots VMs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_image::registry::{self, RegistryClient, RegistryConfig};
use hull_image::{ImageStore, StoreError};
use hull_runtime::TemplateConfig;
use hull_runtime::{Containers, Runtime, RuntimeConfig};
use hull_vm::accel::{self, SystemProbe};
use hull_vm::{AccelChoice, AccelDecision, ArtifactError, ArtifactSources, GuestArtifacts, Qemu};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::in_use::ImagesInUse;
use crate::metering::Metering;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot open the image store")]
    Store(#[from] StoreError),
    #[error("cannot prepare the guest")]
    Artifacts(#[from] ArtifactError),
    #[error("cannot set up the registry client")]
    Registry(#[from] registry::ClientError),
    #[error("cannot load the containers")]
    Containers(#[from] hull_runtime::ContainerError),
    #[error("cannot keep VM templates")]
    TemplateDir(#[from] hull_runtime::TemplateDirError),
    #[error("cannot open the cloud's tenant database")]
    Cloud(#[from] hull_cloud::store::StoreError),
    #[error("cannot open the usage database")]
    Usage(#[from] hull_cloud::usage::UsageError),
    #[error("cannot create {}", .path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Credentials for registries, under the state directory.
pub const AUTH_FILE: &str = "auth.json";
/// Registries (`host[:port]`, comma-separated) reached over plain HTTP
/// although not on loopback, like docker's `insecure-registries`.
pub const INSECURE_REGISTRIES_ENV: &str = "HULL_INSECURE_REGISTRIES";

fn registry_config() -> RegistryConfig {
    let insecure = std::env::var(INSECURE_REGISTRIES_ENV).unwrap_or_default();
    RegistryConfig {
        insecure: insecure
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        credentials: Vec::new(),
    }
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Everything Hull keeps lives under this directory.
    pub root: PathBuf,
    pub accel: AccelChoice,
    pub artifacts: ArtifactSources,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Memory image templates may hold in all, in MiB; 0: none.
    pub image_template_mib: u64,
    /// Start VMs as clones of a booted template instead of booting each.
    pub templates: bool,
    /// Where template memory lives; a per-root directory on /dev/shm when `None`.
    pub template_dir: Option<PathBuf>,
    /// Template clones kept resumed for the next runs (needs templates),
    /// by size (`None`: the default size).
    pub pools: Vec<(Option<hull_runtime::size::VmSize>, usize)>,
    /// The most VMs, and VM memory, the host takes.
    pub admission: hull_runtime::AdmissionConfig,
    /// The host uids that VMs' QEMU processes run as, which Hull's
    /// firewall keeps off the host's loopback and other networks.
    pub vm_uids: hull_vm::uids::VmUids,
    pub cloud: CloudConfig,
}

/// Where the cloud layer keeps what it must, and the region it signs for.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// The master key that seals tenants' secret keys; outside the state
    /// directory, so that a copy of that directory alone leaks no secret.
    pub secrets_key: PathBuf,
    /// The region request signatures are scoped to (`us-west-1` is what the
    /// original `hyper` client uses unless told otherwise).
    pub region: String,
    /// The program that witnesses container runs for metering (hulld
    /// itself); `None`: runs that end while hulld is down are closed at
    /// their last beat.
    pub witness: Option<PathBuf>,
    /// Private registry hosts tenants' pulls may reach; otherwise they
    /// reach public addresses only.
    pub tenant_registries: Vec<String>,
    /// How many connections the tenant listener serves: in all, per
    /// tenant, and per address before they authenticate.
    pub connections: crate::server::connections::ConnectionLimits,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            secrets_key: PathBuf::from("/etc/hull/secrets.key"),
            region: "us-west-1".to_owned(),
            witness: None,
            tenant_registries: Vec::new(),
            connections: Default::default(),
        }
    }
}

pub struct Daemon {
    config: DaemonConfig,
    images: Arc<ImageStore>,
    registry: RegistryClient,
    tenant_registry: RegistryClient,
    accel: AccelDecision,
    runtime: OnceCell<Arc<Runtime<Qemu>>>,
    containers: Arc<Containers<Qemu>>,
    in_use: ImagesInUse,
    tenants: Arc<hull_cloud::store::Store>,
    admission: crate::server::Admission,
    metering: Arc<Metering>,
    metrics: Arc<Metrics>,
    crons: crate::cron::Crons,
    funcs: crate::func::Funcs,
    services: crate::service::Replicas,
}

impl Daemon {
    /// Opens the state under `config.root`. VM directories left by a daemon
    /// that died are removed, except those of containers' VMs, which outlive
    /// hulld and are taken back by `reattach_containers`.
    pub fn open(config: DaemonConfig) -> Result<Self, DaemonError> {
        let create = |path: PathBuf| {
            std::fs::create_dir_all(&path).map_err(|source| DaemonError::StateDir { path, source })
        };
        create(config.root.clone())?;
        let vms = config.root.join("vms");
        for entry in std::fs::read_dir(&vms).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name
                .to_string_lossy()
                .starts_with(hull_runtime::container::DETACHED_VM_PREFIX)
            {
                continue;
            }
            hull_runtime::run::remove_vm_dir(&entry.path());
        }
        create(vms)?;
        let images = Arc::new(ImageStore::open(&config.root.join("images"))?);
        let accel = accel::decide(config.accel, &SystemProbe, false);
        info!("{}", accel.reason);
        let registry = RegistryClient::new(registry_config())?;
        let tenant_registry = RegistryClient::with_reach(
            registry_config(),
            hull_image::registry::Reach::Public {
                allowed: Arc::new(config.cloud.tenant_registries.clone()),
            },
        )?;
        let containers = Arc::new(Containers::open(
            &config.root.join("containers"),
            &config.root.join("pods"),
            &config.root.join("volumes"),
            &config.root.join("networks"),
            images.clone(),
            config.vm_uids,
        )?);
        containers.sweep_vm_dirs(&config.root.join("vms"));
        let tenants = hull_cloud::store::Store::open(
            &config.root.join("cloud.db"),
            &config.cloud.secrets_key,
        )?;
        let default_size = hull_runtime::size::VmSize {
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
        };
        let metering = Arc::new(Metering::open(
            &config.root,
            config.cloud.witness.clone(),
            default_size,
        )?);
        Ok(Self {
            config,
            images,
            registry,
            tenant_registry,
            accel,
            runtime: OnceCell::new(),
            containers,
            in_use: ImagesInUse::default(),
            tenants: Arc::new(tenants),
            admission: Default::default(),
            metering,
            metrics: Arc::new(Metrics::new()),
            crons: Default::default(),
            funcs: Default::default(),
            services: Default::default(),
        })
    }

    /// The per-tenant locks that hold a quota's count to its change.
    pub(crate) fn admission(&self) -> &crate::server::Admission {
        &self.admission
    }

    /// The operator's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics in the Prometheus text format, VMs read now. Asking
    /// boots nothing: before the runtime is set up there are no VMs.
    pub fn render_metrics(&self) -> String {
        let mut snapshot = self
            .runtime
            .get()
            .map(|runtime| crate::metrics::snapshot(runtime))
            .unwrap_or_default();
        snapshot.usage = self.metering.totals();
        self.metrics.render(&snapshot)
    }

    /// Tenants and their keys.
    pub fn tenants(&self) -> &Arc<hull_cloud::store::Store> {
        &self.tenants
    }

    /// Container runs' usage records.
    /// Hyper Cron's scheduler state.
    /// The services' replicas at work.
    pub fn services(&self) -> &crate::service::Replicas {
        &self.services
    }

    pub fn crons(&self) -> &crate::cron::Crons {
        &self.crons
    }

    pub fn funcs(&self) -> &crate::func::Funcs {
        &self.funcs
    }

    pub fn metering(&self) -> &Arc<Metering> {
        &self.metering
    }

    /// Starts recording container runs; call before re-attaching.
    pub fn follow_usage(&self) {
        self.metering.follow(&self.containers);
    }

    /// Closes the runs whose VM went while no hulld ran; call after
    /// re-attaching.
    pub fn reconcile_usage(&self) {
        let (tenants, images) = (self.tenants.clone(), self.images.clone());
        let tenant_images = move || crate::metering::tenant_images(&tenants, &images);
        self.metering
            .reconcile(&self.containers, Arc::new(tenant_images));
    }

    /// Hull's own CA and certificates for the tenant listener.
    pub fn tls_dir(&self) -> PathBuf {
        self.config.root.join("tls")
    }

    pub fn cloud_config(&self) -> &CloudConfig {
        &self.config.cloud
    }

    /// Keeps the VMs' console logs to their cap, in the background.
    pub fn cap_consoles(&self) {
        hull_runtime::console::keep_capped(self.config.root.join("vms"));
    }

    pub fn containers(&self) -> &Arc<Containers<Qemu>> {
        &self.containers
    }

    /// Images that `rmi` and prune must leave: those of running `hull run`s
    /// and of every container, as docker keeps the images of its containers.
    pub fn used_image_ids(&self) -> std::collections::BTreeSet<String> {
        let mut ids = self.in_use.ids();
        ids.extend(self.containers.image_ids());
        // Images only tenants name are dangling in the operator's view but
        // must stay: each tenant's table points at them.
        match self.tenants.images_of_tenants() {
            Ok(held) => ids.extend(held),
            Err(err) => {
                warn!(error = %crate::server::error_chain(&err), "cannot list the images tenants keep")
            }
        }
        ids
    }

    /// Takes back the VMs of the containers that ran when the last hulld
    /// stopped. If no VM can be started here, they are recorded as exited.
    pub async fn reattach_containers(&self) -> Result<(), DaemonError> {
        let orphans = self.containers.orphans();
        if orphans.is_empty() {
            return Ok(());
        }
        match self.runtime().await {
            Ok(runtime) => {
                self.containers.reattach_all(&runtime).await;
                Ok(())
            }
            Err(err) => {
                let message = format!(
                    "{}: {}",
                    hull_runtime::container::INTERRUPTED,
                    crate::server::error_chain(&err)
                );
                for container in orphans {
                    container.record_lost(message.clone());
                }
                Err(err)
            }
        }
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// The images of running containers.
    pub fn images_in_use(&self) -> &ImagesInUse {
        &self.in_use
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    /// The registry client of tenants' pulls and logins: public addresses
    /// only, and the private hosts the operator allows.
    pub fn tenant_registry(&self) -> &RegistryClient {
        &self.tenant_registry
    }

    /// Credentials kept for `domain` in `<root>/auth.json` (docker's `auths`
    /// format), read on each pull so that a login takes effect at once.
    pub fn stored_credentials(&self, domain: &str) -> Option<registry::Credentials> {
        let path = self.config.root.join(AUTH_FILE);
        let bytes = std::fs::read(&path).ok()?;
        registry::auth::AuthFile::parse(&bytes)
            .and_then(|file| file.credentials(domain))
            .unwrap_or_else(|err| {
                warn!(path = %path.display(), error = %err, "ignoring unreadable credentials");
                None
            })
    }

    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    pub fn root(&self) -> &std::path::Path {
        &self.config.root
    }

    /// The VM template's state, once the runtime is set up.
    pub fn template_status(&self) -> Option<&'static str> {
        let runtime = self.runtime.get()?;
        Some(runtime.templates().map_or("disabled", |t| t.status()))
    }

    /// Idle VMs in the pools, once the runtime is set up and if it has any.
    pub fn pooled_vms(&self) -> Option<usize> {
        let pools = self.runtime.get()?.pool_status();
        (!pools.is_empty()).then(|| pools.iter().map(|pool| pool.ready).sum())
    }

    /// The runtime if something set it up already: reports about VMs do
    /// not boot any.
    pub fn started_runtime(&self) -> Option<Arc<Runtime<Qemu>>> {
        self.runtime.get().cloned()
    }

    pub fn vm_size(&self) -> (u32, u32) {
        (self.config.vcpus, self.config.memory_mib)
    }

    /// Whether hulld keeps a pool of idle VMs of any size.
    pub fn has_pool(&self) -> bool {
        self.config.pools.iter().any(|(_, count)| *count > 0)
    }

    /// The runtime, set up on first use so that a missing kernel only
    /// matters to commands that boot VMs.
    pub async fn runtime(&self) -> Result<Arc<Runtime<Qemu>>, DaemonError> {
        self.runtime
            .get_or_try_init(|| async {
                let artifacts = GuestArtifacts::prepare(
                    &self.config.artifacts,
                    &self.config.root.join("artifacts"),
                )?;
                info!(kernel = %artifacts.kernel.display(), initramfs = %artifacts.initramfs.display(), "guest artifacts ready");
                let mut qemu = Qemu::new(self.accel.accel, artifacts);
                // This daemon's VMs under a parent of its own: the sweep
                // below then never takes a cgroup that another daemon or a
                // containerd shim has just made and not yet entered.
                qemu.jail.cgroup_parent = cgroup_parent(&self.config.root);
                // VMs that ended while no hulld ran left their cgroups.
                qemu.jail.sweep();
                // One range for the uids QEMU runs as and those the firewall rules.
                if let Some(confinement) = qemu.confinement.as_mut() {
                    confinement.uids = self.config.vm_uids;
                }
                let templates = if self.config.templates && qemu.can_clone() {
                    let dir = self
                        .config
                        .template_dir
                        .clone()
                        .unwrap_or_else(|| template_dir(&self.config.root));
                    hull_runtime::template::ensure_dir(&dir)?;
                    Some(TemplateConfig {
                        dir,
                        key: qemu.template_key(),
                        share_tag: Some(hull_runtime::share::TAG.into()),
                    })
                } else {
                    None
                };
                let config = RuntimeConfig {
                    run_root: self.config.root.join("vms"),
                    warm_dir: Some(self.config.root.join("artifacts")),
                    vcpus: self.config.vcpus,
                    memory_mib: self.config.memory_mib,
                    templates,
                    pools: self.config.pools.clone(),
                    admission: self.config.admission,
                    share_tag: Some(hull_runtime::share::TAG.into()),
                    image_template_mib: self.config.image_template_mib,
                };
                let runtime = Arc::new(Runtime::new(qemu, self.images.clone(), config));
                let metrics = self.metrics.clone();
                runtime.on_start(Box::new(move |start| {
                    metrics.start(start.path, start.elapsed_ms)
                }));
                runtime.prepare_template();
                Ok(runtime)
            })
            .await
            .cloned()
    }
}

/// Templates keep guest memory in files on tmpfs, one directory per state root.
fn template_dir(root: &std::path::Path) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return root.join("templates");
    }
    let root_id = hex::encode(Sha256::digest(root.display().to_string()));
    shm.join(format!("hull-{}", &root_id[..12]))
}

/// The cgroup parent of the daemon whose root is `root`: `hull/` and a
/// name drawn from the root, the one thing two daemons never share.
fn cgroup_parent(root: &Path) -> String {
    use sha2::Digest;
    let root = root.canonicalize().unwrap_or_else(|_| root.to_owned());
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    format!("hull/hulld-{}", &hex::encode(digest)[..12])
}
