//! A cgroup per VM: its QEMU's memory, pids and CPU limits.
//!
//! Hull's VMs sit under one parent (`hull/` by default; a daemon's own
//! `hull/<instance>`), each in a cgroup named after its VM id. On cgroup v1 the parent is made in each
//! controller's hierarchy below the cgroup the daemon itself runs in, so the
//! daemon's own limits still hold its VMs. On v2 a cgroup that holds
//! processes cannot hand controllers down to children, so the parent sits at
//! the hierarchy's root, as Docker's cgroupfs driver places `/docker`.
//!
//! The process joins before it runs QEMU: the `cgroup.procs` files are opened
//! before fork, and the child writes "0" (itself) to each.

use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The CPU bandwidth period, in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: neither cgroup v2 with the memory controller at {} nor the v1 memory, pids and cpu controllers; mount them or run with HULL_JAIL=off", .0.display())]
    NoHierarchy(PathBuf),
    #[error("cannot create the cgroup {}: check that the controller is mounted read-write and that hulld runs as root", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write '{value}' to {}: the cgroup may lack the controller", .path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {} to place QEMU in its cgroup", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the cgroup {}: processes still run in it", .path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the VM id '{0}' cannot name a cgroup: it must be a single path component")]
    BadName(String),
}

/// The filesystem operations cgroups need: the boundary that unit tests
/// fake with a plain directory tree.
pub trait CgroupFs: fmt::Debug + Send + Sync {
    fn exists(&self, path: &Path) -> bool;
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Creates one directory; an existing one is no error.
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Removes a cgroup, which the kernel allows once no process is in it.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// The names of the child cgroups of `path`.
    fn children(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens `cgroup.procs` for writing, for a child to join later.
    fn open_procs(&self, path: &Path) -> io::Result<OwnedFd>;
}

/// The kernel's cgroup filesystems.
#[derive(Debug, Default, Clone, Copy)]
pub struct SysFs;

impl CgroupFs for SysFs {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        match fs::create_dir(path) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        }
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // One write(2): cgroup files take a value per write.
        fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all(value.as_bytes())
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }
    fn children(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }
    fn open_procs(&self, path: &Path) -> io::Result<OwnedFd> {
        Ok(fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))?
            .into())
    }
}

/// Which cgroup version holds the controllers, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One directory per controller: the daemon's own cgroup in the
    /// memory, pids and cpu hierarchies (one directory when they are
    /// mounted together).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
    /// The unified hierarchy's root.
    V2 { root: PathBuf },
}

impl Layout {
    /// Finds the controllers under `mount` (`/sys/fs/cgroup`) from the
    /// daemon's `/proc/self/cgroup`. The unified hierarchy wins when it has
    /// the memory controller; a hybrid host (v1 controllers, an empty v2)
    /// uses v1.
    pub fn detect(fs: &dyn CgroupFs, mount: &Path, self_cgroup: &str) -> Result<Self, CgroupError> {
        let unified = fs
            .read(&mount.join("cgroup.controllers"))
            .unwrap_or_default();
        if unified.split_whitespace().any(|c| c == "memory") {
            return Ok(Layout::V2 {
                root: mount.to_owned(),
            });
        }
        let find = |controller: &str| -> Option<PathBuf> {
            self_cgroup.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (_, list, path) = (fields.next()?, fields.next()?, fields.next()?);
                if !list.split(',').any(|c| c == controller) {
                    return None;
                }
                // Mounted under the list's name (`cpu,cpuacct`) or its own.
                let dir = [list, controller]
                    .iter()
                    .map(|name| mount.join(name))
                    .find(|dir| fs.exists(dir))?;
                Some(dir.join(path.trim_start_matches('/')))
            })
        };
        match (find("memory"), find("pids"), find("cpu")) {
            (Some(memory), Some(pids), Some(cpu)) => Ok(Layout::V1 { memory, pids, cpu }),
            _ => Err(CgroupError::NoHierarchy(mount.to_owned())),
        }
    }

    /// The directories of `parent` (Hull's cgroup) in each hierarchy, once.
    fn parents(&self, parent: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = match self {
            Layout::V1 { memory, pids, cpu } => {
                [memory, pids, cpu].iter().map(|d| d.join(parent)).collect()
            }
            Layout::V2 { root } => vec![root.join(parent)],
        };
        dirs.dedup();
        dirs
    }
}

/// What a VM's cgroup allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CPUs' worth of time per period, for all of QEMU's threads.
    pub cpus: u32,
}

/// Hull's cgroups under one parent in one layout.
#[derive(Debug)]
pub struct Cgroups<F: CgroupFs = SysFs> {
    pub fs: F,
    pub layout: Layout,
    /// Hull's parent cgroup, a relative path (`hull`, `hull/hulld-…`).
    pub parent: String,
}

impl Cgroups<SysFs> {
    /// The host's cgroups, detected from `/sys/fs/cgroup` and
    /// `/proc/self/cgroup`.
    pub fn host(parent: &str) -> Result<Self, CgroupError> {
        let mount = Path::new("/sys/fs/cgroup");
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Ok(Cgroups {
            fs: SysFs,
            layout: Layout::detect(&SysFs, mount, &own)?,
            parent: parent.to_owned(),
        })
    }
}

impl<F: CgroupFs> Cgroups<F> {
    /// The VM's directories, one per hierarchy.
    pub fn dirs(&self, id: &str) -> Result<Vec<PathBuf>, CgroupError> {
        let mut parts = Path::new(id).components();
        match (parts.next(), parts.next()) {
            (Some(std::path::Component::Normal(name)), None) if name == OsStr::new(id) => {}
            _ => return Err(CgroupError::BadName(id.to_owned())),
        }
        Ok(self
            .layout
            .parents(&self.parent)
            .into_iter()
            .map(|p| p.join(id))
            .collect())
    }

    /// Makes the VM's cgroup with its limits and opens the files its
    /// process joins by. Undoes itself when a step fails.
    pub fn create(&self, id: &str, limits: Limits) -> Result<VmCgroup, CgroupError> {
        let dirs = self.dirs(id)?;
        let created = self.create_dirs(&dirs).and_then(|()| {
            self.write_limits(limits)(&dirs)?;
            dirs.iter()
                .map(|dir| {
                    self.fs.open_procs(dir).map_err(|source| CgroupError::Open {
                        path: dir.join("cgroup.procs"),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        });
        match created {
            Ok(procs) => Ok(VmCgroup { dirs, procs }),
            Err(err) => {
                let _ = self.remove(id);
                Err(err)
            }
        }
    }

    fn create_dirs(&self, dirs: &[PathBuf]) -> Result<(), CgroupError> {
        let mkdir = |path: &Path| {
            self.fs.mkdir(path).map_err(|source| CgroupError::Create {
                path: path.to_owned(),
                source,
            })
        };
        // The parent may be nested (`hull/<daemon>`): each level is made,
        // and on v2 each hands the controllers down, since they reach a
        // cgroup only through every ancestor's subtree_control.
        let levels: Vec<&str> = self.parent.split('/').filter(|l| !l.is_empty()).collect();
        for dir in dirs {
            let parent = dir.parent().expect("a VM's cgroup has a parent");
            let mut level = parent.to_owned();
            for _ in &levels {
                level.pop();
            }
            for name in &levels {
                if let Layout::V2 { .. } = &self.layout {
                    self.write(&level, "cgroup.subtree_control", "+memory +pids +cpu")?;
                }
                level.push(name);
                mkdir(&level)?;
            }
            if let Layout::V2 { .. } = &self.layout {
                self.write(parent, "cgroup.subtree_control", "+memory +pids +cpu")?;
            }
            mkdir(dir)?;
        }
        Ok(())
    }

    fn write(&self, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
        let path = dir.join(file);
        self.fs
            .write(&path, value)
            .map_err(|source| CgroupError::Write {
                path,
                value: value.to_owned(),
                source,
            })
    }

    fn write_limits(&self, limits: Limits) -> impl Fn(&[PathBuf]) -> Result<(), CgroupError> + '_ {
        move |dirs| {
            let quota = (u64::from(limits.cpus) * CPU_PERIOD_US).to_string();
            let memory = limits.memory_bytes.to_string();
            let pids = limits.pids.to_string();
            match &self.layout {
                Layout::V2 { .. } => {
                    let dir = &dirs[0];
                    self.write(dir, "memory.max", &memory)?;
                    // No swap: the limit is the VM's whole footprint.
                    if self.fs.exists(&dir.join("memory.swap.max")) {
                        self.write(dir, "memory.swap.max", "0")?;
                    }
                    self.write(dir, "pids.max", &pids)?;
                    self.write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
                }
                Layout::V1 { .. } => {
                    let [memory_dir, pids_dir, cpu_dir] = self.v1_dirs(dirs);
                    self.write(memory_dir, "memory.limit_in_bytes", &memory)?;
                    self.write(pids_dir, "pids.max", &pids)?;
                    self.write(cpu_dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    self.write(cpu_dir, "cpu.cfs_quota_us", &quota)?;
                }
            }
            Ok(())
        }
    }

    /// The memory, pids and cpu directories among `dirs`, which
    /// [`Layout::parents`] deduplicated when hierarchies are shared.
    fn v1_dirs<'a>(&self, dirs: &'a [PathBuf]) -> [&'a PathBuf; 3] {
        let Layout::V1 { memory, pids, cpu } = &self.layout else {
            unreachable!("v1 directories of a v2 layout")
        };
        let pick = |base: &PathBuf| {
            dirs.iter()
                .find(|d| d.starts_with(base))
                .expect("each controller has a directory")
        };
        [pick(memory), pick(pids), pick(cpu)]
    }

    /// Removes the VM's cgroup; a missing one is no error.
    pub fn remove(&self, id: &str) -> Result<(), CgroupError> {
        for dir in self.dirs(id)? {
            match self.fs.rmdir(&dir) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(CgroupError::Remove {
                        path: dir,
                        source: err,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the cgroups of VMs that are gone: those no process is in.
    /// The kernel refuses to remove the others, which keeps them.
    pub fn sweep(&self) -> Vec<String> {
        let mut removed = Vec::new();
        for parent in self.layout.parents(&self.parent) {
            for name in self.fs.children(&parent).unwrap_or_default() {
                if self.fs.rmdir(&parent.join(&name)).is_ok() && !removed.contains(&name) {
                    removed.push(name);
                }
            }
        }
        removed
    }

    /// A cgroup file of the VM's, as the kernel shows it.
    pub fn read(&self, id: &str, file: &str) -> Option<String> {
        self.dirs(id)
            .ok()?
            .iter()
            .map(|dir| dir.join(file))
            .find(|path| self.fs.exists(path))
            .and_then(|path| self.fs.read(&path).ok())
    }
}

/// A VM's cgroup, made before its process starts.
#[derive(Debug)]
pub struct VmCgroup {
    pub dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each hierarchy, open for writing.
    procs: Vec<OwnedFd>,
}

impl VmCgroup {
    /// Moves the calling process into the cgroup. It runs in the forked
    /// child before exec: one write(2) per hierarchy, no allocation.
    pub fn join(&self) -> io::Result<()> {
        for fd in &self.procs {
            // SAFETY: write(2) of a static one-byte buffer to a descriptor
            // this struct owns and keeps open; async-signal-safe.
            let written = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if written != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
