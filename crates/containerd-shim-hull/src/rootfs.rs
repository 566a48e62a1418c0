//! A container's root filesystem for the VM: containerd's snapshot mounts
//! (an overlay on the host) flattened into a read-only erofs image in the
//! bundle, which the VM gets as a hot-plugged disk under a tmpfs overlay.
//!
//! An image rather than a virtio-9p share of the merged directory: virtio
//! devices of QEMU's microvm cannot be hot-plugged, so a share would be
//! fixed at boot, while a sandbox's containers arrive one by one; disks
//! hot-plug (as every Hull container's do) and erofs reads faster in the
//! guest than 9p. The price: the container's writes stay in its VM (they
//! do not reach containerd's snapshot), and creating a container copies
//! its rootfs once.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount the container's {kind} rootfs at {}", .target.display())]
    Mount {
        kind: String,
        target: PathBuf,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("cannot build the rootfs image {}", .image.display())]
    Image {
        image: PathBuf,
        #[source]
        source: hull_image::erofs::ErofsError,
    },
    #[error("cannot unmount {}", .target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The image file a container's rootfs becomes, in its bundle.
pub fn image_path(bundle: &Path) -> PathBuf {
    bundle.join("hull-rootfs.erofs")
}

/// Mounts `mounts` at the bundle's `rootfs` (a bundle made with a rootfs
/// already there, as `ctr run --rootfs` makes, has none), builds the image
/// from it, and unmounts them again: the VM needs only the image.
pub async fn build(bundle: &Path, mounts: &[Mount]) -> Result<PathBuf, RootfsError> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|source| RootfsError::Create {
        path: rootfs.clone(),
        source,
    })?;
    for mount in mounts {
        containerd_shim::asynchronous::util::mount_rootfs(mount, &rootfs)
            .await
            .map_err(|source| RootfsError::Mount {
                kind: mount.type_.clone(),
                target: rootfs.clone(),
                source,
            })?;
    }
    let image = image_path(bundle);
    let (dir, file) = (rootfs.clone(), image.clone());
    let built = tokio::task::spawn_blocking(move || hull_image::erofs::mkfs(&dir, &file))
        .await
        .expect("mkfs does not panic");
    if !mounts.is_empty() {
        unmount(&rootfs)?;
    }
    built.map_err(|source| RootfsError::Image {
        image: image.clone(),
        source,
    })?;
    debug!(image = %image.display(), "rootfs image built");
    Ok(image)
}

/// Unmounts what containerd's mounts left at `target`, if anything.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    let c_target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .expect("paths have no NUL bytes");
    loop {
        // SAFETY: `c_target` is a valid NUL-terminated string that outlives the call.
        let rc = unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) };
        if rc == 0 {
            continue;
        }
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            // EINVAL: not a mount point (any more); ENOENT: no such path.
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
            _ => Err(RootfsError::Unmount {
                target: target.to_owned(),
                source: err,
            }),
        };
    }
}
