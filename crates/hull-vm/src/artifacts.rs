//! Guest artifacts: the kernel and the initramfs that carries the agent.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::initramfs;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no guest kernel found (looked at {}): build one with guest/kernel/build.sh, or pass --kernel / HULL_KERNEL", list(.searched))]
    KernelNotFound { searched: Vec<PathBuf> },
    #[error("guest kernel {} does not exist", .0.display())]
    KernelMissing(PathBuf),
    #[error("no guest agent found (looked at {}): build it with scripts/build-agent.sh, or pass --agent / HULL_AGENT", list(.searched))]
    AgentNotFound { searched: Vec<PathBuf> },
    #[error("guest agent {} is dynamically linked; the guest has no libraries: build it with scripts/build-agent.sh", .0.display())]
    AgentNotStatic(PathBuf),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the initramfs {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where guest artifacts come from; `None` means "search the usual places".
#[derive(Debug, Clone, Default)]
pub struct ArtifactSources {
    pub kernel: Option<PathBuf>,
    pub agent: Option<PathBuf>,
}

/// The files a VM boots from.
#[derive(Debug, Clone)]
pub struct GuestArtifacts {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl GuestArtifacts {
    /// Finds the kernel and the agent, and packs the agent into an initramfs
    /// under `cache_dir`, keyed by the agent's hash so a rebuilt agent is
    /// never booted from a stale archive.
    pub fn prepare(sources: &ArtifactSources, cache_dir: &Path) -> Result<Self, ArtifactError> {
        let kernel = find_kernel(sources.kernel.as_deref())?;
        let agent_path = find_agent(sources.agent.as_deref())?;
        let agent = read(&agent_path)?;
        if !is_static_elf(&agent) {
            return Err(ArtifactError::AgentNotStatic(agent_path));
        }
        let digest = hex::encode(Sha256::digest(&agent));
        let initramfs = cache_dir.join(format!("initramfs-{}.cpio", &digest[..16]));
        if !initramfs.exists() {
            write_initramfs(&agent, &initramfs)?;
        }
        Ok(Self { kernel, initramfs })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| ArtifactError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(bytes)
}

fn write_initramfs(agent: &[u8], path: &Path) -> Result<(), ArtifactError> {
    let err = |source| ArtifactError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut archive = Vec::with_capacity(agent.len() + 4096);
    initramfs::build(agent, &mut archive).map_err(err)?;
    fs::write(&tmp, &archive).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Directories next to the running executable, where an install or a cargo
/// build puts Hull's other files.
fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
}

fn find_kernel(explicit: Option<&Path>) -> Result<PathBuf, ArtifactError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(ArtifactError::KernelMissing(path.to_owned()))
        };
    }
    let mut searched = Vec::new();
    if let Some(dir) = exe_dir() {
        searched.push(dir.join("../share/hull/vmlinux"));
    }
    searched.push(PathBuf::from("/usr/local/share/hull/vmlinux"));
    searched.push(PathBuf::from("/usr/share/hull/vmlinux"));
    first_file(searched).map_err(|searched| ArtifactError::KernelNotFound { searched })
}

fn find_agent(explicit: Option<&Path>) -> Result<PathBuf, ArtifactError> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let mut searched = Vec::new();
    if let Some(dir) = exe_dir() {
        searched.push(dir.join("../lib/hull/hull-agent"));
        // A cargo build: target/<profile>/hull, agent in target/<triple>/<profile>/.
        if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
            searched.push(
                target
                    .join("x86_64-unknown-linux-gnu")
                    .join(profile)
                    .join("hull-agent"),
            );
        }
    }
    searched.push(PathBuf::from("/usr/local/lib/hull/hull-agent"));
    first_file(searched).map_err(|searched| ArtifactError::AgentNotFound { searched })
}

fn first_file(candidates: Vec<PathBuf>) -> Result<PathBuf, Vec<PathBuf>> {
    match candidates.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(candidates),
    }
}

/// An ELF64 executable with no `PT_INTERP` program header needs no dynamic loader.
fn is_static_elf(bytes: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    let ph_offset = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (ph_size, ph_count) = (u16_at(0x36), u16_at(0x38));
    (0..ph_count).all(|i| {
        let at = ph_offset + i * ph_size;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_static() {
        let bytes = fs::read("/bin/sh").unwrap();
        assert!(!is_static_elf(&bytes));
    }

    #[test]
    fn a_static_executable_is_static() {
        // busybox-static is one of Hull's build dependencies.
        let bytes = fs::read("/bin/busybox").expect("busybox-static is installed");
        assert!(is_static_elf(&bytes));
    }

    #[test]
    fn garbage_is_not_an_executable() {
        assert!(!is_static_elf(b"#!/bin/sh\necho hi\n"));
        assert!(!is_static_elf(&[0x7f, b'E', b'L', b'F', 2]));
    }

    #[test]
    fn initramfs_is_keyed_by_the_agent_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        fs::write(&kernel, b"kernel").unwrap();
        let agent = dir.path().join("agent");
        fs::copy("/bin/busybox", &agent).unwrap();
        let sources = ArtifactSources {
            kernel: Some(kernel),
            agent: Some(agent.clone()),
        };
        let first = GuestArtifacts::prepare(&sources, dir.path()).unwrap();
        let second = GuestArtifacts::prepare(&sources, dir.path()).unwrap();
        assert_eq!(first.initramfs, second.initramfs);
        fs::write(&agent, fs::read("/bin/busybox").unwrap().repeat(2)).unwrap();
        let third = GuestArtifacts::prepare(&sources, dir.path()).unwrap();
        assert_ne!(first.initramfs, third.initramfs);
    }

    #[test]
    fn a_missing_kernel_is_named() {
        let sources = ArtifactSources {
            kernel: Some(PathBuf::from("/nonexistent/vmlinux")),
            agent: None,
        };
        let err = GuestArtifacts::prepare(&sources, Path::new("/tmp")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vmlinux"));
    }
}
