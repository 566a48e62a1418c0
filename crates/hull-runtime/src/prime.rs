//! Pooled VMs primed with an image: the rootfs of the image that ran last
//! in a size is plugged into its new pooled VMs, mounted, and the run's
//! program read ahead. A run of that image then skips the hot-plug, the
//! wait for the guest to see the disk, the mount, and the program's first
//! reads through the emulated disk: tens of ms each under TCG. A run of
//! another image takes an unprimed VM, or unplugs the primed rootfs first.

use std::path::PathBuf;
use std::time::Instant;

use hull_proto::{Request, RootfsSpec, DEFAULT_PATH};
use hull_vm::{DiskConfig, Vm};
use tracing::info;

use crate::agent::AgentClient;
use crate::pool::PooledVm;
use crate::run::{unless_vm_dies, RunError, ROOTFS_SERIAL};
use crate::size::VmSize;
use crate::spec::{process_config, ProcessConfig, ProcessOptions};
use crate::start::SizeClass;

/// What a size's next pooled VMs are primed with.
#[derive(Debug, Default)]
pub(crate) struct Priming {
    /// The rootfs of the size's last pooled run.
    last: Option<PathBuf>,
    /// Set once one image ran twice in a row: VMs primed with an image
    /// serve no other, so a size whose runs change image keeps its VMs
    /// unprimed rather than replace them at every run.
    pub next: Option<Prime>,
}

impl Priming {
    /// Counts a run of `prime`'s image.
    pub fn ran(&mut self, prime: Prime) {
        if self.last.as_ref() == Some(&prime.rootfs) {
            self.next = Some(prime);
        } else {
            self.last = Some(prime.rootfs);
            self.next = None;
        }
    }
}

/// The disk id a run's rootfs has, primed or not.
pub(crate) const ROOTFS_DISK: &str = "rootfs";
/// The most a primed VM reads ahead: page cache is guest memory, which a
/// clone pays for in host memory while it waits in the pool.
const MAX_BUDGET: u64 = 16 << 20;

/// What to prime a VM with: an image's rootfs and the files its runs open
/// first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prime {
    /// The image's erofs rootfs.
    pub rootfs: PathBuf,
    /// Program names and absolute paths (see `Request::PrimeRootfs`).
    pub read: Vec<String>,
    /// The `PATH` that program names are found along.
    pub path: String,
}

impl Prime {
    /// For runs of the image of `config`, whose rootfs is `rootfs`: the
    /// program the image runs unless told otherwise. Not a run's own
    /// program: pooled VMs serve every tenant, and what one ran is not for
    /// another to find in the page cache.
    pub fn for_image(rootfs: PathBuf, config: &hull_image::ImageConfig) -> Prime {
        match process_config(config, &ProcessOptions::default()) {
            Ok(process) => Prime::for_process(rootfs, &process),
            Err(_) => Prime {
                rootfs,
                read: Vec::new(),
                path: DEFAULT_PATH.to_owned(),
            },
        }
    }

    /// For runs of `process` on `rootfs`: its program, found as exec finds
    /// it. A program named relative to the working directory is not read.
    fn for_process(rootfs: PathBuf, process: &ProcessConfig) -> Prime {
        let program = process.args.first().cloned().unwrap_or_default();
        let path = process
            .env
            .iter()
            .find_map(|entry| entry.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        // An image's config may be large: what goes to the agent is not.
        let path = match path.len() > MAX_TEXT {
            true => path[..path.floor_char_boundary(MAX_TEXT)]
                .rsplit_once(':')
                .map_or("", |(kept, _)| kept),
            false => path,
        };
        let relative = program.contains('/') && !program.starts_with('/');
        let read = match relative || program.len() > MAX_TEXT {
            true => Vec::new(),
            false => vec![program],
        };
        Prime {
            rootfs,
            read,
            path: path.to_owned(),
        }
    }

    /// The rootfs disk as a run attaches it.
    pub(crate) fn disk(&self) -> DiskConfig {
        DiskConfig {
            id: ROOTFS_DISK.into(),
            path: self.rootfs.clone(),
            serial: ROOTFS_SERIAL.into(),
            read_only: true,
        }
    }
}

/// The longest program name or `PATH` sent to prime with.
const MAX_TEXT: usize = 4096;

/// How much a VM of `size` reads ahead: an eighth of its memory, at most
/// [`MAX_BUDGET`].
fn budget(size: VmSize) -> u64 {
    (u64::from(size.memory_mib) << 20 >> 3).min(MAX_BUDGET)
}

/// Asks the agent to mount `prime`'s rootfs, plugged in already, and to
/// read ahead what a VM of `size` may hold.
pub(crate) fn request(prime: &Prime, size: VmSize) -> Request {
    Request::PrimeRootfs {
        rootfs: RootfsSpec {
            serial: ROOTFS_SERIAL.into(),
            fs_type: "erofs".into(),
        },
        read: prime.read.clone(),
        path: prime.path.clone(),
        budget: budget(size),
    }
}

/// Plugs `prime`'s rootfs into `vm` and has the agent mount it and read
/// ahead; on failure the disk is unplugged again, if it can be.
pub(crate) async fn prime<V: Vm>(
    vm: &V,
    agent: &AgentClient,
    prime: &Prime,
    size: VmSize,
) -> Result<(), RunError> {
    vm.attach_disk(&prime.disk())
        .await
        .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
    let primed = unless_vm_dies(vm, vm.exit(), agent.request_done(&request(prime, size))).await;
    if primed.is_err() {
        let _ = release(vm, agent).await;
    }
    primed
}

/// Undoes [`prime`]: the agent lets go of the rootfs, then it is unplugged.
pub(crate) async fn release<V: Vm>(vm: &V, agent: &AgentClient) -> Result<(), RunError> {
    let request = Request::ReleaseRootfs {
        serial: ROOTFS_SERIAL.into(),
    };
    unless_vm_dies(vm, vm.exit(), agent.request_done(&request)).await?;
    vm.detach_disk(ROOTFS_DISK)
        .await
        .map_err(|e| RunError::Hypervisor(Box::new(e)))
}

/// Primes a new pooled VM of `class` with the image its last run had,
/// if that image's rootfs is still there; returns that rootfs.
pub(crate) async fn prime_pooled<V: Vm>(
    class: &SizeClass<V>,
    vm: &V,
    agent: &AgentClient,
) -> Result<Option<PathBuf>, RunError> {
    let Some(prime) = class.priming().next.clone() else {
        return Ok(None);
    };
    if !prime.rootfs.is_file() {
        // Its image was removed: nothing to prime until the next run.
        class.priming().next.take_if(|p| *p == prime);
        return Ok(None);
    }
    let primed = Instant::now();
    if let Err(err) = self::prime(vm, agent, &prime, class.size).await {
        // Its next VMs go out unprimed rather than fail the same way.
        class.priming().next.take_if(|p| *p == prime);
        return Err(err);
    }
    info!(
        vm = %vm.id(),
        rootfs = %prime.rootfs.display(),
        elapsed_ms = primed.elapsed().as_millis() as u64,
        "pooled VM primed"
    );
    Ok(Some(prime.rootfs))
}

/// Attaches `disks` to a pooled VM: a rootfs it is primed with is there
/// already; one it is primed with that is not the run's goes first.
pub(crate) async fn attach_to_pooled<V: Vm>(
    pooled: &PooledVm<V>,
    disks: &[DiskConfig],
) -> Result<(), RunError> {
    let Some(primed) = &pooled.primed else {
        return crate::start::attach(&pooled.vm, disks).await;
    };
    let rootfs = disks.iter().find(|d| d.id == ROOTFS_DISK);
    if rootfs.is_some_and(|d| d.path == *primed) {
        let rest: Vec<DiskConfig> = disks
            .iter()
            .filter(|d| d.id != ROOTFS_DISK)
            .cloned()
            .collect();
        return crate::start::attach(&pooled.vm, &rest).await;
    }
    // `Pool::take` hands out no such VM: its guest held another image.
    Err(RunError::Hypervisor(
        "a pooled VM primed with another image was handed out".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(args: &[&str], env: &[&str]) -> ProcessConfig {
        ProcessConfig {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env.iter().map(|e| e.to_string()).collect(),
            cwd: "/".into(),
            user: String::new(),
            tty: false,
            rlimits: Vec::new(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_run_primes_its_program_along_its_path() {
        let rootfs = PathBuf::from("/store/x.erofs");
        let prime = Prime::for_process(rootfs.clone(), &process(&["true"], &["PATH=/bin"]));
        assert_eq!(
            prime,
            Prime {
                rootfs: rootfs.clone(),
                read: vec!["true".into()],
                path: "/bin".into(),
            }
        );
        let prime = Prime::for_process(rootfs.clone(), &process(&["/app/run", "-v"], &[]));
        assert_eq!(prime.read, ["/app/run"]);
        assert_eq!(prime.path, DEFAULT_PATH);
        let prime = Prime::for_process(rootfs, &process(&["./run"], &["PATH=/bin"]));
        assert!(prime.read.is_empty(), "{prime:?}");
    }

    #[test]
    fn an_image_cannot_make_the_request_large() {
        let rootfs = PathBuf::from("/store/x.erofs");
        let long_path = format!("PATH={}", vec!["/bin"; 5000].join(":"));
        let long_name = "x".repeat(MAX_TEXT + 1);
        let prime = Prime::for_process(rootfs, &process(&[&long_name], &[&long_path]));
        assert!(prime.read.is_empty());
        assert!(prime.path.len() <= MAX_TEXT, "{}", prime.path.len());
        assert!(prime.path.split(':').all(|dir| dir == "/bin"));
    }

    #[test]
    fn an_image_is_primed_once_it_ran_twice_in_a_row() {
        let prime = |name: &str| Prime {
            rootfs: PathBuf::from(name),
            read: Vec::new(),
            path: DEFAULT_PATH.into(),
        };
        let mut priming = Priming::default();
        priming.ran(prime("a"));
        assert_eq!(priming.next, None);
        priming.ran(prime("a"));
        assert_eq!(priming.next, Some(prime("a")));
        priming.ran(prime("a"));
        assert_eq!(priming.next, Some(prime("a")));
        // Another image: unprimed until it, too, runs twice.
        priming.ran(prime("b"));
        assert_eq!(priming.next, None);
        priming.ran(prime("a"));
        assert_eq!(priming.next, None);
        priming.ran(prime("a"));
        assert_eq!(priming.next, Some(prime("a")));
    }

    #[test]
    fn the_read_ahead_is_bounded_by_the_vm_size() {
        let size = |memory_mib| VmSize {
            vcpus: 1,
            memory_mib,
        };
        assert_eq!(budget(size(64)), 8 << 20);
        assert_eq!(budget(size(16384)), MAX_BUDGET);
    }
}
