//! A few template clones kept resumed and idle, so that a run only has to
//! plug in its rootfs: no QEMU start, no state restore on its path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use std::time::Instant;

use hull_vm::{Hypervisor, Vm};
use tracing::{info, warn};

use crate::agent::AgentClient;
use crate::run::{new_container_id, RunDir, RunError};
use crate::start::{pooled_network, SizeClass, VmFactory};

/// A resumed clone waiting for a container.
pub struct PooledVm<V> {
    pub vm: V,
    pub agent: AgentClient,
    pub run_dir: RunDir,
    /// Warmed, with the pooled VMs' network configured.
    pub network_ready: bool,
    /// The image rootfs plugged in and mounted (see [`crate::prime`]).
    pub primed: Option<PathBuf>,
}

/// A size's pool as reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolReport {
    pub size: crate::size::VmSize,
    /// Idle VMs the pool keeps.
    pub target: usize,
    /// Idle VMs it has.
    pub ready: usize,
    /// Of those, the ones primed with an image's rootfs.
    pub primed: usize,
}

pub struct Pool<V> {
    target: usize,
    ready: Mutex<Vec<PooledVm<V>>>,
    filling: AtomicBool,
}

impl<V: Vm> Pool<V> {
    pub fn new(target: usize) -> Self {
        Self {
            target,
            ready: Mutex::new(Vec::new()),
            filling: AtomicBool::new(false),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<PooledVm<V>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled VM that is still running, if any: one primed with
    /// `rootfs` first, else an unprimed one. One primed with another image
    /// is never handed out: its guest held that image's files, whose freed
    /// pages a guest root could find, and that image may be another
    /// tenant's. When only those are left, the oldest goes, so the refill
    /// brings a VM primed with what runs now.
    pub fn take(&self, rootfs: Option<&Path>) -> Option<PooledVm<V>> {
        let mut ready = self.ready();
        // Those that died while idle go; dropped (which cleans up) after
        // the lock is let go, as is one that is replaced.
        let (alive, mut gone): (Vec<_>, Vec<_>) = std::mem::take(&mut *ready)
            .into_iter()
            .partition(|pooled| pooled.vm.exit().borrow().is_none());
        *ready = alive;
        let fits = |pooled: &PooledVm<V>| match (&pooled.primed, rootfs) {
            (Some(primed), Some(wanted)) if primed == wanted => Some(0),
            (None, _) => Some(1),
            (Some(_), _) => None,
        };
        // The newest of the best: the last added is the most recently warmed.
        let best = (0..ready.len())
            .rev()
            .filter_map(|i| Some((fits(&ready[i])?, i)))
            .min_by_key(|&(rank, _)| rank);
        let taken = match best {
            Some((_, i)) => Some(ready.remove(i)),
            None => {
                if !ready.is_empty() {
                    gone.push(ready.remove(0));
                }
                None
            }
        };
        drop(ready);
        drop(gone);
        taken
    }

    /// The number of idle VMs the pool keeps.
    pub fn target(&self) -> usize {
        self.target
    }

    pub fn len(&self) -> usize {
        self.ready().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many idle VMs are primed with an image's rootfs.
    pub fn primed(&self) -> usize {
        self.ready().iter().filter(|p| p.primed.is_some()).count()
    }

    /// How many more VMs the pool wants.
    pub fn missing(&self) -> usize {
        self.target.saturating_sub(self.len())
    }

    pub fn add(&self, pooled: PooledVm<V>) {
        self.ready().push(pooled);
    }

    /// Claims the job of filling the pool; `false` if another task has it.
    pub fn start_filling(&self) -> bool {
        !self.filling.swap(true, Ordering::AcqRel)
    }

    pub fn stop_filling(&self) {
        self.filling.store(false, Ordering::Release);
    }
}

impl<H: Hypervisor> VmFactory<H> {
    /// Adds clones to a size's pool until it is full; one task at a time.
    pub(crate) async fn fill_pool(&self, class: &SizeClass<H::Vm>) {
        let (Some(pool), Some(templates)) = (&class.pool, &class.templates) else {
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
                let ticket = self.admit(class.size)?;
                let run_dir = RunDir::create(self.run_root.join(&id), ticket)?;
                let (vm, agent) = self
                    .clone_template(
                        &template,
                        &id,
                        &run_dir.path,
                        false,
                        pooled_network(),
                        class.size,
                    )
                    .await?;
                let mut network_ready = false;
                if let Some(rootfs) = self.warm_rootfs().await {
                    let warmed = Instant::now();
                    if let Err(err) = crate::warm::warm(&vm, &agent, &rootfs).await {
                        // A VM that cannot run a trivial container is not
                        // one to hand out.
                        vm.kill();
                        return Err(err);
                    }
                    info!(vm = %id, elapsed_ms = warmed.elapsed().as_millis() as u64, "pooled VM warmed");
                    network_ready = true;
                }
                let primed = match crate::prime::prime_pooled(class, &vm, &agent).await {
                    Ok(primed) => primed,
                    Err(err) => {
                        vm.kill();
                        return Err(err);
                    }
                };
                Ok::<_, RunError>(PooledVm {
                    vm,
                    agent,
                    run_dir,
                    network_ready,
                    primed,
                })
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
}
