//! Onlining and offlining vCPUs, so a container's CPU limit can change
//! while it runs: the VM keeps every vCPU of its size, and the guest uses
//! only those online.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where the kernel lists its CPUs.
pub const SYSFS_CPUS: &str = "/sys/devices/system/cpu";

#[derive(Debug, thiserror::Error)]
pub enum CpusError {
    #[error("cannot read the vCPUs of this VM from {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed CPU list {0:?}")]
    Malformed(String),
    #[error("cannot keep {count} vCPUs online: this VM has {present}")]
    OutOfRange { count: u32, present: u32 },
    #[error("cannot take vCPU {cpu} {state}")]
    Write {
        cpu: u32,
        state: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Keeps vCPUs `0..count` of the CPU directory `root` online and the rest
/// offline.
pub fn set_online(root: &Path, count: u32) -> Result<(), CpusError> {
    let present = present(root)?;
    if count == 0 || count > present {
        return Err(CpusError::OutOfRange { count, present });
    }
    // vCPU 0 cannot be taken offline and has no `online` file.
    for cpu in 1..present {
        let online = cpu < count;
        let path = root.join(format!("cpu{cpu}/online"));
        let wanted = if online { "1" } else { "0" };
        if fs::read_to_string(&path).is_ok_and(|now| now.trim() == wanted) {
            continue;
        }
        fs::write(&path, wanted).map_err(|source| CpusError::Write {
            cpu,
            state: if online { "online" } else { "offline" },
            source,
        })?;
    }
    Ok(())
}

/// How many vCPUs the VM has: the kernel's `present` list, `0-N`.
fn present(root: &Path) -> Result<u32, CpusError> {
    let path = root.join("present");
    let text = fs::read_to_string(&path).map_err(|source| CpusError::Read { path, source })?;
    let text = text.trim();
    let malformed = || CpusError::Malformed(text.to_owned());
    let last = match text.split_once('-') {
        Some(("0", last)) => last,
        None if text == "0" => "0",
        _ => return Err(malformed()),
    };
    last.parse::<u32>()
        .ok()
        .and_then(|last| last.checked_add(1))
        .ok_or_else(malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(present: &str, cpus: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("present"), format!("{present}\n")).unwrap();
        for cpu in 1..cpus {
            let cpu_dir = dir.path().join(format!("cpu{cpu}"));
            fs::create_dir(&cpu_dir).unwrap();
            fs::write(cpu_dir.join("online"), "1\n").unwrap();
        }
        dir
    }

    fn online(dir: &Path, cpu: u32) -> String {
        fs::read_to_string(dir.join(format!("cpu{cpu}/online"))).unwrap()
    }

    #[test]
    fn offlines_the_cpus_beyond_the_count_and_onlines_them_again() {
        let dir = fake_sysfs("0-3", 4);
        set_online(dir.path(), 2).unwrap();
        assert_eq!(online(dir.path(), 1).trim(), "1");
        assert_eq!(online(dir.path(), 2), "0");
        assert_eq!(online(dir.path(), 3), "0");
        set_online(dir.path(), 4).unwrap();
        assert_eq!(online(dir.path(), 3), "1");
    }

    #[test]
    fn refuses_counts_the_vm_cannot_have() {
        let dir = fake_sysfs("0-1", 2);
        assert!(matches!(
            set_online(dir.path(), 3),
            Err(CpusError::OutOfRange {
                count: 3,
                present: 2
            })
        ));
        assert!(matches!(
            set_online(dir.path(), 0),
            Err(CpusError::OutOfRange { count: 0, .. })
        ));
        let single = fake_sysfs("0", 1);
        set_online(single.path(), 1).unwrap();
        let odd = fake_sysfs("0,2", 1);
        assert!(matches!(
            set_online(odd.path(), 1),
            Err(CpusError::Malformed(_))
        ));
    }
}
