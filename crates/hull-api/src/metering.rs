//! Metering on the daemon's side: container runs and pod VMs' runs recorded
//! from the runtime's events (the runtime stays tenant-agnostic), a witness
//! beside each run's QEMU so that an end while hulld is down is still seen, and
//! the reconciliation of what was left open when hulld starts again.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hull_cloud::storage::Stored;
use hull_cloud::usage::{self, EndedBy, NewRun, RunKind, Size, Usage, UsageError};
use hull_runtime::container::events::{ContainerEvent, PodVmEvent};
use hull_runtime::size::VmSize;
use hull_runtime::Containers;
use hull_vm::Qemu;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use crate::server::scope::OWNER_LABEL;

/// The first argument that makes hulld a run's witness:
/// `hulld <WITNESS_ARG> <usage.db> <run id>`, QEMU's pidfd at descriptor 3.
pub const WITNESS_ARG: &str = "--usage-witness";
/// The descriptor a witness finds QEMU's pidfd at.
pub const WITNESS_FD: i32 = 3;

/// A change to the records, read from one event.
enum Change {
    /// A run starts in the VM of that directory name, which its witness
    /// watches.
    Start { run: NewRun, vm: String },
    /// The runs of a container or pod end.
    End { container_id: String, at: i64 },
}

/// Records runs in the usage database.
pub struct Metering {
    usage: Arc<Usage>,
    db: PathBuf,
    /// The VMs' directories, where a container's QEMU leaves its pid.
    vms: PathBuf,
    /// The program that witnesses runs (hulld itself); `None`: no witness,
    /// so an end while hulld is down is known only to the last beat.
    witness: Option<PathBuf>,
    /// The operator's default size, for containers created without one.
    default_size: VmSize,
}

impl Metering {
    pub fn open(
        root: &Path,
        witness: Option<PathBuf>,
        default_size: VmSize,
    ) -> Result<Self, UsageError> {
        let db = root.join("usage.db");
        Ok(Self {
            usage: Arc::new(Usage::open(&db)?),
            db,
            vms: root.join("vms"),
            witness,
            default_size,
        })
    }

    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// Billed seconds so far by tenant and size, for the metrics; none if
    /// the database cannot be read (the scrape goes on without them).
    pub fn totals(&self) -> Vec<crate::metrics::TenantUsage> {
        match self.usage.totals(usage::now_ms()) {
            Ok(totals) => totals
                .into_iter()
                .map(|(tenant, size, seconds)| crate::metrics::TenantUsage {
                    tenant,
                    size,
                    seconds,
                })
                .collect(),
            Err(err) => {
                warn!(error = %crate::server::error_chain(&err), "cannot read the usage totals");
                Vec::new()
            }
        }
    }

    /// Follows the containers' events (a `start` opens a run, a `die`
    /// closes it) and the pods' VMs (billed as one from boot to power-off).
    /// Call before re-attaching, so no end goes unseen.
    pub fn follow(self: &Arc<Self>, containers: &Arc<Containers<Qemu>>) {
        let (_, events) = containers.events().subscribe(None);
        let pod_vms = containers.events().subscribe_pod_vms();
        self.follow_feed(containers, events, Self::change_of);
        self.follow_feed(containers, pod_vms, Self::pod_change_of);
    }

    /// Applies the changes one feed's events make, in their order.
    fn follow_feed<E: Clone + Send + 'static>(
        self: &Arc<Self>,
        containers: &Arc<Containers<Qemu>>,
        mut feed: tokio::sync::broadcast::Receiver<E>,
        change_of: fn(&Self, &Containers<Qemu>, &E) -> Option<Change>,
    ) {
        let (metering, containers) = (self.clone(), containers.clone());
        tokio::spawn(async move {
            loop {
                let event = match feed.recv().await {
                    Ok(event) => event,
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "metering fell behind the runtime's events");
                        continue;
                    }
                };
                // Read at once, while the container surely exists: one
                // run with `--rm` may be gone a moment after its start.
                let Some(change) = change_of(&metering, &containers, &event) else {
                    continue;
                };
                let metering = metering.clone();
                let handled = tokio::task::spawn_blocking(move || metering.apply(change)).await;
                if let Ok(Err(err)) = handled {
                    warn!(error = %crate::server::error_chain(&err), "cannot record a run");
                }
            }
        });
    }

    /// What a container's event changes in the records, if anything.
    fn change_of(&self, containers: &Containers<Qemu>, event: &ContainerEvent) -> Option<Change> {
        let at = usage::ms_of(event.time);
        match event.action.as_str() {
            "die" => Some(Change::End {
                container_id: event.id.clone(),
                at,
            }),
            "start" => {
                let config = containers.get(&event.id).ok()?.config();
                // A pod's container runs in the pod's VM, billed as a whole.
                if config.pod.is_some() {
                    return None;
                }
                let run = NewRun {
                    tenant: config.labels.get(OWNER_LABEL).cloned(),
                    kind: RunKind::Container,
                    container_id: event.id.clone(),
                    container_name: event.attributes.get("name").cloned().unwrap_or_default(),
                    size: self.billed(config.size),
                    start_ms: at,
                };
                let vm = hull_runtime::container::vm_name(&run.container_id);
                Some(Change::Start { run, vm })
            }
            _ => None,
        }
    }

    /// What a pod VM's coming or going changes in the records.
    fn pod_change_of(&self, containers: &Containers<Qemu>, event: &PodVmEvent) -> Option<Change> {
        let at = usage::ms_of(event.time);
        if !event.running {
            return Some(Change::End {
                container_id: event.pod.clone(),
                at,
            });
        }
        let pod = containers.pod(&event.pod).ok()?;
        let run = NewRun {
            tenant: pod.namespace.clone(),
            kind: RunKind::Pod,
            container_id: pod.id.clone(),
            container_name: pod.name().to_owned(),
            size: self.billed(pod.spec.size),
            start_ms: at,
        };
        let vm = hull_runtime::container::pod_vm_name(&pod.id);
        Some(Change::Start { run, vm })
    }

    /// A VM's size as billed; none given is the operator's default.
    fn billed(&self, size: Option<VmSize>) -> Size {
        let size = size.unwrap_or(self.default_size);
        Size {
            name: size.name().map_or_else(|| size.token(), str::to_owned),
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
        }
    }

    fn apply(&self, change: Change) -> Result<(), UsageError> {
        match change {
            Change::End { container_id, at } => {
                self.usage
                    .end_container(&container_id, at, EndedBy::Daemon)?;
            }
            Change::Start { run, vm } => {
                // A pod's VM taken back after a restart of hulld is still
                // in the run its boot opened, watched by that run's witness.
                if run.kind == RunKind::Pod && self.usage.open_run_of(&run.container_id)?.is_some()
                {
                    return Ok(());
                }
                let id = self.usage.start(&run)?;
                self.witness(id, &self.vms.join(vm));
            }
        }
        Ok(())
    }

    /// Opens the run of an operator's foreground `hull run` (no container
    /// record, no events), closed when the returned guard drops. Its VM
    /// dies with hulld, so a crash ends it at its last beat.
    pub async fn foreground(
        self: &Arc<Self>,
        id: &str,
        image: &str,
        size: Option<VmSize>,
    ) -> ForegroundRun {
        let run = NewRun {
            tenant: None,
            kind: RunKind::Container,
            container_id: id.to_owned(),
            container_name: image.to_owned(),
            size: self.billed(size),
            start_ms: usage::now_ms(),
        };
        let usage = self.usage.clone();
        let started = tokio::task::spawn_blocking(move || usage.start(&run)).await;
        let run = match started {
            Ok(Ok(run)) => Some(run),
            Ok(Err(err)) => {
                warn!(error = %crate::server::error_chain(&err), "cannot record a foreground run");
                None
            }
            Err(_) => None,
        };
        ForegroundRun {
            usage: self.usage.clone(),
            run,
        }
    }

    /// Starts the witness of run `id`, whose QEMU serves `run_dir`.
    fn witness(&self, id: i64, run_dir: &Path) {
        let Some(program) = &self.witness else {
            return;
        };
        let pidfd = match hull_vm::qemu::qemu_of(run_dir) {
            Ok((_, pidfd)) => pidfd,
            // Gone already: its `die` follows.
            Err(why) => return debug!(run = id, why, "no QEMU to witness"),
        };
        if let Err(err) = spawn_witness(program, &self.db, id, pidfd) {
            warn!(run = id, error = %err, "cannot start the run's witness: an end while hulld is down will be known only to its last beat");
        }
    }

    /// At start, after re-attaching: closes the runs left open whose
    /// container no longer runs (their witness would have closed them at
    /// their real end; these end at their last beat), then notes the
    /// running ones alive and samples the volumes every beat.
    pub fn reconcile(
        self: &Arc<Self>,
        containers: &Arc<Containers<Qemu>>,
        tenant_images: Arc<dyn Fn() -> Vec<Stored> + Send + Sync>,
    ) {
        // A run's id is its container's, or its pod's.
        let alive = |id: &str| {
            containers.get(id).is_ok_and(|c| c.state().running()) || containers.pod_vm_running(id)
        };
        match self.usage.reconcile(alive) {
            Ok(closed) if !closed.is_empty() => {
                warn!(runs = ?closed, "runs whose end nobody saw closed at their last beat")
            }
            Ok(_) => {}
            Err(err) => {
                warn!(error = %crate::server::error_chain(&err), "cannot reconcile the usage records")
            }
        }
        let usage = self.usage.clone();
        let containers = containers.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(usage::BEAT);
            loop {
                beat.tick().await;
                let (usage, containers) = (usage.clone(), containers.clone());
                let tenant_images = tenant_images.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let now = usage::now_ms();
                    if let Err(err) = usage.beat(None, now) {
                        warn!(error = %crate::server::error_chain(&err), "cannot note the runs alive");
                    }
                    // A tenant's volume is `name@tenant` in the store.
                    let volumes: Vec<Stored> = containers
                        .volumes()
                        .list()
                        .into_iter()
                        .map(|v| Stored {
                            tenant: v.record.name.rsplit_once('@').map(|(_, t)| t.to_owned()),
                            name: v.record.name,
                            bytes: v.record.size,
                        })
                        .collect();
                    if let Err(err) = usage.sample("volume", &volumes, now) {
                        warn!(error = %crate::server::error_chain(&err), "cannot sample the volumes");
                    }
                    if let Err(err) = usage.sample("image", &tenant_images(), now) {
                        warn!(error = %crate::server::error_chain(&err), "cannot sample the images");
                    }
                })
                .await;
            }
        });
    }
}

/// A foreground run being billed; dropping it closes the run.
pub struct ForegroundRun {
    usage: Arc<Usage>,
    run: Option<i64>,
}

impl Drop for ForegroundRun {
    fn drop(&mut self) {
        let Some(run) = self.run else {
            return;
        };
        let (usage, end) = (self.usage.clone(), usage::now_ms());
        // SQLite blocks: off the async workers.
        tokio::task::spawn_blocking(move || {
            if let Err(err) = usage.end(run, end, EndedBy::Daemon) {
                warn!(error = %crate::server::error_chain(&err), "cannot close a foreground run");
            }
        });
    }
}

/// Starts `program` as the witness of run `id`: in a session of its own, so
/// that it outlives hulld (and a Ctrl-C meant for hulld), with `pidfd` as
/// descriptor 3. Its exit is reaped by tokio once the handle is dropped.
fn spawn_witness(program: &Path, db: &Path, id: i64, pidfd: OwnedFd) -> std::io::Result<()> {
    let raw = pidfd.as_raw_fd();
    let mut command = tokio::process::Command::new(program);
    command
        .arg(WITNESS_ARG)
        .arg(db)
        .arg(id.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(false);
    // SAFETY: runs in the forked child before exec, making only the
    // async-signal-safe calls setsid, dup2 and fcntl on a descriptor that
    // `pidfd` keeps open through the spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears close-on-exec on the copy; a pidfd that already
            // is descriptor 3 needs it cleared by hand.
            let cleared = if raw == WITNESS_FD {
                libc::fcntl(raw, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, WITNESS_FD)
            };
            if cleared == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(pidfd);
    drop(child);
    Ok(())
}

/// A witness's whole life (`hulld --usage-witness DB RUN`): watch the
/// pidfd at descriptor 3 until QEMU exits, then close the run.
pub fn run_witness(args: &[std::ffi::OsString]) -> Result<(), String> {
    let [db, run] = args else {
        return Err(format!(
            "{WITNESS_ARG} takes the usage database and a run id"
        ));
    };
    let run: i64 = run
        .to_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| format!("{run:?} is not a run id"))?;
    // SAFETY: hulld's metering passed QEMU's pidfd as this descriptor, and
    // nothing else in this process owns it.
    let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(WITNESS_FD) };
    if let Err(err) = check_open(&pidfd) {
        return Err(format!("descriptor {WITNESS_FD} is not a pidfd: {err}"));
    }
    hull_cloud::witness::watch(Path::new(db), run, &pidfd)
        .map_err(|e| crate::server::error_chain(&e))
}

/// Refuses a descriptor 3 that is not open (a witness started by hand).
fn check_open(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Each tenant's images as stored: one entry per image a tenant keeps, at
/// the size of its unpacked layers (a layer shared underneath is charged
/// to each tenant that keeps it, as if stored for it alone).
pub(crate) fn tenant_images(
    tenants: &hull_cloud::store::Store,
    images: &hull_image::ImageStore,
) -> Vec<Stored> {
    let mut stored = Vec::new();
    for tenant in tenants.tenants().unwrap_or_default() {
        let mut ids: Vec<String> = tenants
            .tenant_images(&tenant.name)
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.image)
            .collect();
        ids.dedup();
        for id in ids {
            if let Ok(image) = images.resolve(&id) {
                // Sampled items are told apart by name: `id@tenant`, as
                // a tenant's volumes are named.
                stored.push(Stored {
                    name: format!("{id}@{}", tenant.name),
                    tenant: Some(tenant.name.clone()),
                    bytes: image.size,
                });
            }
        }
    }
    stored
}
