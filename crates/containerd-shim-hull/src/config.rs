//! Where the shim finds the guest kernel and agent, and how big its VMs are:
//! a TOML file (`/etc/hull/shim.toml`, or `HULL_SHIM_CONFIG`), then the
//! environment hulld also reads (`HULL_KERNEL`, `HULL_AGENT`, `HULL_ACCEL`;
//! `HULL_QEMU` is read by the QEMU backend itself). containerd starts shims
//! with its own environment, so either works.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hull_vm::AccelChoice;
use serde::Deserialize;

/// The configuration file read when `HULL_SHIM_CONFIG` is not set.
pub const DEFAULT_CONFIG: &str = "/etc/hull/shim.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the shim configuration {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid shim configuration {}", .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid accelerator {value:?} in {origin}")]
    Accel {
        value: String,
        origin: String,
        #[source]
        source: hull_vm::accel::UnknownAccel,
    },
}

/// The shim's settings; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShimConfig {
    /// The guest kernel (`vmlinux`); searched like hulld's when unset.
    pub kernel: Option<PathBuf>,
    /// The static `hull-agent` binary; searched like hulld's when unset.
    pub agent: Option<PathBuf>,
    /// `auto`, `kvm` or `tcg`.
    pub accel: String,
    /// vCPUs of each sandbox's VM.
    pub vcpus: u32,
    /// Memory of each sandbox's VM, in MiB.
    pub memory_mib: u32,
    /// Where each sandbox's VM keeps its sockets and logs. Unix socket
    /// paths are short, so not under containerd's (long) bundle paths.
    pub run_root: PathBuf,
    /// Where the initramfs packed from the agent is cached.
    pub cache_dir: PathBuf,
    /// Boot each size's first sandbox VM cold and clone the later ones
    /// from a template made of it.
    pub templates: bool,
    /// Where templates keep guest memory: tmpfs, so it stays in RAM.
    pub template_dir: PathBuf,
}

impl Default for ShimConfig {
    fn default() -> Self {
        Self {
            kernel: None,
            agent: None,
            accel: "auto".into(),
            vcpus: 1,
            memory_mib: 256,
            run_root: "/run/hull/shim".into(),
            cache_dir: "/var/lib/hull/shim".into(),
            templates: true,
            template_dir: "/dev/shm/hull-shim".into(),
        }
    }
}

impl ShimConfig {
    /// The file named by `HULL_SHIM_CONFIG` (which must exist) or the
    /// default file (if it exists), then the environment's overrides.
    pub fn load() -> Result<Self, ConfigError> {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let mut config = match env("HULL_SHIM_CONFIG") {
            Some(path) => Self::from_file(Path::new(&path))?,
            None if Path::new(DEFAULT_CONFIG).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG))?
            }
            None => Self::default(),
        };
        if let Some(kernel) = env("HULL_KERNEL") {
            config.kernel = Some(kernel.into());
        }
        if let Some(agent) = env("HULL_AGENT") {
            config.agent = Some(agent.into());
        }
        if let Some(accel) = env("HULL_ACCEL") {
            config.accel = accel.to_string_lossy().into_owned();
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn accel_choice(&self) -> Result<AccelChoice, ConfigError> {
        self.accel.parse().map_err(|source| ConfigError::Accel {
            value: self.accel.clone(),
            origin: "the shim configuration or HULL_ACCEL".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let config: ShimConfig = toml::from_str("kernel = \"/k\"\nmemory_mib = 512\n").unwrap();
        assert_eq!(config.kernel, Some(PathBuf::from("/k")));
        assert_eq!(config.memory_mib, 512);
        assert_eq!(config.vcpus, 1);
        assert_eq!(config.accel, "auto");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ShimConfig>("kernal = \"/k\"").is_err());
    }

    #[test]
    fn accelerators_parse_as_hulld_parses_them() {
        let mut config = ShimConfig::default();
        assert!(config.accel_choice().is_ok());
        config.accel = "tcg".into();
        assert!(config.accel_choice().is_ok());
        config.accel = "xen".into();
        assert!(config.accel_choice().is_err());
    }
}
