//! What confines each QEMU besides its uid and seccomp: a cgroup of its own
//! with memory, pids and CPU limits ([`cgroup`]) and a mount namespace that
//! holds only the files it needs ([`mountns`]), as Firecracker's jailer and
//! Kata's runtime confine their VMMs.
//!
//! Everything is prepared before fork ([`Jail::prepare`]); the child only
//! makes system calls ([`Jail::enter`]).

pub mod cgroup;
pub mod mountns;

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::{Accel, NetBackend, VmConfig};
pub use cgroup::{CgroupError, Cgroups, Limits, VmCgroup};
pub use mountns::{Bind, MountError, MountPlan};

/// QEMU's own memory beside guest RAM, without TCG's translation cache
/// (which is added at its configured size). Measured under TCG, a 256 MiB
/// template clone that ran `find /` and then filled its guest with a
/// 220 MiB buffer: QEMU's mappings other than guest RAM held 72 MiB (48
/// MiB anonymous, the 32 MiB cache in part, and 24 MiB of libraries, page
/// cache charged where first read), and its cgroup peaked at 273 MiB.
/// Page cache of the disks it reads is charged too but reclaimable.
pub const QEMU_OVERHEAD_MIB: u64 = 48;

/// QEMU's threads beside its vCPUs: the main loop, RCU, the signal and
/// I/O threads, and a block/9p worker pool of up to 64 threads.
pub const QEMU_THREADS: u32 = 96;

/// CPUs of time for QEMU's own threads beside its vCPUs' (the main loop
/// that restores a clone, plugs its disks and serves its I/O). Measured
/// under TCG, `run --rm busybox true` from a template took 2.5 s with the
/// quota at the vCPUs' time alone (the vCPU thread starved the main loop)
/// against 1.0 s without a quota.
pub const QEMU_CPUS: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot make the VM's cgroup")]
    Cgroup(#[from] CgroupError),
    #[error("cannot prepare the VM's mount namespace")]
    Mount(#[from] MountError),
}

/// Which confinements VMs get. `HULL_JAIL` picks them: `on` (both),
/// `cgroup`, `mountns` or `off`; both by default when running as root,
/// neither otherwise (they need root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailConfig {
    pub cgroup: bool,
    pub mount_ns: bool,
    /// Hull's parent cgroup, named relative to where [`cgroup`] puts it.
    pub cgroup_parent: String,
}

impl JailConfig {
    pub fn from_env(cgroup_parent: &str) -> Self {
        // SAFETY: geteuid(2) has no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let (cgroup, mount_ns) = match std::env::var("HULL_JAIL").as_deref() {
            Ok("off") => (false, false),
            Ok("cgroup") => (true, false),
            Ok("mountns") => (false, true),
            Ok("on") => (true, true),
            Ok(other) => {
                warn!(
                    value = other,
                    "HULL_JAIL is not on, off, cgroup or mountns; using the default"
                );
                (root, root)
            }
            Err(_) => (root, root),
        };
        JailConfig {
            cgroup,
            mount_ns,
            cgroup_parent: cgroup_parent.to_owned(),
        }
    }

    pub fn off() -> Self {
        JailConfig {
            cgroup: false,
            mount_ns: false,
            cgroup_parent: "hull".into(),
        }
    }

    /// The host's cgroups for Hull's VMs, when they are on.
    pub fn cgroups(&self) -> Result<Option<Cgroups>, CgroupError> {
        if !self.cgroup {
            return Ok(None);
        }
        Cgroups::host(&self.cgroup_parent).map(Some)
    }

    /// Removes a VM's cgroup, whose process is gone or never started.
    pub fn remove_cgroup(&self, id: &str) {
        if let Ok(Some(cgroups)) = self.cgroups() {
            if let Err(err) = cgroups.remove(id) {
                warn!(vm = id, error = %err, "cannot remove the VM's cgroup");
            }
        }
    }

    /// Removes a VM's cgroup once `exit` reports that its process ended. The
    /// kernel may hold a cgroup busy for a moment after its last process
    /// was reaped, so removal is tried for a while.
    pub fn remove_cgroup_on_exit(
        &self,
        id: &str,
        mut exit: tokio::sync::watch::Receiver<Option<crate::VmExit>>,
    ) {
        if !self.cgroup {
            return;
        }
        let (config, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            let _ = exit.wait_for(Option::is_some).await;
            let Ok(Some(cgroups)) = config.cgroups() else {
                return;
            };
            let mut last = None;
            for _ in 0..100 {
                match cgroups.remove(&id) {
                    Ok(()) => return,
                    Err(err) => last = Some(err),
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if let Some(err) = last {
                warn!(vm = %id, error = %err, "cannot remove the VM's cgroup");
            }
        });
    }

    /// Removes the cgroups of VMs that are gone, at the daemon's start.
    pub fn sweep(&self) {
        match self.cgroups() {
            Ok(Some(cgroups)) => {
                let removed = cgroups.sweep();
                if !removed.is_empty() {
                    tracing::info!(?removed, "removed the cgroups of VMs that are gone");
                }
            }
            Ok(None) => {}
            Err(err) => warn!(error = %err, "cannot sweep the cgroups of VMs that are gone"),
        }
    }
}

/// What QEMU needs to know about itself to be jailed.
#[derive(Debug, Clone)]
pub struct QemuFacts<'a> {
    pub binary: &'a Path,
    pub accel: Accel,
    /// TCG's translation cache in MiB, which counts toward its memory.
    pub tb_size_mib: Option<u32>,
}

/// A VM's confinement, prepared before its QEMU forks.
#[derive(Debug, Default)]
pub struct Jail {
    pub cgroup: Option<VmCgroup>,
    pub mounts: Option<MountPlan>,
}

impl Jail {
    pub fn prepare(
        config: &JailConfig,
        qemu: &QemuFacts<'_>,
        vm: &VmConfig,
    ) -> Result<Self, JailError> {
        let mounts = if config.mount_ns {
            let (symlinks, binds) = binds(qemu, vm);
            Some(MountPlan::new(&vm.run_dir.join("root"), &symlinks, &binds)?)
        } else {
            None
        };
        let cgroup = match config.cgroups()? {
            Some(cgroups) => Some(cgroups.create(&vm.id, limits(qemu, vm))?),
            None => None,
        };
        Ok(Jail { cgroup, mounts })
    }

    /// Runs in the forked child before exec, before it gives up root: joins
    /// the cgroup first (so that the namespace's tmpfs is charged to it),
    /// then enters the mount namespace.
    pub fn enter(&self) -> std::io::Result<()> {
        if let Some(cgroup) = &self.cgroup {
            cgroup.join()?;
        }
        if let Some(mounts) = &self.mounts {
            mounts.enter()?;
        }
        Ok(())
    }
}

/// Allocates every page of a saved template's memory file. A clone maps
/// the file privately, and its first touch of a hole (guest memory the
/// template never used) allocates a page in the file, shared from then on
/// but charged to that clone's cgroup, unreclaimable without swap, and
/// kept after the clone is gone: measured, a clone writing 150 MiB was
/// charged 145 MiB of the template's file beside its own copies, and its
/// cgroup killed it. Filled once, the file's pages are charged where the
/// template was made, and a clone holds only the pages it changed.
pub fn fill_memory_file(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let len = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: fallocate(2) on a descriptor `file` owns, with mode 0 (it
    // only allocates: the file's size and data stay as they are).
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A VM's cgroup limits. The memory limit is the VM's size plus QEMU's
/// overhead: a balloon or `hull update` below the size leaves it there, as
/// the size is what the VM may grow back to.
pub fn limits(qemu: &QemuFacts<'_>, vm: &VmConfig) -> Limits {
    let cache = match (qemu.accel, qemu.tb_size_mib) {
        (Accel::Tcg, Some(mib)) => u64::from(mib),
        // QEMU's own default cache on a 64-bit host.
        (Accel::Tcg, None) => 1024,
        _ => 0,
    };
    Limits {
        memory_bytes: (u64::from(vm.memory_mib) + QEMU_OVERHEAD_MIB + cache) << 20,
        pids: QEMU_THREADS + vm.vcpus,
        cpus: vm.vcpus + QEMU_CPUS,
    }
}

/// Binds `bind` when its path exists on this host.
fn optional(binds: &mut Vec<Bind>, bind: Bind) {
    if bind.path.exists() {
        binds.push(bind);
    }
}

/// What QEMU sees of the host, each for a reason; `(symlinks, binds)`.
/// Its boot files, console, disks, tap, sockets and migration streams
/// come as descriptors (reached as `/proc/self/fd/N` and `/dev/fdset/N`),
/// so none of them needs a path here.
pub fn binds(qemu: &QemuFacts<'_>, vm: &VmConfig) -> (Vec<(PathBuf, PathBuf)>, Vec<Bind>) {
    let mut symlinks = Vec::new();
    let mut binds = vec![Bind {
        // QEMU, the ~50 libraries `ldd` lists (in /usr/lib on merged-/usr
        // hosts), its modules (/usr/lib/<arch>/qemu, loaded by need), and
        // the microvm firmware and keymaps (/usr/share/qemu).
        exec: true,
        ..Bind::read_only("/usr")
    }];
    // The loader's path (/lib64/ld-linux-x86-64.so.2) and the libraries'
    // (/lib/<arch>): symlinks into /usr on merged-/usr hosts, directories
    // elsewhere.
    for top in ["/lib", "/lib64"] {
        match std::fs::read_link(top) {
            Ok(target) => symlinks.push((PathBuf::from(top), target)),
            Err(_) if Path::new(top).is_dir() => binds.push(Bind {
                exec: true,
                ..Bind::read_only(top)
            }),
            Err(_) => {}
        }
    }
    // The loader's index of library paths; without it, it searches.
    optional(&mut binds, Bind::read_only("/etc/ld.so.cache"));
    // A binary outside /usr (HULL_QEMU) comes in by itself.
    if !qemu.binary.starts_with("/usr") && qemu.binary.is_absolute() {
        optional(
            &mut binds,
            Bind {
                exec: true,
                ..Bind::read_only(qemu.binary)
            },
        );
    }
    // glib and QEMU's daemon code open the null device; the entropy
    // device is QEMU's fallback where getrandom(2) is missing.
    binds.push(Bind::device("/dev/null"));
    binds.push(Bind::device("/dev/urandom"));
    if qemu.accel == Accel::Kvm {
        binds.push(Bind::device("/dev/kvm"));
    }
    if let NetBackend::User { .. } = &vm.network {
        // The user-mode stack answers the guest's DNS with the host's
        // resolvers, which it reads from resolv.conf.
        optional(&mut binds, Bind::read_only("/etc/resolv.conf"));
    }
    for share in &vm.shares {
        // The user's 9p directory, with what is mounted below it, as a
        // bind mount would show it; never a way to set-uid programs or
        // device nodes on the host.
        binds.push(Bind {
            recursive: true,
            ..if share.read_only {
                Bind::read_only(&share.path)
            } else {
                Bind::writable(&share.path)
            }
        });
    }
    (symlinks, binds)
}
