//! A container's root filesystem for the VM: containerd's snapshot mounts
//! (an overlay on the host) flattened into a read-only erofs image in the
//! bundle, which the VM gets as a hot-plugged disk under a tmpfs overlay.
//!
//! An image rather than the merged directory over the sandbox's virtio-9p
//! share (which host directories take, see `binds`): the agent mounts a
//! rootfs from a disk under an overlay, as it does for every Hull container,
//! reads from erofs come from the guest's page cache instead of a 9p round
//! trip through QEMU per access, and the container's root does not depend
//! on a host mount staying in place. The price: the container's writes stay
//! in its VM (they do not reach containerd's snapshot, so a commit of the
//! container sees none), and creating a container copies its rootfs once.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use tracing::debug;

use crate::binds::{self, Bind, BindError};

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
    #[error("cannot mount the staging overlay at {}", .target.display())]
    Staging {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Bind(#[from] BindError),
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
/// from it with `binds` copied in, and unmounts again: the VM needs only
/// the image.
pub async fn build(
    bundle: &Path,
    mounts: &[Mount],
    binds: &[Bind],
) -> Result<PathBuf, RootfsError> {
    let rootfs = bundle.join("rootfs");
    create_dir(&rootfs)?;
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
    let (bundle_dir, binds, file) = (bundle.to_owned(), binds.to_vec(), image.clone());
    let built = tokio::task::spawn_blocking(move || image_of(&bundle_dir, &binds, &file))
        .await
        .expect("building an image does not panic");
    if !mounts.is_empty() {
        unmount(&rootfs)?;
    }
    built?;
    debug!(image = %image.display(), "rootfs image built");
    Ok(image)
}

/// The image of the bundle's rootfs; with binds, of an overlay on it that
/// holds their copies, so containerd's snapshot is left as it was.
fn image_of(bundle: &Path, binds: &[Bind], image: &Path) -> Result<(), RootfsError> {
    let rootfs = bundle.join("rootfs");
    let mkfs = |dir: &Path| {
        hull_image::erofs::mkfs(dir, image).map_err(|source| RootfsError::Image {
            image: image.to_owned(),
            source,
        })
    };
    if binds.is_empty() {
        return mkfs(&rootfs);
    }
    let staging = bundle.join("hull-staging");
    let (upper, work) = (bundle.join("hull-upper"), bundle.join("hull-work"));
    for dir in [&staging, &upper, &work] {
        create_dir(dir)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.display(),
        upper.display(),
        work.display()
    );
    let mounted = overlay(&staging, &options);
    let result = mounted.and_then(|()| {
        for bind in binds {
            binds::copy_into(&staging, bind)?;
        }
        mkfs(&staging)
    });
    unmount(&staging)?;
    for dir in [&staging, &upper, &work] {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn overlay(target: &Path, options: &str) -> Result<(), RootfsError> {
    let c = |s: &[u8]| std::ffi::CString::new(s).expect("paths have no NUL bytes");
    let (source, fstype) = (c(b"overlay"), c(b"overlay"));
    let (c_target, data) = (
        c(target.as_os_str().as_encoded_bytes()),
        c(options.as_bytes()),
    );
    // SAFETY: every pointer is to a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            c_target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    Err(RootfsError::Staging {
        target: target.to_owned(),
        source: std::io::Error::last_os_error(),
    })
}

fn create_dir(path: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(path).map_err(|source| RootfsError::Create {
        path: path.to_owned(),
        source,
    })
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
