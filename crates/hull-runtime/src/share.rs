//! A VM's one virtio-9p share, through which host directories (volumes,
//! `-v /host:/path`, CRI's binds) reach it while it runs.
//!
//! 9p devices cannot be hot-plugged, so every VM (templates and their
//! clones too) boots with one share, its own directory. A directory
//! reaches a running VM by a bind mount on the host below that share,
//! which propagates into QEMU's mount namespace (see `hull_vm::jail`);
//! the agent then bind-mounts it from there into the container. Two VMs
//! given one host directory see each other's writes: this is how docker's
//! volumes are shared between running containers.
//!
//! The guest sees the share's top read-only: it holds only mount points,
//! which the host makes through a writable view of its own (`.host`), so
//! a guest can neither fill the host's disk there nor plant a symlink
//! where the next mount point goes. Every name below the share is still
//! opened by descriptor without following symlinks.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hull_vm::mount::{self, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

mod at;

/// The mount tag of hulld's VMs' share.
pub const TAG: &str = "hullshare";

/// The share's directory in a VM's run directory: what QEMU exports.
const SHARE_DIR: &str = "share";
/// The host's writable view of it, where mount points are made.
const HOST_VIEW: &str = "share.host";

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("cannot prepare the VM's share at {}", .path.display())]
    Prepare {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind-mount the host's {} into the VM's share at {}", .source_path.display(), .target.display())]
    Mount {
        source_path: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The share of one VM.
#[derive(Debug, Clone)]
pub struct Share {
    run_dir: PathBuf,
}

impl Share {
    /// The share of the VM whose run directory is `run_dir`.
    pub fn of(run_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_owned(),
        }
    }

    /// The directory QEMU exports.
    pub fn path(&self) -> PathBuf {
        self.run_dir.join(SHARE_DIR)
    }

    fn host_view(&self) -> PathBuf {
        self.run_dir.join(HOST_VIEW)
    }

    /// Makes the share: a read-only bind of the host's view whose later
    /// submounts propagate, since QEMU's mount namespace receives what is
    /// mounted below a shared mount of the host, and nothing else. Before
    /// QEMU starts.
    pub fn prepare(&self) -> Result<(), ShareError> {
        let path = self.path();
        let err = |source| ShareError::Prepare {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(self.host_view()).map_err(err)?;
        fs::create_dir_all(&path).map_err(err)?;
        let view = c_path(&self.host_view()).map_err(err)?;
        let tree = mount::detached(
            &view,
            false,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
        .map_err(err)?;
        let point = at::open_dir(None, &path).map_err(err)?;
        mount::attach(&tree, &point).map_err(err)?;
        let c_share = c_path(&path).map_err(err)?;
        // SAFETY: the path is a NUL-terminated string that outlives the
        // call; a propagation change takes no source, type or data.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                c_share.as_ptr(),
                std::ptr::null(),
                libc::MS_SHARED,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Bind-mounts the host directory `source` at `<container>/<index>` in
    /// the share, `nosuid,nodev`, read-only when asked (in every mount
    /// namespace it reaches, QEMU's among them), and returns that path
    /// relative to the share, for the agent.
    pub fn mount(
        &self,
        container: &str,
        index: usize,
        source: &Path,
        read_only: bool,
    ) -> Result<String, ShareError> {
        let relative = relative(container, index);
        let err = |source_err| ShareError::Mount {
            source_path: source.to_owned(),
            target: self.path().join(&relative),
            source: source_err,
        };
        let index = index.to_string();
        let view = at::open_dir(None, &self.host_view()).map_err(err)?;
        let dir = at::make_dir(&view, container).map_err(err)?;
        drop(at::make_dir(&dir, &index).map_err(err)?);
        // The mount lands on the point as the share shows it, so that it
        // propagates; the share's top is read-only, which a mount on it
        // does not mind.
        let share = at::open_dir(None, &self.path()).map_err(err)?;
        let dir = at::open_dir(Some(&share), Path::new(container)).map_err(err)?;
        let point = at::open_dir(Some(&dir), Path::new(&index)).map_err(err)?;
        let c_source = c_path(source).map_err(err)?;
        at::bind(&c_source, &point, read_only).map_err(err)?;
        Ok(relative)
    }

    /// Unmounts a container's directories from the share and removes their
    /// mount points. Names are never followed, and only empty directories
    /// are removed, so a mount that stayed can never have the host's files
    /// deleted through it.
    pub fn release(&self, container: &str) {
        if let Ok(share) = at::open_dir(None, &self.path()) {
            if let Ok(dir) = at::open_dir(Some(&share), Path::new(container)) {
                for name in at::names(&dir) {
                    at::unmount(&dir, &name);
                }
            }
        }
        let Ok(view) = at::open_dir(None, &self.host_view()) else {
            return;
        };
        if let Ok(dir) = at::open_dir(Some(&view), Path::new(container)) {
            for name in at::names(&dir) {
                at::remove_dir(&dir, &name);
            }
        }
        at::remove_dir(&view, container);
    }

    /// Releases every container's directories and the share itself.
    /// Returns whether it is gone: a caller removes the run directory only
    /// then, so nothing is ever removed through a bind that stayed.
    pub fn release_all(&self) -> bool {
        let (path, view) = (self.path(), self.host_view());
        for entry in fs::read_dir(&view).into_iter().flatten().flatten() {
            self.release(&entry.file_name().to_string_lossy());
        }
        if let Ok(c_share) = c_path(&path) {
            // Bounded: the share's own mount, and what a failed prepare
            // may have stacked on it.
            for _ in 0..8 {
                // SAFETY: the path is NUL-terminated and outlives the call.
                let rc = unsafe {
                    libc::umount2(c_share.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW)
                };
                if rc != 0 {
                    break;
                }
            }
        }
        for dir in [&path, &view] {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => return false,
            }
        }
        true
    }
}

/// Where [`Share::mount`] puts a container's `index`th directory, relative
/// to the share.
pub fn relative(container: &str, index: usize) -> String {
    format!("{container}/{index}")
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests;
