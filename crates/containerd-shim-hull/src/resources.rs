//! How big a sandbox's VM is, and what its guest is held to within that
//! size, from what containerd says of the sandbox and its containers.
//!
//! The size is fixed when the VM boots, from the sandbox's first
//! container: Hull's own `io.hull.size` annotation (a pod annotation that
//! containerd passes on when the runtime's `pod_annotations` lists it),
//! else the smallest size that holds the pod's limits (CRI's
//! `io.kubernetes.cri.sandbox-*` annotations, or a lone container's own
//! `linux.resources`, as `ctr run --memory-limit --cpus` sets them), else
//! the shim's configured size. Within the size, the guest is held to the
//! sum of its workload containers' limits while every one has a limit
//! (else to the pod's, if given): the balloon takes back the memory above
//! it and the vCPUs beyond it go offline. Updates move the hold, never the
//! size.

use std::collections::HashMap;

use hull_runtime::size::{self, Limits, SizeError, VmSize};
use oci_spec::runtime::LinuxResources;

use crate::config::ShimConfig;
use crate::spec::CONTAINER_TYPE;

/// The pod annotation naming the VM's size (`S1` … `L3`).
pub const SIZE_ANNOTATION: &str = "io.hull.size";
/// CRI's annotations of the pod's resources: the sum of its containers'
/// limits (containerd 1.6.7 on, from kubelet 1.23's sandbox config).
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("invalid annotation {name}={value:?}: {why}")]
    Annotation {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("the sandbox's resources fit no VM size")]
    Size(#[from] SizeError),
    #[error("the update's resources are not valid JSON")]
    Update(#[source] serde_json::Error),
}

/// The limits a container's `linux.resources` sets: memory, and CPUs as
/// quota over period.
pub fn limits_of(resources: &LinuxResources) -> Limits {
    let memory = resources
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|bytes| *bytes > 0);
    let cpu = resources.cpu().as_ref();
    let quota = cpu.and_then(|c| c.quota()).filter(|q| *q > 0);
    let period = cpu.and_then(|c| c.period()).filter(|p| *p > 0);
    Limits {
        memory_bytes: memory.map(|bytes| bytes as u64),
        nano_cpus: nano_cpus(quota.map(|q| q as u64), period),
    }
}

/// The resources of a Task API `update`: containerd sends the runtime
/// spec's `LinuxResources` as JSON.
pub fn limits_of_update(json: &[u8]) -> Result<Limits, ResourceError> {
    let resources: LinuxResources = serde_json::from_slice(json).map_err(ResourceError::Update)?;
    Ok(limits_of(&resources))
}

fn nano_cpus(quota_us: Option<u64>, period_us: Option<u64>) -> Option<u64> {
    let (quota, period) = (quota_us?, period_us?);
    (period > 0).then(|| quota.saturating_mul(1_000_000_000) / period)
}

/// The pod's limits from CRI's sandbox annotations.
pub fn sandbox_limits(annotations: &HashMap<String, String>) -> Result<Limits, ResourceError> {
    let number = |name: &'static str| -> Result<Option<u64>, ResourceError> {
        match annotations.get(name).map(|v| v.trim()) {
            None | Some("") => Ok(None),
            Some(value) => match value.parse::<i64>() {
                Ok(n) => Ok((n > 0).then_some(n as u64)),
                Err(e) => Err(ResourceError::Annotation {
                    name,
                    value: value.to_owned(),
                    why: e.to_string(),
                }),
            },
        }
    };
    Ok(Limits {
        memory_bytes: number(SANDBOX_MEMORY)?,
        nano_cpus: nano_cpus(number(SANDBOX_CPU_QUOTA)?, number(SANDBOX_CPU_PERIOD)?),
    })
}

/// Whether a container is the pod itself (CRI's pause container), which
/// takes no share of the pod's limits.
pub fn is_sandbox_container(annotations: &HashMap<String, String>) -> bool {
    annotations.get(CONTAINER_TYPE).map(String::as_str) == Some("sandbox")
}

/// The VM's size for a sandbox whose first container carries
/// `annotations` and `limits` (the pod's, or the lone container's).
pub fn vm_size(
    config: &ShimConfig,
    annotations: &HashMap<String, String>,
    limits: Limits,
) -> Result<VmSize, ResourceError> {
    let size = match annotations.get(SIZE_ANNOTATION) {
        Some(name) => size::named(name.trim())?,
        None if limits == Limits::default() => VmSize {
            vcpus: config.vcpus,
            memory_mib: config.memory_mib,
        },
        None => {
            // A dimension without a limit gets at least the configured size.
            let cpus = limits
                .nano_cpus
                .map_or(f64::from(config.vcpus), |n| n as f64 / 1e9);
            let memory_mib = limits
                .memory_bytes
                .map_or(u64::from(config.memory_mib), |b| b.div_ceil(1 << 20));
            size::fitting(cpus, memory_mib)?
        }
    };
    limits.check(size)?;
    Ok(size)
}

/// What the guest is held to: the sum of the workloads' limits in each
/// dimension where every workload has one, else the pod's.
pub fn guest_hold(pod: Limits, workloads: &[Limits]) -> Limits {
    let sum = |each: fn(&Limits) -> Option<u64>| -> Option<u64> {
        if workloads.is_empty() {
            return None;
        }
        workloads.iter().map(each).sum()
    };
    Limits {
        memory_bytes: sum(|l| l.memory_bytes).or(pod.memory_bytes),
        nano_cpus: sum(|l| l.nano_cpus).or(pod.nano_cpus),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn ctr_limits_come_from_the_specs_resources() {
        let resources: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 100663296}, "cpu": {"quota": 150000, "period": 100000}}"#,
        )
        .unwrap();
        let limits = limits_of(&resources);
        assert_eq!(limits.memory_bytes, Some(96 * MIB));
        assert_eq!(limits.nano_cpus, Some(1_500_000_000));
        let unlimited: LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": -1}, "cpu": {"shares": 2}}"#).unwrap();
        assert_eq!(limits_of(&unlimited), Limits::default());
    }

    #[test]
    fn updates_are_runtime_spec_json() {
        let limits = limits_of_update(br#"{"memory": {"limit": 67108864}}"#).unwrap();
        assert_eq!(limits.memory_bytes, Some(64 * MIB));
        assert!(limits_of_update(b"{").is_err());
    }

    #[test]
    fn the_pods_limits_come_from_cris_annotations() {
        let pod = annotations(&[
            (SANDBOX_MEMORY, "536870912"),
            (SANDBOX_CPU_QUOTA, "200000"),
            (SANDBOX_CPU_PERIOD, "100000"),
        ]);
        let limits = sandbox_limits(&pod).unwrap();
        assert_eq!(limits.memory_bytes, Some(512 * MIB));
        assert_eq!(limits.nano_cpus, Some(2_000_000_000));
        // Kubelet writes 0 for a pod without limits.
        let none = annotations(&[(SANDBOX_MEMORY, "0"), (SANDBOX_CPU_QUOTA, "0")]);
        assert_eq!(sandbox_limits(&none).unwrap(), Limits::default());
        let bad = annotations(&[(SANDBOX_MEMORY, "lots")]);
        assert!(sandbox_limits(&bad).is_err());
    }

    #[test]
    fn the_size_is_named_fitted_or_configured() {
        let config = ShimConfig::default();
        let none = Limits::default();
        assert_eq!(
            vm_size(&config, &annotations(&[(SIZE_ANNOTATION, "m1")]), none).unwrap(),
            size::named("M1").unwrap()
        );
        assert_eq!(
            vm_size(&config, &HashMap::new(), none).unwrap(),
            VmSize {
                vcpus: 1,
                memory_mib: 256
            }
        );
        let big = Limits {
            memory_bytes: Some(1500 * MIB),
            nano_cpus: None,
        };
        assert_eq!(
            vm_size(&config, &HashMap::new(), big).unwrap(),
            size::named("M2").unwrap()
        );
        let two_cpus = Limits {
            memory_bytes: None,
            nano_cpus: Some(2_000_000_000),
        };
        assert_eq!(
            vm_size(&config, &HashMap::new(), two_cpus).unwrap(),
            size::named("M2").unwrap()
        );
        assert!(vm_size(&config, &annotations(&[(SIZE_ANNOTATION, "XL")]), none).is_err());
        // Limits beyond the named size are refused, not silently cut.
        assert!(vm_size(&config, &annotations(&[(SIZE_ANNOTATION, "S1")]), big).is_err());
    }

    #[test]
    fn the_guest_is_held_to_its_workloads_or_else_the_pod() {
        let limits = |memory_mib: Option<u64>, cpus: Option<u64>| Limits {
            memory_bytes: memory_mib.map(|m| m * MIB),
            nano_cpus: cpus.map(|c| c * 1_000_000_000),
        };
        let pod = limits(Some(512), Some(2));
        assert_eq!(guest_hold(pod, &[]), pod);
        assert_eq!(
            guest_hold(pod, &[limits(Some(100), Some(1)), limits(Some(50), None)]),
            limits(Some(150), Some(2))
        );
        assert_eq!(
            guest_hold(Limits::default(), &[limits(None, None)]),
            Limits::default()
        );
    }
}
