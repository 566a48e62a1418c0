//! Named volumes: sparse ext4 disk images that outlive containers, attached
//! to a container's VM as disks; and the `-v` specs that name them or a
//! host directory (shared over virtio-9p).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub mod snapshot;

/// A volume's disk in its directory.
const DISK_FILE: &str = "volume.ext4";
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
    #[error("invalid volume option {0:?}: Hull's volumes take size=N[k|m|g]")]
    Option(String),
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

/// `size=1g`-style options as bytes.
pub fn parse_options<'a>(
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<u64>, VolumeError> {
    let mut size = None;
    for (key, value) in options {
        if key != "size" {
            return Err(VolumeError::Option(format!("{key}={value}")));
        }
        let lower = value.to_ascii_lowercase();
        let (number, scale) = match lower.chars().last() {
            Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
            Some('m') => (&lower[..lower.len() - 1], 1 << 20),
            Some('g') => (&lower[..lower.len() - 1], 1 << 30),
            _ => (lower.as_str(), 1),
        };
        let bytes = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .filter(|b| *b >= 16 << 20)
            .ok_or_else(|| VolumeError::Option(format!("{key}={value} (16m at least)")))?;
        size = Some(bytes);
    }
    Ok(size)
}

/// A volume as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    pub created: SystemTime,
    /// The disk's size in bytes.
    pub size: u64,
    /// Created for one container's `-v /path`, removed with it by `rm -v`.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume and where its disk is.
#[derive(Debug, Clone)]
pub struct Volume {
    pub record: VolumeRecord,
    pub disk: PathBuf,
    /// Bytes the sparse disk takes on the host.
    pub used_bytes: u64,
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
        let disk = dir.join(DISK_FILE);
        let used_bytes = fs::metadata(&disk).map_or(0, |m| m.blocks() * 512);
        Ok(Volume {
            record,
            disk,
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
    pub fn create(
        &self,
        name: &str,
        size: Option<u64>,
        anonymous: bool,
    ) -> Result<Volume, VolumeError> {
        check_name(name)?;
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
            let size = size.unwrap_or(DEFAULT_VOLUME_BYTES);
            let disk = dir.join(DISK_FILE);
            format_disk(&disk, size)?;
            let record = VolumeRecord {
                name: name.to_owned(),
                created: SystemTime::now(),
                size,
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
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<VolumeMount, VolumeError> {
        parse_bind(spec, || "anon".into())
    }

    #[test]
    fn volume_specs_parse_as_docker_reads_them() {
        let named = parse("data:/data").unwrap();
        assert_eq!(
            named.source,
            VolumeSource::Volume {
                name: "data".into()
            }
        );
        assert_eq!((named.target.as_str(), named.read_only), ("/data", false));
        let bind = parse("/srv/src:/src:ro").unwrap();
        assert_eq!(
            bind.source,
            VolumeSource::Bind {
                path: "/srv/src".into()
            }
        );
        assert!(bind.read_only);
        let anonymous = parse("/cache").unwrap();
        assert_eq!(
            anonymous.source,
            VolumeSource::Anonymous {
                name: "anon".into()
            }
        );
        assert!(parse("/cache:ro").unwrap().read_only);
        for bad in [
            "data:rel",
            "data:/",
            "./src:/src",
            "src/x:/src",
            "d:/x:rw:z",
            "x:/y:rx",
            "-a:/y",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_volumes_not_mounted_by_the_user_become_anonymous_volumes() {
        let mut mounts = vec![parse("data:/data").unwrap()];
        let image: Vec<String> = ["/data/", "/cache", "relative", "/logs/"]
            .map(String::from)
            .to_vec();
        let mut count = 0;
        add_image_volumes(&mut mounts, &image, || {
            count += 1;
            format!("anon{count}")
        });
        let added: Vec<(&str, &VolumeSource)> = mounts[1..]
            .iter()
            .map(|m| (m.target.as_str(), &m.source))
            .collect();
        assert_eq!(
            added,
            [
                (
                    "/cache",
                    &VolumeSource::Anonymous {
                        name: "anon1".into()
                    }
                ),
                (
                    "/logs",
                    &VolumeSource::Anonymous {
                        name: "anon2".into()
                    }
                )
            ]
        );
    }

    #[test]
    fn options_take_a_size() {
        assert_eq!(parse_options([("size", "1g")]).unwrap(), Some(1 << 30));
        assert_eq!(parse_options([("size", "64m")]).unwrap(), Some(64 << 20));
        assert_eq!(parse_options([]).unwrap(), None);
        assert!(parse_options([("size", "1k")]).is_err());
        assert!(parse_options([("type", "nfs")]).is_err());
    }

    #[test]
    fn volumes_are_created_once_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::open(dir.path()).unwrap();
        let made = volumes.create("data", Some(32 << 20), false).unwrap();
        assert_eq!(made.record.size, 32 << 20);
        assert!(made.disk.is_file());
        // Creating it again returns the same volume.
        let again = volumes.create("data", None, false).unwrap();
        assert_eq!(again.record.created, made.record.created);
        assert_eq!(volumes.list().len(), 1);
        assert!(matches!(
            volumes.create("!bad", None, false),
            Err(VolumeError::InvalidName(_))
        ));
        // A namespace's own `data` is another volume; a name cannot carry
        // a second namespace to reach into another's.
        volumes.create("data@acme", None, false).unwrap();
        assert_eq!(volumes.list().len(), 2);
        for bad in ["data@beta@acme", "data@", "@acme", "d@acme", "data@-x"] {
            assert!(
                matches!(
                    volumes.create(bad, None, false),
                    Err(VolumeError::InvalidName(_))
                ),
                "{bad}"
            );
        }
        volumes.remove("data@acme").unwrap();
        volumes.remove("data").unwrap();
        assert!(matches!(volumes.get("data"), Err(VolumeError::NotFound(_))));
    }
}
