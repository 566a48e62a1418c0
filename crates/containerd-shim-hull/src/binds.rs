//! Host bind mounts of the OCI spec (CRI's `/etc/hosts`, `/etc/resolv.conf`,
//! emptyDir and secret volumes, `ctr run --mount type=bind`).
//!
//! Directories reach the VM live, over the sandbox's one virtio-9p share:
//! each is bind-mounted on the host into the share's directory, which the
//! VM has had since it booted (9p devices cannot be hot-plugged), and the
//! agent bind-mounts it from there into the container. Two containers
//! naming one host directory (a pod's emptyDir) share it.
//!
//! Files (9p exports directories) are copied into the container's rootfs
//! image when it is built: a copy made at create time serves the files
//! that CRI writes once; later changes are not seen. The copies land in a
//! staging directory standing for the rootfs (an overlay on it, in
//! practice): every path is resolved in it component by component, and a
//! symlink met on the way is replaced rather than followed, so an image's
//! link can never lead a copy out to the host.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Share(#[from] hull_runtime::share::ShareError),
    #[error("invalid mount destination {0:?}: it must be an absolute path")]
    Destination(String),
    #[error("cannot copy the host's {} to {} in the container", .source_path.display(), .destination)]
    Copy {
        source_path: PathBuf,
        destination: String,
        #[source]
        source: io::Error,
    },
}

/// A host path bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Copies `bind` into the tree at `root`.
pub fn copy_into(root: &Path, bind: &Bind) -> Result<(), BindError> {
    let err = |source| BindError::Copy {
        source_path: bind.source.clone(),
        destination: bind.destination.clone(),
        source,
    };
    let target = prepare_target(root, &bind.destination)?;
    copy_tree(&bind.source, &target).map_err(err)
}

/// The path in `root` for `destination`, its parents made directories, and
/// whatever stood at the path itself removed if it is not a directory.
fn prepare_target(root: &Path, destination: &str) -> Result<PathBuf, BindError> {
    let bad = || BindError::Destination(destination.to_owned());
    let relative = Path::new(destination)
        .strip_prefix("/")
        .map_err(|_| bad())?;
    let components: Vec<_> = relative.components().collect();
    if components.is_empty()
        || components
            .iter()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(bad());
    }
    let io_err = |source| BindError::Copy {
        source_path: PathBuf::new(),
        destination: destination.to_owned(),
        source,
    };
    let mut path = root.to_owned();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let last = i + 1 == components.len();
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                fs::remove_file(&path).map_err(io_err)?;
                if !last {
                    fs::create_dir(&path).map_err(io_err)?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !last {
                    fs::create_dir(&path).map_err(io_err)?;
                }
            }
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(path)
}

/// Copies a file, a symlink (as a link) or a directory tree, keeping modes.
fn copy_tree(source: &Path, target: &Path) -> io::Result<()> {
    let meta = fs::metadata(source)?;
    if !meta.is_dir() {
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            fs::remove_dir_all(target)?;
        }
        fs::copy(source, target)?;
        return Ok(());
    }
    if !target.is_dir() {
        fs::create_dir(target)?;
    }
    fs::set_permissions(
        target,
        fs::Permissions::from_mode(meta.permissions().mode()),
    )?;
    for entry in fs::read_dir(source)? {
        let entry = entry?;
        let from = entry.path();
        let to = target.join(entry.file_name());
        let kind = entry.file_type()?;
        // What the image has there gives way, and a symlink is never
        // followed: only a real directory is merged into.
        match fs::symlink_metadata(&to) {
            Ok(existing) if existing.is_dir() => {
                if !kind.is_dir() {
                    fs::remove_dir_all(&to)?;
                }
            }
            Ok(_) => fs::remove_file(&to)?,
            Err(_) => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            copy_tree(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &Path, destination: &str) -> Bind {
        Bind {
            source: source.to_owned(),
            destination: destination.into(),
            read_only: false,
        }
    }

    #[test]
    fn a_file_lands_at_its_destination_with_parents_made() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::write(host.path().join("hosts"), "127.0.0.1 x\n").unwrap();
        copy_into(root.path(), &bind(&host.path().join("hosts"), "/etc/hosts")).unwrap();
        let copied = fs::read_to_string(root.path().join("etc/hosts")).unwrap();
        assert_eq!(copied, "127.0.0.1 x\n");
    }

    #[test]
    fn a_symlink_in_the_image_is_replaced_not_followed() {
        let host = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::write(host.path().join("resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        fs::write(outside.path().join("victim"), "safe").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("etc")).unwrap();
        let source = host.path().join("resolv.conf");
        copy_into(root.path(), &bind(&source, "/etc/victim")).unwrap();
        assert_eq!(
            fs::read_to_string(outside.path().join("victim")).unwrap(),
            "safe"
        );
        assert!(root.path().join("etc").is_dir());
        assert!(!fs::symlink_metadata(root.path().join("etc"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_directory_is_copied_whole() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(host.path().join("sub")).unwrap();
        fs::write(host.path().join("sub/token"), "t").unwrap();
        std::os::unix::fs::symlink("sub/token", host.path().join("link")).unwrap();
        copy_into(root.path(), &bind(host.path(), "/var/run/secrets")).unwrap();
        let dir = root.path().join("var/run/secrets");
        assert_eq!(fs::read_to_string(dir.join("sub/token")).unwrap(), "t");
        assert_eq!(
            fs::read_link(dir.join("link")).unwrap(),
            PathBuf::from("sub/token")
        );
    }

    #[test]
    fn destinations_must_be_absolute_and_plain() {
        let root = tempfile::tempdir().unwrap();
        for destination in ["etc/hosts", "/", "/etc/../../x"] {
            assert!(matches!(
                prepare_target(root.path(), destination),
                Err(BindError::Destination(_))
            ));
        }
    }
}
