//! A few template clones kept resumed and idle, so that a run only has to
//! plug in its rootfs: no QEMU start, no state restore on its path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use hull_vm::Vm;

use crate::agent::AgentClient;
use crate::run::RunDir;

/// A resumed clone waiting for a container.
pub struct PooledVm<V> {
    pub vm: V,
    pub agent: AgentClient,
    pub run_dir: RunDir,
    /// Warmed, with the pooled VMs' network configured.
    pub network_ready: bool,
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

    /// A pooled VM that is still running, if any.
    pub fn take(&self) -> Option<PooledVm<V>> {
        let mut ready = self.ready();
        while let Some(pooled) = ready.pop() {
            if pooled.vm.exit().borrow().is_none() {
                return Some(pooled);
            }
            // It died while idle; dropping it cleans up.
        }
        None
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
