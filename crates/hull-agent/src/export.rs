//! `docker export` and `docker commit` in the guest: a container's whole
//! filesystem, or its changes as one image layer, sent as a tar.
//!
//! The whole filesystem is read through a bind mount of the container's
//! overlay alone (not recursive), so its volumes, `/proc`, `/sys`, `/dev`
//! and the other mounts over it are not in it, while what the container's
//! own files hold under them is. The changes are the overlay's upper
//! directory, its whiteouts turned into the OCI image spec's. Either tree
//! is walked by descriptors, one name at a time, never following a link.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hull_proto::{ErrorKind, FilesystemView, RequestError, StreamId};

use crate::agent::Agent;
use crate::archive::{children, put, Exactly};
use crate::container::Container;
use crate::{error_chain, fsat, log, sys};

/// Deepest directory walked, as deep as an image layer may go on the host.
const MAX_DEPTH: usize = 256;
/// The xattr overlayfs marks a directory with when it hides the lower one's
/// entries (the directory was removed and made again).
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The files of `/etc` the agent writes into every container itself.
const AGENT_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];
/// An OCI whiteout's name prefix, and the marker of an opaque directory.
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot open {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", .path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} lies deeper than {MAX_DEPTH} directories", .path.display())]
    TooDeep { path: PathBuf },
}

/// How a walk treats what it finds.
pub struct Walk<'a> {
    pub view: FilesystemView,
    /// Whether a directory hides the lower layer's entries.
    pub is_opaque: &'a dyn Fn(&File) -> bool,
}

impl Walk<'_> {
    /// Writes a tar of everything under the directory `root` (`O_PATH`)
    /// to `out`, and finishes it.
    pub fn pack(&self, root: &File, out: impl Write) -> Result<(), ExportError> {
        let mut builder = tar::Builder::new(out);
        self.directory(&mut builder, root, Path::new(""), 0)?;
        builder
            .into_inner()
            .and_then(|mut out| out.flush())
            .map_err(|source| ExportError::Walk {
                path: PathBuf::from("/"),
                source,
            })
    }

    fn directory<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        dir: &File,
        name: &Path,
        depth: usize,
    ) -> Result<(), ExportError> {
        if depth > MAX_DEPTH {
            return Err(ExportError::TooDeep {
                path: name.to_owned(),
            });
        }
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| ExportError::Walk { path, source }
        };
        for child in children(dir).map_err(failed(name))? {
            let path = name.join(&child);
            if self.view == FilesystemView::Changes
                && AGENT_FILES.iter().any(|f| path == Path::new(f))
            {
                continue;
            }
            let flags = libc::O_PATH | libc::O_NOFOLLOW;
            let fd = match fsat::open_at(dir, Path::new(&child), flags, 0) {
                Ok(fd) => fd,
                // Removed since the directory was listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(&path)(e)),
            };
            let meta = fd.metadata().map_err(failed(&path))?;
            if meta.is_dir() && self.holds_agent_files_alone(&fd, &path) {
                // Copied up only for the agent's files: not the container's
                // change (docker bind-mounts those files instead).
                continue;
            }
            if meta.is_dir() {
                self.entry(builder, &fd, &meta, &path, true)
                    .map_err(failed(&path))?;
                if self.view == FilesystemView::Changes && (self.is_opaque)(&fd) {
                    whiteout(builder, &path.join(OPAQUE_MARKER), &meta).map_err(failed(&path))?;
                }
                self.directory(builder, &fd, &path, depth + 1)?;
            } else if self.view == FilesystemView::Changes && is_whiteout(&meta) {
                let mut marker = std::ffi::OsString::from(WHITEOUT_PREFIX);
                marker.push(&child);
                whiteout(builder, &name.join(marker), &meta).map_err(failed(&path))?;
            } else {
                self.entry(builder, &fd, &meta, &path, false)
                    .map_err(failed(&path))?;
            }
        }
        Ok(())
    }

    /// Whether, in the changes view, the directory `path` holds nothing but
    /// files the agent writes.
    fn holds_agent_files_alone(&self, dir: &File, path: &Path) -> bool {
        // Only a parent of the agent's files can qualify; every other
        // directory is spared a second read of its entries.
        let is_parent = AGENT_FILES
            .iter()
            .any(|f| Path::new(f).parent() == Some(path));
        if self.view != FilesystemView::Changes || !is_parent || (self.is_opaque)(dir) {
            return false;
        }
        let Ok(children) = children(dir) else {
            return false;
        };
        !children.is_empty()
            && children
                .iter()
                .all(|child| AGENT_FILES.iter().any(|f| path.join(child) == Path::new(f)))
    }

    /// Appends one non-whiteout entry. Sockets are left out, as docker
    /// leaves them; device nodes too from a layer, which an image may not
    /// carry here (the host refuses them); hard links become files.
    fn entry<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        fd: &File,
        meta: &std::fs::Metadata,
        path: &Path,
        is_dir: bool,
    ) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_metadata(meta);
        // Only permission and set-id bits, as Go's tar (and so docker) writes.
        header.set_mode(meta.mode() & 0o7777);
        let kind = meta.file_type();
        if is_dir {
            let mut name = path.as_os_str().as_bytes().to_vec();
            name.push(b'/');
            let name = Path::new(std::ffi::OsStr::from_bytes(&name));
            return put(builder, &mut header, name, None, io::empty());
        }
        if kind.is_file() {
            let file = File::open(fsat::fd_path(fd))?;
            return put(
                builder,
                &mut header,
                path,
                None,
                Exactly::new(file, meta.len()),
            );
        }
        if kind.is_symlink() {
            let target = fsat::read_link(fd)?;
            return put(builder, &mut header, path, Some(&target), io::empty());
        }
        let device = kind.is_char_device() || kind.is_block_device();
        if kind.is_fifo() || (device && self.view == FilesystemView::Whole) {
            header.set_device_major(libc::major(meta.rdev()))?;
            header.set_device_minor(libc::minor(meta.rdev()))?;
            return put(builder, &mut header, path, None, io::empty());
        }
        if device {
            log!("leaving the device node /{} out of a layer", path.display());
        }
        Ok(())
    }
}

/// overlayfs marks a removed lower file with a character device 0/0.
fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Appends the empty file that stands for a removal in an image layer.
fn whiteout<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &Path,
    meta: &std::fs::Metadata,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(0);
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    put(builder, &mut header, name, None, io::empty())
}

fn request_error(error: &ExportError, container: &str) -> RequestError {
    let message = format!(
        "cannot read the filesystem of container {container}: {}",
        error_chain(error)
    );
    RequestError::new(ErrorKind::Internal, message)
}

/// A bind mount of a container's overlay alone, undone when dropped.
struct OverlayView {
    target: PathBuf,
}

impl OverlayView {
    fn mount(container: &Container, stream: StreamId) -> Result<Self, ExportError> {
        let target = container.dir.join(format!("export-{stream}"));
        let open = |source| ExportError::Open {
            path: target.clone(),
            source,
        };
        std::fs::create_dir_all(&target).map_err(open)?;
        let source = container.rootfs();
        // Without MS_REC: the mounts over the rootfs stay behind.
        sys::mount(
            &source.to_string_lossy(),
            &target,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(|source| {
            let _ = std::fs::remove_dir(&target);
            ExportError::Open {
                path: target.clone(),
                source,
            }
        })?;
        Ok(Self { target })
    }
}

impl Drop for OverlayView {
    fn drop(&mut self) {
        let _ = sys::umount_detach(&self.target);
        let _ = std::fs::remove_dir(&self.target);
    }
}

impl Agent {
    /// Handles ReadFilesystem on its own thread: `Done`, the tar, `Eof`.
    pub(crate) fn read_filesystem(
        &self,
        request: u32,
        container: &str,
        stream: StreamId,
        view: FilesystemView,
    ) {
        let opened = self.container(container).and_then(|found| {
            let (root, mount) = match view {
                FilesystemView::Whole => {
                    let mount = OverlayView::mount(&found, stream)
                        .map_err(|e| request_error(&e, container))?;
                    (mount.target.clone(), Some(mount))
                }
                FilesystemView::Changes => (found.dir.join("rw/upper"), None),
            };
            let fd = File::open(&root).map_err(|source| {
                request_error(&ExportError::Open { path: root, source }, container)
            })?;
            Ok((fd, mount))
        });
        let what = format!("the filesystem of container {container}");
        self.send_tar(request, stream, opened, &what, |(root, _mount), out| {
            let opaque = |dir: &File| sys::xattr_is(&fsat::fd_path(dir), OPAQUE_XATTR, b"y");
            let walk = Walk {
                view,
                is_opaque: &opaque,
            };
            walk.pack(&root, out)
        });
    }
}

#[cfg(test)]
#[path = "export_tests.rs"]
mod tests;
