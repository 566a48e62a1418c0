//! Named volumes that outlive containers, and the `-v` specs that name them
//! or a host directory.
//!
//! A volume is of one of two kinds, fixed when it is made:
//! - **dir** (docker's `local` driver, the default on the operator's
//!   socket): a host directory that reaches each VM over its 9p share
//!   ([`crate::share`]), so any number of running containers mount it at
//!   once and see each other's writes.
//! - **block** (`--opt type=block`, Hyper.sh's, and every tenant's): a
//!   sparse ext4 disk image of a fixed size, attached to one VM at a time;
//!   faster, bounded, billed by its size, and able to be snapshotted.
//!   Volumes made before dir volumes existed are block volumes.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub mod snapshot;

/// A block volume's disk in its directory.
const DISK_FILE: &str = "volume.ext4";
/// A dir volume's data in its directory, as docker names it.
const DATA_DIR: &str = "_data";
const RECORD_FILE: &str = "volume.json";
/// A volume's size unless `size` says otherwise; sparse, so only what is
/// written takes space.
pub const DEFAULT_VOLUME_BYTES: u64 = 10 << 30;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NotFound(String),
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, two characters at least")]
    InvalidName(String),
    #[error("invalid volume specification {spec:?}: {why}")]
    Spec { spec: String, why: &'static str },
    #[error("invalid volume option {0:?}: Hull's volumes take type=dir|block and, for a block volume, size=N[k|m|g]")]
    Option(String),
    #[error("volume {0}: a tenant's volumes are block volumes, one container's at a time (their size is what is billed); drop type=dir")]
    TenantDir(String),
    #[error("volume {0} is a directory volume: {1}")]
    NotBlock(String, &'static str),
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse { name: String, containers: String },
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot format the volume's disk {}: {message}", .path.display())]
    Format { path: PathBuf, message: String },
}

/// Where a container's volume comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum VolumeSource {
    /// A named volume, created on first use.
    Volume { name: String },
    /// A volume made for this container alone (`-v /path`), which `rm -v`
    /// removes with it.
    Anonymous { name: String },
    /// A host directory.
    Bind { path: PathBuf },
}

impl VolumeSource {
    /// The volume's name, unless it is a host directory.
    pub fn volume_name(&self) -> Option<&str> {
        match self {
            Self::Volume { name } | Self::Anonymous { name } => Some(name),
            Self::Bind { .. } => None,
        }
    }
}

/// One `-v` of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: VolumeSource,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
}

/// Docker's `-v` (and `Binds`): `name:/path[:ro]`, `/host:/path[:ro]`,
/// or `/path` for a new anonymous volume (named by `anonymous`).
pub fn parse_bind(
    spec: &str,
    anonymous: impl FnOnce() -> String,
) -> Result<VolumeMount, VolumeError> {
    let invalid = |why| VolumeError::Spec {
        spec: spec.to_owned(),
        why,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, mode) = match parts[..] {
        [target] => (None, target, ""),
        [source, target] if target.starts_with('/') => (Some(source), target, ""),
        [target, mode] => (None, target, mode),
        [source, target, mode] => (Some(source), target, mode),
        _ => return Err(invalid("expected [source:]/path[:ro|rw]")),
    };
    if !target.starts_with('/') || target == "/" {
        return Err(invalid(
            "the path in the container must be absolute, and not /",
        ));
    }
    let read_only = match mode {
        "" | "rw" => false,
        "ro" => true,
        _ => return Err(invalid("the mode must be ro or rw")),
    };
    let source = match source {
        None => VolumeSource::Anonymous { name: anonymous() },
        Some(path) if path.starts_with('/') => VolumeSource::Bind { path: path.into() },
        Some(relative) if relative.starts_with('.') || relative.contains('/') => {
            return Err(invalid("a host path must be absolute"))
        }
        Some(name) => {
            check_name(name)?;
            VolumeSource::Volume { name: name.into() }
        }
    };
    Ok(VolumeMount {
        source,
        target: target.to_owned(),
        read_only,
    })
}

/// Adds an anonymous volume for each of the image's `VOLUME` paths that no
/// mount in `mounts` covers already, as docker does at create.
pub fn add_image_volumes<'a>(
    mounts: &mut Vec<VolumeMount>,
    image_volumes: impl IntoIterator<Item = &'a String>,
    mut anonymous: impl FnMut() -> String,
) {
    let normal = |path: &str| path.trim_end_matches('/').to_owned();
    for path in image_volumes {
        let target = normal(path);
        // Docker's builder only writes absolute paths; skip anything else.
        if !target.starts_with('/') || mounts.iter().any(|m| normal(&m.target) == target) {
            continue;
        }
        mounts.push(VolumeMount {
            source: VolumeSource::Anonymous { name: anonymous() },
            target,
            read_only: false,
        });
    }
}

/// Docker's rule for a volume's (or snapshot's) name, which may be
/// qualified by a namespace as `name@namespace`: how the API gives each
/// tenant names of its own, which no other can spell.
fn check_name(name: &str) -> Result<(), VolumeError> {
    let word = |text: &str| {
        let mut chars = text.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    let valid = match name.split_once('@') {
        Some((plain, namespace)) => plain.len() >= 2 && word(plain) && word(namespace),
        None => name.len() >= 2 && word(name),
    };
    if valid {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.to_owned()))
    }
}

/// What a volume is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A sparse ext4 disk image, one VM's at a time.
    #[default]
    Block,
    /// A host directory shared with every VM that mounts it.
    Dir,
}

impl VolumeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Dir => "dir",
        }
    }
}

/// What a volume's creator asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// A block volume's size in bytes.
    pub size: Option<u64>,
    /// `None`: the name's default (see [`Volumes::create`]).
    pub kind: Option<VolumeKind>,
}

/// Docker's `--opt` pairs: `type=dir|block`, `size=1g` (a block volume's).
pub fn parse_options<'a>(
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<VolumeOptions, VolumeError> {
    let mut parsed = VolumeOptions::default();
    for (key, value) in options {
        match key {
            "type" => {
                parsed.kind = Some(match value {
                    "dir" => VolumeKind::Dir,
                    "block" => VolumeKind::Block,
                    _ => return Err(VolumeError::Option(format!("{key}={value}"))),
                })
            }
            "size" => parsed.size = Some(parse_size(value)?),
            _ => return Err(VolumeError::Option(format!("{key}={value}"))),
        }
    }
    if parsed.size.is_some() && parsed.kind == Some(VolumeKind::Dir) {
        return Err(VolumeError::Option(
            "size with type=dir (a directory volume takes what it needs)".into(),
        ));
    }
    // A size asks for a disk.
    if parsed.size.is_some() {
        parsed.kind = Some(VolumeKind::Block);
    }
    Ok(parsed)
}

/// `1g`-style sizes as bytes, 16 MiB at least.
fn parse_size(value: &str) -> Result<u64, VolumeError> {
    let lower = value.to_ascii_lowercase();
    let (number, scale) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower.as_str(), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|b| *b >= 16 << 20)
        .ok_or_else(|| VolumeError::Option(format!("size={value} (16m at least)")))
}

/// A volume as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub created: SystemTime,
    /// A block volume's disk size in bytes; 0 for a dir volume.
    pub size: u64,
    /// Absent in records made before dir volumes: those are block volumes.
    #[serde(default)]
    pub kind: VolumeKind,
    /// Created for one container's `-v /path`, removed with it by `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume and where its data is.
#[derive(Debug, Clone)]
pub struct Volume {
    pub record: VolumeRecord,
    /// A block volume's disk image, or a dir volume's directory.
    pub path: PathBuf,
    /// Bytes a block volume's sparse disk takes on the host; 0 for a dir
    /// volume, whose tree is not walked to list it.
    pub used_bytes: u64,
}

impl Volume {
    pub fn kind(&self) -> VolumeKind {
        self.record.kind
    }
}

/// Every named volume, one directory each.
pub struct Volumes {
    dir: PathBuf,
    /// Orders creation and removal.
    lock: Mutex<()>,
}

impl Volumes {
    pub fn open(dir: &Path) -> Result<Self, VolumeError> {
        fs::create_dir_all(dir).map_err(|source| VolumeError::Io {
            what: "create",
            path: dir.to_owned(),
            source,
        })?;
        crate::records::sweep_unrecorded(dir, RECORD_FILE);
        crate::records::sweep_unrecorded(
            &dir.join(snapshot::SNAPSHOTS_DIR),
            snapshot::SNAPSHOT_RECORD,
        );
        Ok(Self {
            dir: dir.to_owned(),
            lock: Mutex::new(()),
        })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        check_name(name).map_err(|_| VolumeError::NotFound(name.to_owned()))?;
        let dir = self.dir.join(name);
        let bytes =
            fs::read(dir.join(RECORD_FILE)).map_err(|_| VolumeError::NotFound(name.to_owned()))?;
        let record: VolumeRecord =
            serde_json::from_slice(&bytes).map_err(|_| VolumeError::NotFound(name.to_owned()))?;
        let (path, used_bytes) = match record.kind {
            VolumeKind::Block => {
                let disk = dir.join(DISK_FILE);
                let used = fs::metadata(&disk).map_or(0, |m| m.blocks() * 512);
                (disk, used)
            }
            VolumeKind::Dir => (dir.join(DATA_DIR), 0),
        };
        Ok(Volume {
            record,
            path,
            used_bytes,
        })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Vec<Volume> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names.iter().filter_map(|n| self.get(n).ok()).collect()
    }

    /// Creates the volume, or returns it if it exists (as docker does).
    /// Unless `options` say, a tenant's (a namespaced name) is a block
    /// volume, as Hyper.sh's were, and the operator's a dir volume, as
    /// docker's are; a tenant's cannot be a dir volume, whose size has
    /// no bound.
    pub fn create(
        &self,
        name: &str,
        options: VolumeOptions,
        anonymous: bool,
    ) -> Result<Volume, VolumeError> {
        check_name(name)?;
        let tenant = name.contains('@');
        let kind = match (options.kind, tenant) {
            (Some(VolumeKind::Dir), true) => return Err(VolumeError::TenantDir(name.to_owned())),
            (Some(kind), _) => kind,
            (None, true) => VolumeKind::Block,
            (None, false) => VolumeKind::Dir,
        };
        let _guard = self.guard();
        if let Ok(volume) = self.get(name) {
            return Ok(volume);
        }
        let dir = self.dir.join(name);
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| VolumeError::Io { what, path, source }
        };
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let made = (|| {
            let size = match kind {
                VolumeKind::Block => {
                    let size = options.size.unwrap_or(DEFAULT_VOLUME_BYTES);
                    format_disk(&dir.join(DISK_FILE), size)?;
                    size
                }
                VolumeKind::Dir => {
                    let data = dir.join(DATA_DIR);
                    fs::create_dir(&data).map_err(io("create", &data))?;
                    0
                }
            };
            let record = VolumeRecord {
                name: name.to_owned(),
                created: SystemTime::now(),
                size,
                kind,
                anonymous,
            };
            let path = dir.join(RECORD_FILE);
            crate::records::write_json(&path, &record).map_err(io("write", &path))
        })();
        if let Err(err) = made {
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        self.get(name)
    }

    /// Removes the volume and its data; the caller checks it is unused.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.get(name)?;
        let _guard = self.guard();
        crate::run::remove_dir(&self.dir.join(name));
        Ok(())
    }
}

/// Writes what the host still caches of a volume's disk to stable storage.
pub fn flush_disk(disk: &Path) -> Result<(), VolumeError> {
    fs::File::open(disk)
        .and_then(|file| file.sync_all())
        .map_err(|source| VolumeError::Io {
            what: "flush",
            path: disk.to_owned(),
            source,
        })
}

/// A sparse file of `size` bytes holding an empty ext4 filesystem.
pub(crate) fn format_disk(path: &Path, size: u64) -> Result<(), VolumeError> {
    let io = |source| VolumeError::Io {
        what: "create",
        path: path.to_owned(),
        source,
    };
    fs::File::create(path)
        .and_then(|file| file.set_len(size))
        .map_err(io)?;
    // Lazy initialisation keeps this to a few milliseconds on a sparse file.
    let output = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| VolumeError::Format {
            path: path.to_owned(),
            message: format!("cannot run mkfs.ext4 ({e}); install e2fsprogs"),
        })?;
    if !output.status.success() {
        return Err(VolumeError::Format {
            path: path.to_owned(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
