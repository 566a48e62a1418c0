//! Preparing a container's root filesystem: the image disk under a writable
//! overlay, and the mounts and files a container expects (as runc makes them).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[cfg(test)]
use hull_proto::RootfsSpec;
use hull_proto::{ContainerSpec, MountSource, MountSpec, NetworkSpec};

use crate::network::{hosts_file, resolv_conf};
use crate::{fsat, sys};

/// Where each container's mounts live in the guest.
pub const CONTAINERS_DIR: &str = "/run/hull/containers";
/// Where the directories that containers of the VM share live.
pub const SHARED_DIRS: &str = "/run/hull/shared";
/// Where volume disks are mounted, by serial.
pub const VOLUME_DIRS: &str = "/run/hull/volumes";
/// Where host directories shared over 9p are mounted, by tag.
pub const HOST_DIRS: &str = "/run/hull/hostdirs";
/// How long a volume's disk may take to appear.
const VOLUME_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid container id {0:?}: it must be a non-empty file name")]
    InvalidId(String),
    #[error("cannot mount {fstype} at {}", .target.display())]
    Mount {
        fstype: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the image's {} is not a directory; cannot mount on it", .0.display())]
    NotADirectory(PathBuf),
    #[error("invalid mount source {0:?}: it must be a non-empty file name")]
    InvalidSharedDir(String),
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    #[error(transparent)]
    CopyUp(#[from] crate::copyup::CopyUpError),
    #[error("cannot mount the host directory tagged {tag} (the VM has: [{found}])")]
    HostDir {
        tag: String,
        found: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid mount target {0:?}: it must be an absolute path")]
    InvalidTarget(String),
    #[error("cannot prepare the mount point {target} in the container")]
    MountPoint {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set the hostname to {name:?}")]
    Hostname {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Where a container's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Its disk's device, mounted for the container.
    Disk(PathBuf),
    /// Its disk, already mounted there (see [`crate::prime`]); the
    /// container gets a bind of it, so the page cache it filled is shared.
    Mounted(PathBuf),
}

/// A created container: its mounts are in place.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub hostname: String,
    pub dir: PathBuf,
}

impl Container {
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

/// Container ids become directory names.
pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    if id.is_empty() || id == "." || id == ".." || id.contains(['/', '\0']) {
        return Err(ContainerError::InvalidId(id.to_owned()));
    }
    Ok(())
}

/// Mounts undone if creation fails half-way.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> Result<(), ContainerError> {
        let fs_arg = (fstype != "bind").then_some(fstype);
        sys::mount(source, target, fs_arg, flags, data).map_err(|source| {
            ContainerError::Mount {
                fstype: fstype.to_owned(),
                target: target.to_owned(),
                source,
            }
        })?;
        self.0.push(target.to_owned());
        Ok(())
    }

    fn mount_plan(&mut self, plan: &MountPlan) -> Result<(), ContainerError> {
        let data = plan.data.as_deref();
        self.mount(&plan.source, &plan.target, &plan.fstype, plan.flags, data)
    }

    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for target in self.0.iter().rev() {
            let _ = sys::umount_detach(target);
        }
    }
}

fn create_dir(path: &Path) -> Result<(), ContainerError> {
    fs::create_dir_all(path).map_err(|source| ContainerError::Create {
        path: path.to_owned(),
        source,
    })
}

/// One mount of a container's layers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountPlan {
    source: String,
    target: PathBuf,
    fstype: String,
    flags: libc::c_ulong,
    data: Option<String>,
}

/// The image, the writable layer and the overlay of both, under `dir`.
fn layer_mounts(
    spec: &ContainerSpec,
    dir: &Path,
    source: &Image,
    writable: Option<&Path>,
) -> [MountPlan; 3] {
    let (image, rw, rootfs) = (dir.join("image"), dir.join("rw"), dir.join("rootfs"));
    let writable_layer = match writable {
        Some(device) => MountPlan {
            source: device.to_string_lossy().into_owned(),
            target: rw.clone(),
            fstype: spec
                .writable
                .as_ref()
                .map_or("ext4", |w| w.fs_type.as_str())
                .to_owned(),
            flags: libc::MS_NOATIME,
            data: None,
        },
        None => MountPlan {
            source: "tmpfs".into(),
            target: rw.clone(),
            fstype: "tmpfs".into(),
            flags: 0,
            data: Some("mode=0755".into()),
        },
    };
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        rw.join("upper").display(),
        rw.join("work").display()
    );
    let image = match source {
        Image::Disk(device) => MountPlan {
            source: device.to_string_lossy().into_owned(),
            target: image,
            fstype: spec.rootfs.fs_type.clone(),
            flags: libc::MS_RDONLY,
            data: None,
        },
        Image::Mounted(mounted) => MountPlan {
            source: mounted.to_string_lossy().into_owned(),
            target: image,
            fstype: "bind".into(),
            flags: libc::MS_BIND,
            data: None,
        },
    };
    [
        image,
        writable_layer,
        MountPlan {
            source: "overlay".into(),
            target: rootfs,
            fstype: "overlay".into(),
            flags: 0,
            data: Some(options),
        },
    ]
}

/// Mounts the image `disk` read-only under an overlay whose upper layer is
/// the `writable` disk (or a tmpfs without one), prepares the rootfs, and
/// sets the guest's hostname.
pub fn create(
    spec: &ContainerSpec,
    disk: &Image,
    writable: Option<&Path>,
    network: &NetworkSpec,
) -> Result<Container, ContainerError> {
    validate_id(&spec.id)?;
    let dir = Path::new(CONTAINERS_DIR).join(&spec.id);
    let [image, rw, overlay] = layer_mounts(spec, &dir, disk, writable);
    for plan in [&image, &rw, &overlay] {
        create_dir(&plan.target)?;
    }
    let mut mounts = Mounts(Vec::new());
    for plan in [&image, &rw] {
        mounts.mount_plan(plan)?;
    }
    // On a writable disk both survive from the last start: overlayfs takes
    // an upper dir back as it left it, and empties its work dir itself.
    create_dir(&rw.target.join("upper"))?;
    create_dir(&rw.target.join("work"))?;
    mounts.mount_plan(&overlay)?;
    let rootfs = overlay.target;
    prepare_rootfs(&rootfs, &mut mounts)?;
    write_etc(&rootfs, &spec.hostname, network, &spec.host_etc_files)?;
    for mount in &spec.mounts {
        mount_into(&rootfs, mount)?;
    }
    sys::sethostname(&spec.hostname).map_err(|source| ContainerError::Hostname {
        name: spec.hostname.clone(),
        source,
    })?;
    mounts.keep();
    Ok(Container {
        id: spec.id.clone(),
        hostname: spec.hostname.clone(),
        dir,
    })
}

/// A directory of the rootfs to mount on. The mount happens in the agent's
/// namespace, so a symlink planted by the image is refused, not followed.
fn mount_point(rootfs: &Path, relative: &str) -> Result<PathBuf, ContainerError> {
    let path = rootfs.join(relative);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(ContainerError::NotADirectory(
            PathBuf::from("/").join(relative),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir(&path)?;
            Ok(path)
        }
        Err(source) => Err(ContainerError::Create { path, source }),
    }
}

/// Bind-mounts the mount's source at `mount.target`, mounting the source
/// in the VM first if no container did yet. The target is made inside the
/// rootfs with `openat2(RESOLVE_IN_ROOT)`, so the image's symlinks cannot
/// send the mount outside it. (An error leaves the mount to the overlay's
/// lazy unmount, which takes its submounts along.)
fn mount_into(rootfs: &Path, mount: &MountSpec) -> Result<(), ContainerError> {
    let source = match &mount.source {
        MountSource::SharedDir { name } => {
            let dir = source_dir(SHARED_DIRS, name)?;
            // Shared by containers that may run as different users, as emptyDir is.
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).map_err(|source| {
                ContainerError::Create {
                    path: dir.clone(),
                    source,
                }
            })?;
            dir
        }
        MountSource::Disk { serial, fs_type } => {
            let dir = source_dir(VOLUME_DIRS, serial)?;
            if !is_mount_point(&dir) {
                let device = crate::disk::wait_for_disk(serial, VOLUME_WAIT)?;
                let device = device.to_string_lossy();
                sys::mount(&device, &dir, Some(fs_type), libc::MS_NOATIME, None).map_err(
                    |source| ContainerError::Mount {
                        fstype: fs_type.clone(),
                        target: dir.clone(),
                        source,
                    },
                )?;
            }
            if mount.copy_up {
                crate::copyup::populate(rootfs, &mount.target, &dir)?;
            }
            dir
        }
        MountSource::HostDir { tag } => host_dir(tag)?,
        MountSource::HostSubdir { tag, path } => {
            let dir = host_subdir(&host_dir(tag)?, path)?;
            // A directory volume is filled as a disk's is; a host
            // directory never is (its spec says no copy-up).
            if mount.copy_up {
                crate::copyup::populate(rootfs, &mount.target, &dir)?;
            }
            dir
        }
    };
    let point_error = |source| ContainerError::MountPoint {
        target: mount.target.clone(),
        source,
    };
    let target = mount_point_in_root(rootfs, &mount.target)?;
    let source = source.to_string_lossy();
    sys::mount(&source, &fsat::fd_path(&target), None, libc::MS_BIND, None).map_err(point_error)?;
    if mount.read_only {
        // The descriptor still holds the directory under the new mount:
        // the remount needs the mount itself, so the path is opened again.
        let mounted = mount_point_in_root(rootfs, &mount.target)?;
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        sys::mount("none", &fsat::fd_path(&mounted), None, flags, None).map_err(point_error)?;
    }
    Ok(())
}

/// Where the 9p share `tag` is mounted in the VM, mounting it the first time.
fn host_dir(tag: &str) -> Result<PathBuf, ContainerError> {
    let dir = source_dir(HOST_DIRS, tag)?;
    if !is_mount_point(&dir) {
        let options = "trans=virtio,version=9p2000.L,msize=262144,cache=none";
        sys::mount(tag, &dir, Some("9p"), 0, Some(options)).map_err(|source| {
            ContainerError::HostDir {
                tag: tag.to_owned(),
                found: host_dir_tags().join(", "),
                source,
            }
        })?;
    }
    Ok(dir)
}

/// The directory `path` (plain names only) in a mounted share; every step
/// must be a real directory, so a link in the share cannot lead elsewhere.
fn host_subdir(share: &Path, path: &str) -> Result<PathBuf, ContainerError> {
    let invalid = || ContainerError::InvalidSharedDir(path.to_owned());
    let mut dir = share.to_owned();
    for name in path.split('/') {
        validate_id(name).map_err(|_| invalid())?;
        dir.push(name);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(ContainerError::NotADirectory(dir)),
            Err(source) => return Err(ContainerError::Create { path: dir, source }),
        }
    }
    Ok(dir)
}

/// `parent/name`, created if missing; `name` must be a plain file name.
fn source_dir(parent: &str, name: &str) -> Result<PathBuf, ContainerError> {
    validate_id(name).map_err(|_| ContainerError::InvalidSharedDir(name.to_owned()))?;
    let dir = Path::new(parent).join(name);
    create_dir(&dir)?;
    Ok(dir)
}

/// The tags of the VM's 9p devices, for error messages.
fn host_dir_tags() -> Vec<String> {
    let devices = fs::read_dir("/sys/bus/virtio/devices")
        .into_iter()
        .flatten()
        .flatten();
    devices
        .map(|device| {
            let path = device.path();
            let id = fs::read_to_string(path.join("device")).unwrap_or_default();
            let tag = fs::read_to_string(path.join("mount_tag")).unwrap_or_default();
            format!(
                "{} device {} {}",
                device.file_name().to_string_lossy(),
                id.trim(),
                tag.trim_matches(|c: char| c == '\0' || c.is_whitespace())
            )
        })
        .collect()
}

/// Whether something is mounted at `dir`: it is on another device than
/// its parent.
pub(crate) fn is_mount_point(dir: &Path) -> bool {
    match (fs::metadata(dir), fs::metadata(dir.join(".."))) {
        (Ok(own), Ok(parent)) => own.dev() != parent.dev(),
        _ => false,
    }
}

/// Opens (creating what is missing) the directory `target` of the rootfs,
/// resolving every component inside it.
fn mount_point_in_root(rootfs: &Path, target: &str) -> Result<fs::File, ContainerError> {
    let point_error = |source| ContainerError::MountPoint {
        target: target.to_owned(),
        source,
    };
    let relative = target
        .strip_prefix('/')
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| ContainerError::InvalidTarget(target.to_owned()))?;
    let root = fs::File::open(rootfs).map_err(point_error)?;
    let directory = libc::O_PATH | libc::O_DIRECTORY;
    let mut current = PathBuf::new();
    for component in Path::new(relative).components() {
        let std::path::Component::Normal(name) = component else {
            return Err(ContainerError::InvalidTarget(target.to_owned()));
        };
        let parent = fsat::open_in_root(&root, &current, directory).map_err(point_error)?;
        match fsat::mkdir_at(&parent, Path::new(name), 0o755) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(point_error(e)),
        }
        current.push(name);
    }
    fsat::open_in_root(&root, &current, directory).map_err(point_error)
}

/// The device nodes runc gives every container, with the guest's numbers.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn prepare_rootfs(rootfs: &Path, mounts: &mut Mounts) -> Result<(), ContainerError> {
    mount_point(rootfs, "proc")?;
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let sys_dir = mount_point(rootfs, "sys")?;
    mounts.mount(
        "sysfs",
        &sys_dir,
        "sysfs",
        nosuid_nodev_noexec | libc::MS_RDONLY,
        None,
    )?;
    let dev = mount_point(rootfs, "dev")?;
    let dev_flags = libc::MS_NOSUID | libc::MS_STRICTATIME;
    mounts.mount(
        "tmpfs",
        &dev,
        "tmpfs",
        dev_flags,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let node = dev.join(name);
        let guest = Path::new("/dev").join(name);
        let create = |source| ContainerError::Create {
            path: node.clone(),
            source,
        };
        let rdev = fs::metadata(&guest).map_err(create)?.rdev();
        sys::mknod_char(&node, 0o666, rdev).map_err(create)?;
        fs::set_permissions(&node, fs::Permissions::from_mode(0o666)).map_err(create)?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    for (name, target) in links {
        let link = dev.join(name);
        std::os::unix::fs::symlink(target, &link)
            .map_err(|source| ContainerError::Create { path: link, source })?;
    }
    let pts = dev.join("pts");
    create_dir(&pts)?;
    mounts.mount("/dev/pts", &pts, "bind", libc::MS_BIND, None)?;
    let shm = dev.join("shm");
    create_dir(&shm)?;
    let shm_options = Some("mode=1777,size=65536k");
    mounts.mount("shm", &shm, "tmpfs", nosuid_nodev_noexec, shm_options)?;
    Ok(())
}

/// `/etc/hostname`, `/etc/hosts`, and `/etc/resolv.conf` naming the VM's
/// resolvers (without them, the image's, or an empty one if it has none),
/// except those of `host_files`, which the host put in the rootfs itself.
/// Existing entries are unlinked first, so a symlink in the image never
/// redirects the agent's writes.
fn write_etc(
    rootfs: &Path,
    hostname: &str,
    network: &NetworkSpec,
    host_files: &[String],
) -> Result<(), ContainerError> {
    let etc = rootfs.join("etc");
    if !fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    let replace = |name: &str, contents: &str| {
        if host_files.iter().any(|f| f == name) {
            return Ok(());
        }
        let path = etc.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
            let _ = fs::remove_file(&path);
        }
        fs::write(&path, contents).map_err(|source| ContainerError::Create { path, source })
    };
    replace("hostname", &format!("{hostname}\n"))?;
    replace("hosts", &hosts_file(hostname, network))?;
    match resolv_conf(network) {
        Some(text) => replace("resolv.conf", &text)?,
        None => {
            let resolv = etc.join("resolv.conf");
            if !fs::symlink_metadata(&resolv).is_ok_and(|m| m.is_file()) {
                replace("resolv.conf", "")?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "container_tests.rs"]
mod tests;
