//! A mount namespace per QEMU that holds only the files it needs.
//!
//! Before fork, a [`MountPlan`] turns a list of [`Bind`]s into C strings
//! and steps. The child then unshares its mount namespace, makes every
//! mount private (nothing it does reaches the host), mounts a small tmpfs
//! as the new root, creates the mount points, binds each file or directory
//! at the path it has on the host (so QEMU's command line stays valid),
//! makes the tmpfs read-only and pivots into it. The host's tree is
//! detached: whatever was not bound is absent.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::mount::{
    set_attrs, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot bind {} into QEMU's mount namespace: it is missing or unreadable", .path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the path {} has a NUL byte or is not absolute, so it cannot be bound", .0.display())]
    BadPath(PathBuf),
    #[error("cannot create {}, the mount point of QEMU's new root", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A host path made visible in the namespace, at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub path: PathBuf,
    pub writable: bool,
    /// Device nodes work through it (`/dev/null`, `/dev/kvm`).
    pub devices: bool,
    /// Programs run from it (QEMU itself, its libraries).
    pub exec: bool,
    /// Mounts below the path come along (a user's bind of a directory),
    /// and so do those the host makes there later, when the host's path is
    /// a shared mount (the shim's share, where it binds each container's
    /// directories after boot).
    pub recursive: bool,
}

impl Bind {
    /// A read-only bind without devices, programs or submounts.
    pub fn read_only(path: impl Into<PathBuf>) -> Self {
        Bind {
            path: path.into(),
            writable: false,
            devices: false,
            exec: false,
            recursive: false,
        }
    }

    pub fn writable(path: impl Into<PathBuf>) -> Self {
        Bind {
            writable: true,
            ..Bind::read_only(path)
        }
    }

    pub fn device(path: impl Into<PathBuf>) -> Self {
        Bind {
            devices: true,
            ..Bind::writable(path)
        }
    }

    fn attrs(&self) -> u64 {
        let mut attrs = MOUNT_ATTR_NOSUID;
        if !self.writable {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        if !self.devices {
            attrs |= MOUNT_ATTR_NODEV;
        }
        if !self.exec {
            attrs |= MOUNT_ATTR_NOEXEC;
        }
        attrs
    }
}

/// One step of building the root, with every string made before fork.
#[derive(Debug)]
enum Step {
    Mkdir(CString),
    /// An empty file as the mount point of a file.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    Bind {
        source: CString,
        target: CString,
        recursive: bool,
        attrs: u64,
    },
    /// A procfs of QEMU's own.
    Proc(CString),
}

/// `MS_PRIVATE` as mount_setattr's propagation field takes it.
const PRIVATE: u64 = libc::MS_PRIVATE;

/// The namespace's root and how to build it.
#[derive(Debug)]
pub struct MountPlan {
    root: CString,
    steps: Vec<Step>,
}

fn c_path(path: &Path) -> Result<CString, MountError> {
    if !path.is_absolute() {
        return Err(MountError::BadPath(path.to_owned()));
    }
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::BadPath(path.to_owned()))
}

impl MountPlan {
    /// A plan whose root is mounted on `root` (an empty directory the host
    /// keeps, only the child's namespace mounts over it), with `symlinks`
    /// (link, target) made in it and `binds` in their order.
    pub fn new(
        root: &Path,
        symlinks: &[(PathBuf, PathBuf)],
        binds: &[Bind],
    ) -> Result<Self, MountError> {
        std::fs::create_dir_all(root).map_err(|source| MountError::Root {
            path: root.to_owned(),
            source,
        })?;
        let mut plan = MountPlan {
            root: c_path(root)?,
            steps: Vec::new(),
        };
        let mut dirs = HashSet::new();
        let inside = |path: &Path| -> Result<PathBuf, MountError> {
            c_path(path)?;
            Ok(root.join(path.strip_prefix("/").expect("absolute")))
        };
        let mut mkdirs = |plan: &mut MountPlan, dir: &Path| -> Result<(), MountError> {
            for ancestor in dir.ancestors().collect::<Vec<_>>().into_iter().rev() {
                if ancestor.starts_with(root)
                    && ancestor != root
                    && dirs.insert(ancestor.to_owned())
                {
                    plan.steps.push(Step::Mkdir(c_path(ancestor)?));
                }
            }
            Ok(())
        };
        for (link, target) in symlinks {
            let link = inside(link)?;
            mkdirs(&mut plan, link.parent().expect("below the root"))?;
            plan.steps.push(Step::Symlink {
                target: CString::new(target.as_os_str().as_bytes())
                    .map_err(|_| MountError::BadPath(target.clone()))?,
                link: c_path(&link)?,
            });
        }
        for bind in binds {
            let meta = std::fs::metadata(&bind.path).map_err(|source| MountError::Source {
                path: bind.path.clone(),
                source,
            })?;
            let target = inside(&bind.path)?;
            if meta.is_dir() {
                mkdirs(&mut plan, &target)?;
            } else {
                mkdirs(&mut plan, target.parent().expect("below the root"))?;
                plan.steps.push(Step::Touch(c_path(&target)?));
            }
            plan.steps.push(Step::Bind {
                source: c_path(&bind.path)?,
                target: c_path(&target)?,
                recursive: bind.recursive,
                attrs: bind.attrs(),
            });
        }
        // QEMU reaches the files it inherited as /proc/self/fd/N.
        let proc = root.join("proc");
        mkdirs(&mut plan, &proc)?;
        plan.steps.push(Step::Proc(c_path(&proc)?));
        Ok(plan)
    }

    /// The mount points and binds, in order, for tests and logs.
    pub fn describe(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|step| match step {
                Step::Mkdir(p) => format!("mkdir {}", p.to_string_lossy()),
                Step::Touch(p) => format!("touch {}", p.to_string_lossy()),
                Step::Symlink { target, link } => {
                    format!(
                        "symlink {} -> {}",
                        link.to_string_lossy(),
                        target.to_string_lossy()
                    )
                }
                Step::Proc(p) => format!("proc {}", p.to_string_lossy()),
                Step::Bind {
                    source,
                    target,
                    attrs,
                    recursive,
                } => format!(
                    "bind {} {} {}{}",
                    source.to_string_lossy(),
                    target.to_string_lossy(),
                    if attrs & MOUNT_ATTR_RDONLY != 0 {
                        "ro"
                    } else {
                        "rw"
                    },
                    if *recursive { " rec" } else { "" }
                ),
            })
            .collect()
    }

    /// Enters a new mount namespace rooted in the plan's root. It runs in
    /// the forked child before exec and only makes system calls on strings
    /// made before fork.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: every call below is a system call that takes C strings
        // owned by `self` (alive and unchanged for the whole call), static
        // C string literals or integers; none allocates or takes a lock, so
        // each is safe between fork and exec.
        unsafe {
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Nothing mounted from here on propagates to the host. Slave,
            // not private: a recursive bind keeps receiving what the host
            // mounts below a shared source; the others are made private.
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                c"tmpfs".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"mode=0755,size=256k,nr_inodes=1024".as_ptr().cast(),
            ))?;
            for step in &self.steps {
                match step {
                    Step::Mkdir(path) => {
                        if libc::mkdir(path.as_ptr(), 0o755) == -1
                            && *libc::__errno_location() != libc::EEXIST
                        {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    Step::Touch(path) => {
                        let fd = libc::open(
                            path.as_ptr(),
                            libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC,
                            0o644,
                        );
                        check(fd)?;
                        libc::close(fd);
                    }
                    Step::Symlink { target, link } => {
                        check(libc::symlink(target.as_ptr(), link.as_ptr()))?;
                    }
                    Step::Proc(target) => {
                        // Only processes (`subset=pid`: no /proc/sys, no
                        // kcore), and of those only its own uid's.
                        check(libc::mount(
                            c"proc".as_ptr(),
                            target.as_ptr(),
                            c"proc".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"hidepid=invisible,subset=pid".as_ptr().cast(),
                        ))?;
                    }
                    Step::Bind {
                        source,
                        target,
                        recursive,
                        attrs,
                    } => {
                        let flags = libc::MS_BIND | if *recursive { libc::MS_REC } else { 0 };
                        check(libc::mount(
                            source.as_ptr(),
                            target.as_ptr(),
                            std::ptr::null(),
                            flags,
                            std::ptr::null(),
                        ))?;
                        let propagation = if *recursive { 0 } else { PRIVATE };
                        setattr(target, *attrs, propagation, true)?;
                    }
                }
            }
            let sealed =
                MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
            setattr(&self.root, sealed, PRIVATE, false)?;
            // pivot_root(".", ".") stacks the old root on the new one; the
            // detaching unmount then drops the whole host tree.
            check(libc::chdir(self.root.as_ptr()))?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
            )?;
            check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        Ok(())
    }
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets mount attributes and `propagation` (none when 0) on `path`'s
/// mount and its submounts: a recursive bind's submounts turn read-only
/// too, which a plain remount would leave.
fn setattr(path: &CString, attrs: u64, propagation: u64, recursive: bool) -> io::Result<()> {
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 };
    set_attrs(libc::AT_FDCWD, path, flags, attrs, propagation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_land_at_their_host_paths_below_the_root_with_their_access() {
        let host = tempfile::tempdir().unwrap();
        let kernel = host.path().join("k/vmlinux");
        std::fs::create_dir_all(kernel.parent().unwrap()).unwrap();
        std::fs::write(&kernel, "").unwrap();
        let run = host.path().join("run/vm1");
        std::fs::create_dir_all(&run).unwrap();
        let root = host.path().join("run/vm1/root");
        let plan = MountPlan::new(
            &root,
            &[("/lib".into(), "usr/lib".into())],
            &[Bind::read_only(&kernel), Bind::writable(&run)],
        )
        .unwrap();
        let steps = plan.describe();
        let r = root.display();
        let k = kernel.display();
        assert!(
            steps.contains(&format!("symlink {r}/lib -> usr/lib")),
            "{steps:?}"
        );
        assert!(steps.contains(&format!("touch {r}{k}")), "{steps:?}");
        assert!(steps.contains(&format!("bind {k} {r}{k} ro")), "{steps:?}");
        let run = run.display();
        assert!(
            steps.contains(&format!("bind {run} {r}{run} rw")),
            "{steps:?}"
        );
        // Each directory is made once, parents first.
        let mkdirs: Vec<_> = steps.iter().filter(|s| s.starts_with("mkdir")).collect();
        let unique: HashSet<_> = mkdirs.iter().collect();
        assert_eq!(mkdirs.len(), unique.len(), "{steps:?}");
        assert!(root.is_dir());
    }

    /// Runs `/usr/bin/ls -a <dirs>` in a namespace built from `binds`.
    fn ls_in_namespace(root: &Path, binds: &[Bind], dirs: &[&str]) -> std::process::Output {
        use std::os::unix::process::CommandExt;
        let symlinks: Vec<(PathBuf, PathBuf)> = ["/lib", "/lib64", "/bin"]
            .iter()
            .filter_map(|l| Some((PathBuf::from(l), std::fs::read_link(l).ok()?)))
            .collect();
        let plan = MountPlan::new(root, &symlinks, binds).unwrap();
        let mut command = std::process::Command::new("/usr/bin/ls");
        command.arg("-a").args(dirs);
        // SAFETY: `enter` makes only system calls on the plan's own strings.
        unsafe { command.pre_exec(move || plan.enter()) };
        command.output().unwrap()
    }

    #[test]
    fn a_process_in_the_namespace_sees_its_binds_and_nothing_else() {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mount namespaces need root");
            return;
        }
        let host = tempfile::tempdir().unwrap();
        let share = host.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::write(share.join("seen"), "").unwrap();
        let mut usr = Bind::read_only("/usr");
        usr.exec = true;
        let output = ls_in_namespace(
            &host.path().join("root"),
            &[usr, Bind::read_only(&share)],
            &["/", &share.display().to_string()],
        );
        let listing = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{listing} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let top: Vec<&str> = listing
            .split("\n\n")
            .next()
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('.'))
            .collect();
        let mut expected = vec!["usr", "proc"];
        expected.extend(
            ["bin", "lib", "lib64"]
                .iter()
                .filter(|l| Path::new("/").join(l).exists()),
        );
        expected.push(
            share
                .components()
                .nth(1)
                .unwrap()
                .as_os_str()
                .to_str()
                .unwrap(),
        );
        expected.sort();
        expected.dedup();
        let mut top = top;
        top.sort();
        assert_eq!(top, expected, "{listing}");
        assert!(listing.contains("seen"), "{listing}");
        // The host's tree is untouched: nothing was mounted on the root dir.
        assert_eq!(
            std::fs::read_dir(host.path().join("root")).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_missing_source_is_named() {
        let host = tempfile::tempdir().unwrap();
        let err = MountPlan::new(
            &host.path().join("root"),
            &[],
            &[Bind::read_only("/nonexistent/k")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/k"), "{err}");
    }

    #[test]
    fn binds_never_carry_set_uid_programs_and_devices_only_where_asked() {
        assert_eq!(
            Bind::read_only("/x").attrs(),
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        );
        assert_eq!(
            Bind::writable("/x").attrs(),
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
        );
        assert_eq!(
            Bind::device("/dev/kvm").attrs(),
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC
        );
    }
}
