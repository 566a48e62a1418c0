//! VM templates: one VM booted to a ready agent, paused, its device state
//! saved and its memory left in a file on tmpfs. A clone maps that file
//! copy-on-write and resumes from the state instead of booting, so the
//! kernel, the initramfs and the agent's pages are shared by every clone.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hull_proto::Request;
use hull_vm::{Hypervisor, MemoryFile, Vm, VmConfig};
use tracing::{info, warn};

use crate::prime::Prime;
use crate::run::RunError;
use crate::size::VmSize;

#[derive(Debug, thiserror::Error)]
pub enum TemplateDirError {
    #[error("cannot create the VM template directory {}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the VM template directory {} is {found}; it must be a directory of uid {owner}, mode 0700, \
         as no VM may reach templates other VMs load: remove it, or fix its owner and mode",
        .path.display()
    )]
    Unsafe {
        path: PathBuf,
        found: String,
        owner: u32,
    },
}

/// Creates the template directory, this process's own with mode 0700, or
/// checks that it is that: a template's memory is what every later clone
/// loads, so no one else may write, replace or even list it.
pub fn ensure_dir(path: &Path) -> Result<(), TemplateDirError> {
    let created = fs::DirBuilder::new().mode(0o700).create(path);
    match created {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            // Its parents are missing: they are made as usual, it 0700.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| TemplateDirError::Create {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(TemplateDirError::Create {
                path: path.to_owned(),
                source,
            })
        }
    }
    let meta = fs::symlink_metadata(path).map_err(|source| TemplateDirError::Create {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let owner = unsafe { libc::geteuid() };
    let mode = meta.mode() & 0o7777;
    if !meta.is_dir() || meta.uid() != owner || mode != 0o700 {
        let kind = if meta.file_type().is_symlink() {
            "a symbolic link"
        } else if meta.is_dir() {
            "a directory"
        } else {
            "not a directory"
        };
        return Err(TemplateDirError::Unsafe {
            path: path.to_owned(),
            found: format!("{kind} of uid {}, mode {mode:04o}", meta.uid()),
            owner,
        });
    }
    Ok(())
}

/// Makes a saved template's memory file read-only for everyone and this
/// process's own: the template's QEMU, which wrote it as its own uid, is
/// gone, and no clone's QEMU may change what later clones load.
fn seal(memory: &Path) -> io::Result<()> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(memory)?;
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    file.set_permissions(fs::Permissions::from_mode(0o644))
}

/// The files of a ready template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub memory: PathBuf,
    pub state: PathBuf,
}

/// A ready template, as `hull template ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub key: String,
    pub dir: PathBuf,
    /// Guest RAM in the memory file, shared by every clone.
    pub memory_bytes: u64,
    pub state_bytes: u64,
    pub built: Option<std::time::SystemTime>,
}

/// Where templates live and what they are built from.
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    /// A directory on tmpfs, so guest memory stays in RAM and is shared.
    pub dir: PathBuf,
    /// Digest of everything a template depends on (kernel, agent, size,
    /// hypervisor, Hull's version): another key means another template.
    pub key: String,
    /// The mount tag of a virtio-9p device the template has, unmounted, so
    /// that clones can share a directory of their own under that tag.
    pub share_tag: Option<String>,
}

impl TemplateConfig {
    /// The template of one size: in a directory of its own under `dir`,
    /// its key the digest of this one's, the size and the share.
    pub fn for_size(&self, size: VmSize) -> TemplateConfig {
        use sha2::Digest;
        let shape = format!("{} {} {:?}", self.key, size.token(), self.share_tag);
        let digest = sha2::Sha256::digest(shape);
        TemplateConfig {
            dir: self.dir.join(size.token()),
            key: hex::encode(digest)[..16].to_owned(),
            share_tag: self.share_tag.clone(),
        }
    }
}

impl TemplateConfig {
    /// The template of `size` with `prime`'s image plugged in: in a
    /// directory of its own per size and rootfs, under [`IMAGES_DIR`], its
    /// key the digest of this one's and of what is primed.
    pub(crate) fn for_image(&self, size: VmSize, prime: &Prime) -> TemplateConfig {
        use sha2::Digest;
        let rootfs = prime.rootfs.to_string_lossy();
        let shape = format!(
            "{} {} {:?} {rootfs} {:?} {}",
            self.key,
            size.token(),
            self.share_tag,
            prime.read,
            prime.path
        );
        let name = hex::encode(sha2::Sha256::digest(rootfs.as_bytes()));
        TemplateConfig {
            dir: self
                .dir
                .join(IMAGES_DIR)
                .join(format!("{}-{}", size.token(), &name[..16])),
            key: hex::encode(sha2::Sha256::digest(shape))[..16].to_owned(),
            share_tag: self.share_tag.clone(),
        }
    }
}

/// Where image templates live, under the template directory.
pub const IMAGES_DIR: &str = "images";

#[derive(Debug, Clone)]
enum Slot {
    Missing,
    Building,
    Ready(Arc<Template>),
}

/// The template of one VM size and its state.
#[derive(Debug)]
pub struct Templates {
    config: TemplateConfig,
    /// An image template's rootfs: plugged in, mounted and read ahead
    /// before the state is saved.
    prime: Option<Prime>,
    slot: Mutex<Slot>,
}

const READY_MARKER: &str = "ready";

impl Templates {
    /// Picks up a template a previous daemon left, if it was built from the
    /// same inputs, and removes templates of other inputs: their memory
    /// files would otherwise hold on to RAM in tmpfs for nothing.
    pub fn new(config: TemplateConfig) -> Self {
        Self::primed(config, None)
    }

    /// An image template: `new`'s, with `prime`'s rootfs in the saved VM.
    pub(crate) fn primed(config: TemplateConfig, prime: Option<Prime>) -> Self {
        if let Ok(entries) = fs::read_dir(&config.dir) {
            for entry in entries.flatten() {
                if entry.file_name() != config.key.as_str() {
                    info!(path = %entry.path().display(), "removing an outdated VM template");
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let slot = match Self::ready_on_disk(&config) {
            Some(template) => {
                info!(key = %config.key, "reusing the VM template");
                Slot::Ready(Arc::new(template))
            }
            None => Slot::Missing,
        };
        Self {
            config,
            prime,
            slot: Mutex::new(slot),
        }
    }

    fn files(config: &TemplateConfig) -> Template {
        let dir = config.dir.join(&config.key);
        Template {
            memory: dir.join("memory"),
            state: dir.join("state"),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The digest of what the template is built from.
    pub fn key(&self) -> &str {
        &self.config.key
    }

    /// The directory of this template's versions.
    pub(crate) fn dir(&self) -> &Path {
        &self.config.dir
    }

    pub fn ready(&self) -> Option<Arc<Template>> {
        match &*self.slot() {
            Slot::Ready(template) => Some(template.clone()),
            _ => None,
        }
    }

    /// `missing`, `building` or `ready`, for `hull info`.
    pub fn status(&self) -> &'static str {
        match &*self.slot() {
            Slot::Missing => "missing",
            Slot::Building => "building",
            Slot::Ready(_) => "ready",
        }
    }

    /// What `hull template ls` shows; `None` unless one is ready.
    pub fn describe(&self) -> Option<TemplateInfo> {
        let template = self.ready()?;
        let dir = template.state.parent()?.to_owned();
        let size = |path: &std::path::Path| fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let built = fs::metadata(dir.join(READY_MARKER))
            .and_then(|m| m.modified())
            .ok();
        Some(TemplateInfo {
            key: self.config.key.clone(),
            memory_bytes: size(&template.memory),
            state_bytes: size(&template.state),
            built,
            dir,
        })
    }

    /// Removes the ready template with `key` (a prefix will do): its memory
    /// leaves tmpfs once the clones that map it are gone. The next VM boots
    /// cold and builds a new one.
    pub fn remove(&self, key: &str) -> bool {
        let mut slot = self.slot();
        let matches = !key.is_empty() && self.config.key.starts_with(key);
        match &*slot {
            Slot::Ready(template) if matches => {
                if let Some(dir) = template.state.parent() {
                    let _ = fs::remove_dir_all(dir);
                }
                info!(key = %self.config.key, "VM template removed");
                *slot = Slot::Missing;
                true
            }
            _ => false,
        }
    }

    /// Forgets a template that failed to clone, so the next build replaces it.
    pub fn invalidate(&self, template: &Template) {
        let mut slot = self.slot();
        if matches!(&*slot, Slot::Ready(t) if **t == *template) {
            *slot = Slot::Missing;
            if let Some(dir) = template.state.parent() {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }

    /// Builds the template unless one is ready or being built.
    pub async fn build<H: Hypervisor>(
        &self,
        hypervisor: &H,
        vcpus: u32,
        memory_mib: u32,
    ) -> Result<(), RunError> {
        {
            let mut slot = self.slot();
            if !matches!(*slot, Slot::Missing) {
                return Ok(());
            }
            *slot = Slot::Building;
        }
        // Other processes (each containerd shim) may share the directory:
        // one builds while the others boot cold.
        let Some(_lock) = self.lock_for_build() else {
            *self.slot() = Slot::Missing;
            return Ok(());
        };
        // Another process may have finished it while this one booted.
        if let Some(template) = Self::ready_on_disk(&self.config) {
            *self.slot() = Slot::Ready(Arc::new(template));
            return Ok(());
        }
        let result = self.boot_and_save(hypervisor, vcpus, memory_mib).await;
        let mut slot = self.slot();
        match result {
            Ok(template) => {
                let dir = template.state.parent().unwrap_or(&self.config.dir);
                info!(key = %self.config.key, dir = %dir.display(), "VM template ready");
                *slot = Slot::Ready(Arc::new(template));
                Ok(())
            }
            Err(err) => {
                warn!(error = %err, "cannot build the VM template; VMs boot cold");
                *slot = Slot::Missing;
                Err(err)
            }
        }
    }

    /// An exclusive lock on the template directory, or `None` while
    /// another process holds it.
    fn lock_for_build(&self) -> Option<fs::File> {
        let _ = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.config.dir);
        let dir = match fs::File::open(&self.config.dir) {
            Ok(dir) => dir,
            Err(e) => {
                warn!(dir = %self.config.dir.display(), error = %e, "cannot open the template directory");
                return None;
            }
        };
        // SAFETY: flock on a descriptor we own; the lock goes with it.
        let locked = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        locked.then_some(dir)
    }

    /// The template of `config`, if one was built whole: its marker names
    /// its key and both its files are there.
    fn ready_on_disk(config: &TemplateConfig) -> Option<Template> {
        let template = Self::files(config);
        let ready = fs::read_to_string(config.dir.join(&config.key).join(READY_MARKER))
            .is_ok_and(|marker| marker.trim() == config.key)
            && template.memory.is_file()
            && template.state.is_file();
        ready.then_some(template)
    }

    async fn boot_and_save<H: Hypervisor>(
        &self,
        hypervisor: &H,
        vcpus: u32,
        memory_mib: u32,
    ) -> Result<Template, RunError> {
        let template = Self::files(&self.config);
        let dir = template
            .state
            .parent()
            .expect("template files are in a dir")
            .to_owned();
        let _ = fs::remove_dir_all(&dir);
        let run_dir = dir.join("vm");
        fs::create_dir_all(&run_dir).map_err(|source| RunError::RunDir {
            path: run_dir.clone(),
            source,
        })?;
        let mut config = VmConfig {
            id: format!("template-{}", self.config.key),
            run_dir,
            vcpus,
            memory_mib,
            // On the command line, as each clone has it.
            disks: self.prime.iter().map(Prime::disk).collect(),
            memory_file: Some(MemoryFile {
                path: template.memory.clone(),
                shared: true,
            }),
            restore_from: None,
            detached: false,
            network: hull_vm::NetBackend::Isolated,
            shares: Vec::new(),
        };
        if let Some(tag) = &self.config.share_tag {
            let path = dir.join("share");
            fs::create_dir_all(&path).map_err(|source| RunError::RunDir {
                path: path.clone(),
                source,
            })?;
            config.shares.push(hull_vm::HostShare {
                tag: tag.clone(),
                path,
                read_only: true,
            });
        }
        let mut vm = hypervisor
            .start(config)
            .await
            .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
        let agent = crate::run::greet(&mut vm).await?;
        if let Some(prime) = &self.prime {
            let size = VmSize { vcpus, memory_mib };
            let request = crate::prime::request(prime, size);
            let primed = agent.request_done(&request);
            // An image that wedges the guest holds no build for ever.
            let primed = tokio::time::timeout(
                crate::run::BOOT_TIMEOUT,
                crate::run::unless_vm_dies(&vm, vm.exit(), primed),
            )
            .await
            .unwrap_or_else(|_| {
                Err(RunError::BootTimeout {
                    console: vm.console_tail(),
                })
            });
            if let Err(err) = primed {
                vm.kill();
                return Err(err);
            }
        }
        // The agent answers, so it is idle in its read loop: the state to clone.
        agent.request_done(&Request::Ping).await?;
        vm.save_state(&template.state)
            .await
            .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
        vm.kill();
        let mut exit = vm.exit();
        let _ = exit.wait_for(Option::is_some).await;
        // Filled before sealed: filling writes.
        hull_vm::jail::fill_memory_file(&template.memory)
            .and_then(|()| seal(&template.memory))
            .map_err(|source| RunError::RunDir {
                path: template.memory.clone(),
                source,
            })?;
        let marker = dir.join(READY_MARKER);
        fs::write(&marker, &self.config.key).map_err(|source| RunError::RunDir {
            path: marker,
            source,
        })?;
        Ok(template)
    }
}

/// Starts a clone of `template` with `config` (whose size, devices and 9p
/// tags must be the template's) and resumes it: its memory maps the
/// template's copy-on-write, its clock and entropy are set anew.
pub async fn clone_vm<H: Hypervisor>(
    hypervisor: &H,
    template: &Template,
    mut config: VmConfig,
) -> Result<(H::Vm, crate::AgentClient), RunError> {
    config.memory_file = Some(MemoryFile {
        path: template.memory.clone(),
        shared: false,
    });
    config.restore_from = Some(template.state.clone());
    let mut vm = hypervisor
        .start(config)
        .await
        .map_err(|e| RunError::Hypervisor(Box::new(e)))?;
    let control = vm.take_control_channel().expect("a new VM has its channel");
    let agent = crate::AgentClient::resumed(vm.id(), control);
    let resume = crate::start::clock_and_entropy();
    let resumed = crate::run::unless_vm_dies(&vm, vm.exit(), agent.request_done(&resume));
    let result = match tokio::time::timeout(crate::run::BOOT_TIMEOUT, resumed).await {
        Ok(result) => result,
        Err(_) => Err(RunError::BootTimeout {
            console: vm.console_tail(),
        }),
    };
    if let Err(err) = result {
        vm.kill();
        return Err(err);
    }
    Ok((vm, agent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_directory_is_made_private_or_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/templates");
        ensure_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o700);
        ensure_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("mode 0755") && err.contains("must be"),
            "{err}"
        );
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let err = ensure_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn a_sealed_memory_file_is_read_only_for_all() {
        let dir = tempfile::tempdir().unwrap();
        let memory = dir.path().join("memory");
        fs::write(&memory, [0u8; 4096]).unwrap();
        fs::set_permissions(&memory, fs::Permissions::from_mode(0o600)).unwrap();
        seal(&memory).unwrap();
        assert_eq!(fs::metadata(&memory).unwrap().mode() & 0o7777, 0o644);
    }
}
