//! Admission: whether the host can hold one more VM. Every VM that hulld
//! starts (a container's, a pod's, a pooled clone, a template's build) is
//! admitted first and holds a [`Ticket`] while it runs; a start past the
//! configured number of VMs, or whose memory would take the VMs' total past
//! the host's `MemTotal` times the overcommit ratio, is refused. Ready
//! templates count with their memory, which stays in tmpfs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::size::VmSize;

/// The limits, as hulld's flags set them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionConfig {
    /// VMs at most; `None`: no limit.
    pub max_vms: Option<usize>,
    /// How far the VMs' memory may exceed `MemTotal`: 1.5 admits VMs whose
    /// sizes add up to one and a half times the host's memory.
    pub memory_overcommit: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_vms: None,
            memory_overcommit: 1.5,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AdmissionError {
    #[error("cannot start another VM: this host runs {running} VMs, the most hulld admits (--max-vms {max}); stop or remove containers (idle pooled VMs count too), or start hulld with a higher --max-vms")]
    TooManyVms { running: usize, max: usize },
    #[error("cannot start a VM of {asked} MiB: this host's VMs hold {held} MiB of the {admitted} MiB hulld admits (MemTotal {total} MiB × --memory-overcommit {ratio}); stop or remove containers, pick a smaller --memory, or start hulld with a higher --memory-overcommit")]
    Memory {
        asked: u64,
        held: u64,
        admitted: u64,
        total: u64,
        ratio: f64,
    },
}

#[derive(Debug, Default)]
struct Held {
    vms: usize,
    memory_mib: u64,
    /// VMs by size, for the operator's metrics; sizes stay once seen.
    by_size: BTreeMap<VmSize, usize>,
}

/// What every VM of this hulld holds.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    /// The host's memory, in MiB.
    mem_total_mib: u64,
    held: Mutex<Held>,
}

/// One admitted VM's share; dropping it gives the share back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    size: VmSize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = self.admission.held();
        held.vms = held.vms.saturating_sub(1);
        held.memory_mib = held
            .memory_mib
            .saturating_sub(u64::from(self.size.memory_mib));
        if let Some(count) = held.by_size.get_mut(&self.size) {
            *count = count.saturating_sub(1);
        }
    }
}

impl Admission {
    /// Admission on this host, whose `MemTotal` is read from /proc/meminfo.
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = parse_mem_total_mib(&meminfo).unwrap_or(u64::MAX / 4);
        Self::with_memory(config, mem_total_mib)
    }

    pub fn with_memory(config: AdmissionConfig, mem_total_mib: u64) -> Arc<Self> {
        Arc::new(Self {
            config,
            mem_total_mib,
            held: Mutex::default(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a VM of `size`, given that ready templates already hold
    /// `templates_mib`.
    pub fn admit(
        self: &Arc<Self>,
        size: VmSize,
        templates_mib: u64,
    ) -> Result<Ticket, AdmissionError> {
        let memory_mib = u64::from(size.memory_mib);
        let mut held = self.held();
        if let Some(max) = self.config.max_vms {
            if held.vms >= max {
                return Err(AdmissionError::TooManyVms {
                    running: held.vms,
                    max,
                });
            }
        }
        let admitted = (self.mem_total_mib as f64 * self.config.memory_overcommit) as u64;
        let now = held.memory_mib + templates_mib;
        if now + memory_mib > admitted {
            return Err(AdmissionError::Memory {
                asked: memory_mib,
                held: now,
                admitted,
                total: self.mem_total_mib,
                ratio: self.config.memory_overcommit,
            });
        }
        Ok(self.ticket(&mut held, size))
    }

    /// Counts a VM that runs already, whatever the limits say: one a
    /// previous hulld started, taken back.
    pub fn count(self: &Arc<Self>, size: VmSize) -> Ticket {
        self.ticket(&mut self.held(), size)
    }

    /// Counts the VM in `held`, which the caller has locked since it
    /// checked the limits, so that no other start slips in between.
    fn ticket(self: &Arc<Self>, held: &mut Held, size: VmSize) -> Ticket {
        held.vms += 1;
        held.memory_mib += u64::from(size.memory_mib);
        *held.by_size.entry(size).or_default() += 1;
        Ticket {
            admission: self.clone(),
            size,
        }
    }

    /// VMs held now by size, smallest first; a size seen once stays, at 0
    /// when none of its VMs runs.
    pub fn held_by_size(&self) -> Vec<(VmSize, usize)> {
        self.held()
            .by_size
            .iter()
            .map(|(size, count)| (*size, *count))
            .collect()
    }

    /// VMs held now and their memory in MiB.
    pub fn usage(&self) -> (usize, u64) {
        let held = self.held();
        (held.vms, held.memory_mib)
    }
}

/// `MemTotal` of /proc/meminfo, in MiB.
fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(memory_mib: u32) -> VmSize {
        VmSize {
            vcpus: 1,
            memory_mib,
        }
    }

    #[test]
    fn mem_total_is_read_in_mib() {
        let meminfo = "MemTotal:       24683724 kB\nMemFree:         1 kB\n";
        assert_eq!(parse_mem_total_mib(meminfo), Some(24105));
        assert_eq!(parse_mem_total_mib("nothing"), None);
    }

    #[test]
    fn vms_past_the_maximum_are_refused_until_one_ends() {
        let config = AdmissionConfig {
            max_vms: Some(2),
            memory_overcommit: 1.0,
        };
        let admission = Admission::with_memory(config, 4096);
        let first = admission.admit(mib(256), 0).unwrap();
        let _second = admission.admit(mib(256), 0).unwrap();
        let refused = admission.admit(mib(256), 0).unwrap_err();
        assert_eq!(refused, AdmissionError::TooManyVms { running: 2, max: 2 });
        assert!(refused.to_string().contains("--max-vms 2"), "{refused}");
        drop(first);
        admission.admit(mib(256), 0).expect("a slot was given back");
    }

    #[test]
    fn memory_past_mem_total_times_the_ratio_is_refused() {
        let config = AdmissionConfig {
            max_vms: None,
            memory_overcommit: 1.5,
        };
        // 1000 MiB × 1.5 = 1500 MiB admitted.
        let admission = Admission::with_memory(config, 1000);
        let _vm = admission.admit(mib(1000), 0).unwrap();
        let _taken_back = admission.count(mib(300));
        let refused = admission.admit(mib(256), 0).unwrap_err();
        assert_eq!(
            refused,
            AdmissionError::Memory {
                asked: 256,
                held: 1300,
                admitted: 1500,
                total: 1000,
                ratio: 1.5
            }
        );
        admission.admit(mib(200), 0).expect("200 MiB still fit");
        // Templates' memory counts as held.
        let err = admission.admit(mib(100), 400).unwrap_err();
        assert!(
            matches!(err, AdmissionError::Memory { held: 1700, .. }),
            "{err}"
        );
        assert_eq!(admission.usage(), (2, 1300));
    }

    #[test]
    fn held_vms_are_counted_by_size_until_their_tickets_drop() {
        let admission = Admission::with_memory(AdmissionConfig::default(), 4096);
        let small = admission.admit(mib(64), 0).unwrap();
        let _other = admission.admit(mib(256), 0).unwrap();
        let _adopted = admission.count(mib(64));
        assert_eq!(admission.held_by_size(), vec![(mib(64), 2), (mib(256), 1)]);
        drop(small);
        assert_eq!(admission.held_by_size(), vec![(mib(64), 1), (mib(256), 1)]);
        assert_eq!(admission.usage(), (2, 320));
    }
}
