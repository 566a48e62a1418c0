//! Named VM sizes, as Hyper.sh sold them: S1 (1 vCPU, 64 MiB) to L3
//! (8 vCPUs, 16 GiB). A request in CPUs and memory gets the smallest size
//! that holds it.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SizeError {
    #[error("unknown size {0:?}: the sizes are S1, S2, S3, S4, M1, M2, M3, L1, L2 and L3")]
    Unknown(String),
    #[error(
        "{cpus} CPUs and {memory_mib} MiB fit no size: the largest, L3, has 8 vCPUs and 16 GiB"
    )]
    TooLarge { cpus: f64, memory_mib: u64 },
    #[error("invalid pool {0:?}: expected a count of the default size (4) or SIZE=COUNT pairs (S1=4,M1=1)")]
    Pool(String),
    #[error("a {what} limit of {limit} is beyond the container's VM ({size}): a VM's size is fixed when it starts; create the container again with the larger limit")]
    BeyondSize {
        what: &'static str,
        limit: String,
        size: VmSize,
    },
    #[error("a memory limit of {} MiB is too small: a VM needs at least {} MiB", .0 >> 20, MIN_MEMORY_LIMIT >> 20)]
    MemoryTooSmall(u64),
    #[error("invalid {what} quantity {text:?}: {why}")]
    Quantity {
        what: &'static str,
        text: String,
        why: &'static str,
    },
}

/// The vCPUs and memory of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VmSize {
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// Hull's sizes, smallest first.
pub const SIZES: [(&str, VmSize); 10] = [
    ("S1", size(1, 64)),
    ("S2", size(1, 128)),
    ("S3", size(1, 256)),
    ("S4", size(1, 512)),
    ("M1", size(1, 1024)),
    ("M2", size(2, 2048)),
    ("M3", size(2, 4096)),
    ("L1", size(4, 4096)),
    ("L2", size(4, 8192)),
    ("L3", size(8, 16384)),
];

const fn size(vcpus: u32, memory_mib: u32) -> VmSize {
    VmSize { vcpus, memory_mib }
}

impl fmt::Display for VmSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vcpus = if self.vcpus == 1 { "vCPU" } else { "vCPUs" };
        write!(f, "{} {vcpus}, {} MiB", self.vcpus, self.memory_mib)
    }
}

impl VmSize {
    /// Hull's name for it (`S1`), if it is one of [`SIZES`].
    pub fn name(&self) -> Option<&'static str> {
        SIZES.iter().find(|(_, s)| s == self).map(|(n, _)| *n)
    }

    /// A short token naming it in paths and keys: `1x64`.
    pub fn token(&self) -> String {
        format!("{}x{}", self.vcpus, self.memory_mib)
    }

    /// The size a [`VmSize::token`] names.
    pub fn from_token(token: &str) -> Option<VmSize> {
        let (vcpus, memory_mib) = token.split_once('x')?;
        Some(VmSize {
            vcpus: vcpus.parse().ok()?,
            memory_mib: memory_mib.parse().ok()?,
        })
    }
}

/// The least memory a container may be limited to: the guest's kernel and
/// agent take about 20 MiB of it.
pub const MIN_MEMORY_LIMIT: u64 = 32 << 20;

/// A container's limits within its VM's size, as docker's `Memory` and
/// `NanoCpus` give them: the balloon leaves the guest that much memory and
/// the vCPUs beyond the CPUs (rounded up) are offline. Both can change
/// while it runs, within the size; `None` is all of the size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub nano_cpus: Option<u64>,
}

impl Limits {
    /// Docker's `Memory` (bytes) and `NanoCpus`, where 0 or less is none.
    pub fn from_docker(memory: Option<i64>, nano_cpus: Option<i64>) -> Limits {
        let positive = |value: Option<i64>| value.filter(|v| *v > 0).map(|v| v as u64);
        Limits {
            memory_bytes: positive(memory),
            nano_cpus: positive(nano_cpus),
        }
    }

    /// Whether the limits fit in a VM of `size`.
    pub fn check(&self, size: VmSize) -> Result<(), SizeError> {
        if let Some(bytes) = self.memory_bytes {
            if bytes < MIN_MEMORY_LIMIT {
                return Err(SizeError::MemoryTooSmall(bytes));
            }
            if bytes > u64::from(size.memory_mib) << 20 {
                return Err(SizeError::BeyondSize {
                    what: "memory",
                    limit: format!("{} MiB", bytes.div_ceil(1 << 20)),
                    size,
                });
            }
        }
        if let Some(nano_cpus) = self.nano_cpus {
            if nano_cpus > u64::from(size.vcpus) * 1_000_000_000 {
                return Err(SizeError::BeyondSize {
                    what: "CPU",
                    limit: format!("{} CPUs", nano_cpus as f64 / 1e9),
                    size,
                });
            }
        }
        Ok(())
    }

    /// The limits of `self` with those `update` sets replaced.
    pub fn updated(self, update: Limits) -> Limits {
        Limits {
            memory_bytes: update.memory_bytes.or(self.memory_bytes),
            nano_cpus: update.nano_cpus.or(self.nano_cpus),
        }
    }

    /// The memory the guest of a VM of `size` is left.
    pub fn guest_memory(&self, size: VmSize) -> u64 {
        let all = u64::from(size.memory_mib) << 20;
        self.memory_bytes.map_or(all, |bytes| bytes.min(all))
    }

    /// The vCPUs kept online in a VM of `size`.
    pub fn online_cpus(&self, size: VmSize) -> u32 {
        self.nano_cpus.map_or(size.vcpus, |nano| {
            let cpus = nano.div_ceil(1_000_000_000);
            u32::try_from(cpus).unwrap_or(u32::MAX).clamp(1, size.vcpus)
        })
    }
}

/// The pools `hulld --pool` asks for: `4` (of the default size, `None`)
/// or `S1=4,M1=1`.
pub fn parse_pools(text: &str) -> Result<Vec<(Option<VmSize>, usize)>, SizeError> {
    let invalid = || SizeError::Pool(text.to_owned());
    if let Ok(count) = text.trim().parse::<usize>() {
        return Ok(vec![(None, count)]);
    }
    let mut pools: Vec<(Option<VmSize>, usize)> = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, count) = pair.split_once('=').ok_or_else(invalid)?;
        let size = named(name.trim())?;
        let count = count.trim().parse().map_err(|_| invalid())?;
        if pools.iter().any(|(s, _)| *s == Some(size)) {
            return Err(invalid());
        }
        pools.push((Some(size), count));
    }
    if pools.is_empty() {
        return Err(invalid());
    }
    Ok(pools)
}

/// The size named `name` (any case).
pub fn named(name: &str) -> Result<VmSize, SizeError> {
    SIZES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, size)| *size)
        .ok_or_else(|| SizeError::Unknown(name.to_owned()))
}

/// The smallest size with at least `cpus` vCPUs and `memory_mib` MiB.
pub fn fitting(cpus: f64, memory_mib: u64) -> Result<VmSize, SizeError> {
    SIZES
        .iter()
        .map(|(_, size)| *size)
        .find(|s| f64::from(s.vcpus) >= cpus && u64::from(s.memory_mib) >= memory_mib)
        .ok_or(SizeError::TooLarge { cpus, memory_mib })
}

/// A Kubernetes CPU quantity (`2`, `0.5`, `500m`) in CPUs.
pub fn parse_cpus(text: &str) -> Result<f64, SizeError> {
    let invalid = |why| SizeError::Quantity {
        what: "CPU",
        text: text.to_owned(),
        why,
    };
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('m') {
        Some(milli) => (milli, 1000.0),
        None => (trimmed, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| invalid("expected a number of CPUs, such as 2, 0.5 or 500m"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(invalid("it must be a positive number"));
    }
    Ok(value / scale)
}

/// A Kubernetes memory quantity (`128Mi`, `1Gi`, `512M`, `1e9`, bytes) in
/// MiB, rounded up.
pub fn parse_memory_mib(text: &str) -> Result<u64, SizeError> {
    let invalid = |why| SizeError::Quantity {
        what: "memory",
        text: text.to_owned(),
        why,
    };
    let trimmed = text.trim();
    const SUFFIXES: [(&str, f64); 10] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("", 1.0),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| trimmed.strip_suffix(suffix).map(|n| (n, *scale)))
        .expect("the empty suffix matches");
    let value: f64 = number
        .parse()
        .map_err(|_| invalid("expected bytes or a number with Ki, Mi, Gi, Ti, k, M, G or T"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(invalid("it must be a positive amount"));
    }
    Ok((value * scale / 1048576.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_sizes_both_ways() {
        let m2 = named("M2").unwrap();
        assert_eq!(VmSize::from_token(&m2.token()), Some(m2));
        for bad in ["", "2", "2x", "x2048", "2x2g"] {
            assert_eq!(VmSize::from_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_are_found_by_name_in_any_case() {
        assert_eq!(named("s1").unwrap(), size(1, 64));
        assert_eq!(named("M2").unwrap(), size(2, 2048));
        assert_eq!(named("L3").unwrap(), size(8, 16384));
        assert!(matches!(named("XL"), Err(SizeError::Unknown(_))));
    }

    #[test]
    fn a_request_gets_the_smallest_size_that_holds_it() {
        assert_eq!(fitting(0.5, 100).unwrap(), size(1, 128));
        assert_eq!(fitting(1.0, 64).unwrap(), size(1, 64));
        assert_eq!(fitting(2.0, 100).unwrap(), size(2, 2048));
        assert_eq!(fitting(3.0, 5000).unwrap(), size(4, 8192));
        assert!(matches!(fitting(9.0, 1), Err(SizeError::TooLarge { .. })));
    }

    #[test]
    fn limits_stay_within_the_size_and_round_cpus_up() {
        let m2 = size(2, 2048);
        let limits = Limits {
            memory_bytes: Some(1500 << 20),
            nano_cpus: Some(1_500_000_000),
        };
        limits.check(m2).unwrap();
        assert_eq!(limits.guest_memory(m2), 1500 << 20);
        assert_eq!(limits.online_cpus(m2), 2);
        let half = Limits {
            memory_bytes: None,
            nano_cpus: Some(500_000_000),
        };
        assert_eq!(half.online_cpus(m2), 1);
        assert_eq!(half.guest_memory(m2), 2048 << 20);
        assert_eq!(Limits::default().online_cpus(m2), 2);
        let updated = limits.updated(half);
        assert_eq!(updated.memory_bytes, Some(1500 << 20));
        assert_eq!(updated.nano_cpus, Some(500_000_000));

        let too_much = Limits {
            memory_bytes: Some(3000 << 20),
            nano_cpus: None,
        };
        let err = too_much.check(m2).unwrap_err().to_string();
        assert!(
            err.contains("3000 MiB") && err.contains("2 vCPUs, 2048 MiB"),
            "{err}"
        );
        let too_many = Limits {
            memory_bytes: None,
            nano_cpus: Some(3_000_000_000),
        };
        assert!(matches!(
            too_many.check(m2),
            Err(SizeError::BeyondSize { what: "CPU", .. })
        ));
        let too_little = Limits {
            memory_bytes: Some(8 << 20),
            nano_cpus: None,
        };
        assert_eq!(
            too_little.check(m2),
            Err(SizeError::MemoryTooSmall(8 << 20))
        );
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(parse_cpus("500m").unwrap(), 0.5);
        assert_eq!(parse_cpus("2").unwrap(), 2.0);
        assert_eq!(parse_cpus("0.25").unwrap(), 0.25);
        assert!(parse_cpus("two").is_err());
        assert!(parse_cpus("-1").is_err());
        assert_eq!(parse_memory_mib("128Mi").unwrap(), 128);
        assert_eq!(parse_memory_mib("1Gi").unwrap(), 1024);
        assert_eq!(parse_memory_mib("512M").unwrap(), 489);
        assert_eq!(parse_memory_mib("1048576").unwrap(), 1);
        assert_eq!(parse_memory_mib("1e9").unwrap(), 954);
        assert!(parse_memory_mib("lots").is_err());
        assert!(parse_memory_mib("12Zi").is_err());
    }

    #[test]
    fn pools_are_a_count_or_sizes_with_counts() {
        assert_eq!(parse_pools("4").unwrap(), [(None, 4)]);
        assert_eq!(
            parse_pools("S1=4, m1=1").unwrap(),
            [
                (Some(named("S1").unwrap()), 4),
                (Some(named("M1").unwrap()), 1)
            ]
        );
        for bad in ["", "S1", "S1=x", "X9=1", "S1=1,S1=2"] {
            assert!(parse_pools(bad).is_err(), "{bad}");
        }
    }
}
