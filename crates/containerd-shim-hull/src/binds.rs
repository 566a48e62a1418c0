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

mod at;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind-mount the host's {} into the sandbox's share at {}", .source_path.display(), .target.display())]
    Share {
        source_path: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
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

/// Bind-mounts the host directory of `bind` at `<share>/<container>/<index>`
/// and returns that path relative to the share, for the agent.
///
/// The share is the guest's to write, so a guest with root could plant a
/// symlink where the next mount point goes: every name below the share is
/// opened without following symlinks, and the mount lands on the directory
/// so opened (through its `/proc/self/fd` link), never on a path resolved
/// again. The bind is `nosuid,nodev`, and read-only when the spec asks, in
/// every mount namespace it reaches (QEMU's among them), so neither the
/// guest nor its QEMU can write through it.
pub fn mount_in_share(
    share: &Path,
    container: &str,
    index: usize,
    bind: &Bind,
) -> Result<String, BindError> {
    let relative = format!("{container}/{index}");
    let target = share.join(&relative);
    let err = |source| BindError::Share {
        source_path: bind.source.clone(),
        target: target.clone(),
        source,
    };
    let share_fd = at::open_dir(None, share).map_err(err)?;
    let container_fd = at::make_dir(&share_fd, container).map_err(err)?;
    let index = index.to_string();
    let point = at::make_dir(&container_fd, &index).map_err(err)?;
    let c_source = std::ffi::CString::new(bind.source.as_os_str().as_encoded_bytes())
        .map_err(|_| err(io::ErrorKind::InvalidInput.into()))?;
    at::bind(&c_source, &point, bind.read_only).map_err(err)?;
    Ok(relative)
}

/// Makes the share a mount of its own whose later binds propagate: QEMU
/// runs in a mount namespace of its own (hull_vm::jail), which receives
/// what is mounted below a shared mount of the host, and nothing else.
pub fn share_with_qemu(share: &Path) -> io::Result<()> {
    let c_share = std::ffi::CString::new(share.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    for flags in [libc::MS_BIND, libc::MS_SHARED] {
        let source = if flags == libc::MS_BIND {
            c_share.as_ptr()
        } else {
            std::ptr::null()
        };
        // SAFETY: the path is a NUL-terminated string that outlives the
        // call; a bind and a propagation change take no type or data.
        let rc = unsafe {
            libc::mount(
                source,
                c_share.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Unmounts a container's directories from the share and removes their
/// mount points. Names are never followed (the guest may have swapped one
/// for a symlink), and only empty directories are removed, so a mount that
/// stayed can never have the host's files deleted through it.
pub fn release(share: &Path, container: &str) {
    let Ok(share_fd) = at::open_dir(None, share) else {
        return;
    };
    let Ok(dir) = at::open_dir(Some(&share_fd), Path::new(container)) else {
        return;
    };
    for name in at::names(&dir) {
        at::unmount(&dir, &name);
        at::remove_dir(&dir, &name);
    }
    drop(dir);
    at::remove_dir(&share_fd, container);
}

/// Releases every container's directories and the share itself.
pub fn release_all(share: &Path) {
    for entry in fs::read_dir(share).into_iter().flatten().flatten() {
        release(share, &entry.file_name().to_string_lossy());
    }
    // The share's own mount ([`share_with_qemu`]), once empty.
    let _ = crate::rootfs::unmount(share);
    let _ = fs::remove_dir(share);
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

    /// Whether `path` is a mount point, and its mount options.
    fn mount_options(path: &Path) -> Option<String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let wanted = path.to_string_lossy().into_owned();
        mountinfo
            .lines()
            .rev()
            .find(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
            .map(|line| line.split(' ').nth(5).unwrap_or_default().to_owned())
    }

    /// Mounts in the host's namespace: root only, and each test's own
    /// directories, detached again even when the test fails.
    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Option<Host> {
            // SAFETY: geteuid(2) cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                eprintln!("skipped: bind mounts need root");
                return None;
            }
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("share")).unwrap();
            fs::create_dir(dir.path().join("source")).unwrap();
            Some(Host { dir })
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    impl Drop for Host {
        fn drop(&mut self) {
            let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let prefix = self.dir.path().to_string_lossy().into_owned();
            for point in mountinfo.lines().rev().filter_map(|l| l.split(' ').nth(4)) {
                if point.starts_with(&prefix) {
                    let c = std::ffi::CString::new(point).unwrap();
                    // SAFETY: a NUL-terminated path that outlives the call.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }

    #[test]
    fn a_read_only_bind_is_read_only_nosuid_and_nodev_on_the_host() {
        let Some(host) = Host::new() else { return };
        let mut ro = bind(&host.path("source"), "/data");
        ro.read_only = true;
        let relative = mount_in_share(&host.path("share"), "c1", 0, &ro).unwrap();
        assert_eq!(relative, "c1/0");
        let point = host.path("share").join("c1/0");
        let options = mount_options(&point).expect("the bind is mounted");
        for option in ["ro", "nosuid", "nodev"] {
            assert!(
                options.split(',').any(|o| o == option),
                "{option} not in {options}"
            );
        }
        let err = fs::write(point.join("new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        assert!(!host.path("source").join("new").exists());

        release(&host.path("share"), "c1");
        assert_eq!(mount_options(&point), None);
        assert!(!host.path("share").join("c1").exists());
    }

    #[test]
    fn a_read_only_bind_is_read_only_in_a_namespace_it_propagates_to() {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let Some(host) = Host::new() else { return };
        let share = host.path("share");
        share_with_qemu(&share).unwrap();
        // A namespace that receives the share's later mounts, as QEMU's
        // does: it waits for a line, then writes through each bind.
        let script = "read _; for d in c1/0 c1/1; do echo x > $d/new 2>&1 || true; done";
        let mut command = std::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .current_dir(&share)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // SAFETY: unshare and mount are system calls on static strings.
        unsafe {
            command.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_SLAVE,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let (ro_source, rw_source) = (host.path("source"), host.path("rw"));
        fs::create_dir(&rw_source).unwrap();
        let mut ro = bind(&ro_source, "/ro");
        ro.read_only = true;
        mount_in_share(&share, "c1", 0, &ro).unwrap();
        mount_in_share(&share, "c1", 1, &bind(&rw_source, "/rw")).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let output = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("Read-only file system"), "{said}");
        assert!(!ro_source.join("new").exists(), "{said}");
        assert!(rw_source.join("new").exists(), "{said}");
        release(&share, "c1");
    }

    #[test]
    fn a_symlink_planted_where_a_mount_point_goes_is_refused() {
        let Some(host) = Host::new() else { return };
        let victim = host.path("victim");
        fs::create_dir(&victim).unwrap();
        let share = host.path("share");
        std::os::unix::fs::symlink(&victim, share.join("c1")).unwrap();
        let source = bind(&host.path("source"), "/data");
        assert!(mount_in_share(&share, "c1", 0, &source).is_err());
        assert!(!victim.join("0").exists());

        fs::create_dir(share.join("c2")).unwrap();
        std::os::unix::fs::symlink(&victim, share.join("c2/0")).unwrap();
        assert!(mount_in_share(&share, "c2", 0, &source).is_err());
        assert_eq!(
            mount_options(&victim),
            None,
            "the bind landed on the symlink's target"
        );
    }

    #[test]
    fn releasing_a_container_never_follows_a_planted_symlink() {
        let Some(host) = Host::new() else { return };
        // A mount of the host's own, which a release must leave alone.
        let victim = host.path("victim");
        fs::create_dir_all(victim.join("0")).unwrap();
        let c_source =
            std::ffi::CString::new(host.path("source").to_string_lossy().as_bytes()).unwrap();
        let point = at::open_dir(None, &victim.join("0")).unwrap();
        at::bind(&c_source, &point, false).unwrap();
        drop(point);
        assert!(mount_options(&victim.join("0")).is_some());

        let share = host.path("share");
        std::os::unix::fs::symlink(&victim, share.join("c1")).unwrap();
        release(&share, "c1");
        fs::create_dir(share.join("c2")).unwrap();
        std::os::unix::fs::symlink(victim.join("0"), share.join("c2/0")).unwrap();
        release(&share, "c2");

        assert!(
            mount_options(&victim.join("0")).is_some(),
            "a release unmounted the host's mount"
        );
        assert!(victim.join("0").is_dir());
    }
}
