//! Image templates: a size's template saved with one image's rootfs
//! already plugged in, mounted and read ahead, as AWS Lambda's SnapStart
//! saves a function ready to run. A clone of one is a resume, then the
//! container's spawn: no hot-plug, no mount, no first reads through the
//! emulated disk.
//!
//! An image gets one when asked (`hull template create IMAGE`: pinned, kept
//! until removed) or once it started [`AUTO_AFTER`] VMs of a size since
//! hulld started (kept while it is among the most recently used). Each
//! holds its size's memory in tmpfs, so together they stay within a budget
//! (`hulld --image-template-memory`): a new one evicts the least recently
//! used unpinned ones, and is refused when pinned ones fill it.
//!
//! A template's guest holds the image's files (read ahead: the image's own
//! program, never a run's) and nothing of any run, and only runs of that
//! very rootfs clone it, as with pooled VMs primed with an image.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hull_vm::{DiskConfig, Hypervisor, NetBackend, Vm};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::agent::AgentClient;
use crate::prime::{Prime, ROOTFS_DISK};
use crate::run::{RunDir, RunError, Runtime};
use crate::size::VmSize;
use crate::start::VmFactory;
use crate::template::{Template, TemplateConfig, TemplateInfo, Templates, IMAGES_DIR};

/// Starts of one image in one size, since hulld started, that give it a
/// template of its own.
pub const AUTO_AFTER: u64 = 3;
/// What an image template's directory says of it, so that a restarted
/// hulld picks it up.
const META: &str = "image.json";

#[derive(Debug, thiserror::Error)]
pub enum ImageTemplateError {
    #[error(
        "image templates are off on this host (hulld --image-template-memory 0, or --no-templates)"
    )]
    Off,
    #[error(
        "an image template of {memory_mib} MiB does not fit: pinned image templates hold {pinned_mib} \
         of the {budget_mib} MiB they may (hulld --image-template-memory); remove one with \
         `hull template rm KEY`"
    )]
    Full {
        memory_mib: u64,
        pinned_mib: u64,
        budget_mib: u64,
    },
    #[error("cannot find the image's rootfs")]
    Image(#[from] hull_image::StoreError),
    #[error("cannot build the image template")]
    Build(#[source] Box<RunError>),
}

/// What [`META`] records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    vcpus: u32,
    memory_mib: u32,
    rootfs: PathBuf,
    read: Vec<String>,
    path: String,
    pinned: bool,
}

/// One image template as `hull template ls` shows it.
#[derive(Debug, Clone)]
pub struct ImageTemplateInfo {
    pub key: String,
    pub size: VmSize,
    /// The image's id: its rootfs is named after it.
    pub image_id: String,
    pub pinned: bool,
    /// Starts of this image in this size since hulld started.
    pub uses: u64,
    /// `building`, `ready` or `missing` (its build failed).
    pub status: &'static str,
    /// Its files, once ready.
    pub template: Option<TemplateInfo>,
}

struct Entry {
    templates: Arc<Templates>,
    prime: Prime,
    pinned: bool,
    last_used: Instant,
    /// The rootfs file the template was made of: an image removed and
    /// made again has a rootfs of the same name but another file.
    identity: Option<FileIdentity>,
}

/// Which file a path named: device, inode, change time (an inode number
/// comes back for the next file made).
type FileIdentity = (u64, u64, i64, i64);

fn identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

/// What a start finds for its image.
pub(crate) enum Lookup {
    /// A ready template to clone, and the slot it is in.
    Ready(Arc<Templates>, Arc<Template>),
    /// None yet; this one is to be built now.
    Build(Arc<Templates>),
    None,
}

/// The image templates of every size, within their memory budget.
pub(crate) struct ImageTemplates {
    base: TemplateConfig,
    budget_mib: u64,
    entries: Mutex<BTreeMap<(VmSize, PathBuf), Entry>>,
    /// Starts by size and rootfs, image templates or not.
    uses: Mutex<BTreeMap<(VmSize, PathBuf), u64>>,
    /// Set while a build that no one asked for runs: one at a time.
    auto_building: AtomicBool,
}

impl ImageTemplates {
    /// Picks up the image templates an earlier hulld left whose inputs are
    /// unchanged and whose rootfs is still there; removes the others.
    pub fn new(base: TemplateConfig, budget_mib: u64) -> Self {
        let this = Self {
            base,
            budget_mib,
            entries: Mutex::default(),
            uses: Mutex::default(),
            auto_building: AtomicBool::new(false),
        };
        let dir = this.base.dir.join(IMAGES_DIR);
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !this.adopt(&entry.path()) {
                info!(path = %entry.path().display(), "removing an outdated image template");
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        this
    }

    /// Takes back the image template in `dir`; `false` if it is not one
    /// this hulld would build the same way.
    fn adopt(&self, dir: &Path) -> bool {
        let found = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .find_map(|key_dir| {
                let text = fs::read(key_dir.path().join(META)).ok()?;
                serde_json::from_slice::<Meta>(&text).ok()
            });
        let Some(meta) = found else {
            return false;
        };
        let size = VmSize {
            vcpus: meta.vcpus,
            memory_mib: meta.memory_mib,
        };
        let prime = Prime {
            rootfs: meta.rootfs,
            read: meta.read,
            path: meta.path,
        };
        let config = self.base.for_image(size, &prime);
        if config.dir != dir || !prime.rootfs.is_file() || self.budget_mib == 0 {
            return false;
        }
        let templates = Templates::primed(config, Some(prime.clone()));
        if templates.ready().is_none() {
            return false;
        }
        let entry = Entry {
            templates: Arc::new(templates),
            pinned: meta.pinned,
            last_used: Instant::now(),
            identity: identity(&prime.rootfs),
            prime: prime.clone(),
        };
        self.entries().insert((size, prime.rootfs), entry);
        true
    }

    /// The entries, without those whose image was removed (its rootfs
    /// with it): they would hold memory for an image no one can run.
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<(VmSize, PathBuf), Entry>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<_> = entries
            .iter()
            .filter(|((_, rootfs), e)| {
                e.identity != identity(rootfs) && e.templates.status() != "building"
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            if let Some(old) = entries.remove(&key) {
                info!(rootfs = %key.1.display(), "removing the image template of a removed image");
                discard(&old.templates);
            }
        }
        entries
    }

    /// Counts a start of `prime`'s image in `size` and says what it finds:
    /// a ready template, one to build now (its [`AUTO_AFTER`]th start, if
    /// the budget has room), or nothing.
    pub fn lookup(&self, size: VmSize, prime: &Prime) -> Lookup {
        let key = (size, prime.rootfs.clone());
        let uses = {
            let mut uses = self.uses.lock().unwrap_or_else(|e| e.into_inner());
            let count = uses.entry(key.clone()).or_default();
            *count += 1;
            *count
        };
        {
            let mut entries = self.entries();
            if let Some(entry) = entries.get_mut(&key) {
                entry.last_used = Instant::now();
                if entry.prime != *prime {
                    // The image's own program changed meaning (another
                    // PATH, say): not a template of this start's image.
                    return Lookup::None;
                }
                match entry.templates.ready() {
                    Some(template) => return Lookup::Ready(entry.templates.clone(), template),
                    // Being built, or its build gave way to another
                    // process's: this start goes on without.
                    None if entry.templates.status() == "building" => return Lookup::None,
                    None => {}
                }
            }
        }
        if uses < AUTO_AFTER {
            return Lookup::None;
        }
        match self.reserve_auto(size, prime) {
            Some(templates) => Lookup::Build(templates),
            None => Lookup::None,
        }
    }

    /// Registers a template no one asked for, to be built now by the
    /// caller, who then calls [`Self::auto_built`]: one at a time, so
    /// that starts cycling through many images make builds (and
    /// evictions) no faster than a VM boots.
    pub fn reserve_auto(&self, size: VmSize, prime: &Prime) -> Option<Arc<Templates>> {
        if self.budget_mib == 0 || self.auto_building.swap(true, Ordering::AcqRel) {
            return None;
        }
        match self.reserve(size, prime, false) {
            Ok((templates, true)) => Some(templates),
            Ok((_, false)) => {
                self.auto_built();
                None
            }
            Err(err) => {
                self.auto_built();
                // Counted again from naught: not refused at every start.
                self.uses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(size, prime.rootfs.clone()));
                info!(error = %err, rootfs = %prime.rootfs.display(), "no image template for a frequent image");
                None
            }
        }
    }

    /// Ends the build [`Self::reserve_auto`] let start.
    pub fn auto_built(&self) {
        self.auto_building.store(false, Ordering::Release);
    }

    /// Makes room for and registers the template of `prime`'s image in
    /// `size`; `true` beside it when it is new (so to be built). Asked for
    /// (`pinned`), an existing one becomes pinned.
    pub fn reserve(
        &self,
        size: VmSize,
        prime: &Prime,
        pinned: bool,
    ) -> Result<(Arc<Templates>, bool), ImageTemplateError> {
        if self.budget_mib == 0 {
            return Err(ImageTemplateError::Off);
        }
        let key = (size, prime.rootfs.clone());
        let mut entries = self.entries();
        if let Some(entry) = entries.get_mut(&key) {
            if entry.prime == *prime {
                entry.pinned |= pinned;
                entry.last_used = Instant::now();
                let fresh = entry.templates.status() == "missing";
                return Ok((entry.templates.clone(), fresh));
            }
            // Its image's program changed: the old one goes.
            if let Some(old) = entries.remove(&key) {
                discard(&old.templates);
            }
        }
        let memory_mib = u64::from(size.memory_mib);
        let evictable = |e: &Entry| !e.pinned && e.templates.status() != "building";
        // What no eviction frees must leave room, or nothing is evicted.
        if mib_of(&entries, |e| !evictable(e)) + memory_mib > self.budget_mib {
            return Err(ImageTemplateError::Full {
                memory_mib,
                pinned_mib: mib_of(&entries, |e| e.pinned),
                budget_mib: self.budget_mib,
            });
        }
        while mib_of(&entries, |_| true) + memory_mib > self.budget_mib {
            // The least recently used evictable one; there is one while
            // the total is over, as what is kept fits.
            let Some(victim) = entries
                .iter()
                .filter(|(_, e)| evictable(e))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(old) = entries.remove(&victim) {
                info!(rootfs = %victim.1.display(), "evicting the least recently used image template");
                discard(&old.templates);
            }
        }
        let config = self.base.for_image(size, prime);
        let templates = Arc::new(Templates::primed(config, Some(prime.clone())));
        let fresh = templates.ready().is_none();
        entries.insert(
            key,
            Entry {
                templates: templates.clone(),
                prime: prime.clone(),
                pinned,
                last_used: Instant::now(),
                identity: identity(&prime.rootfs),
            },
        );
        Ok((templates, fresh))
    }

    /// Records a built template's inputs beside it, for a restarted hulld.
    pub fn saved(&self, size: VmSize, prime: &Prime) {
        let entries = self.entries();
        let Some(entry) = entries.get(&(size, prime.rootfs.clone())) else {
            return;
        };
        let Some(info) = entry.templates.describe() else {
            return;
        };
        let meta = Meta {
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            rootfs: prime.rootfs.clone(),
            read: prime.read.clone(),
            path: prime.path.clone(),
            pinned: entry.pinned,
        };
        let text = serde_json::to_vec(&meta).expect("the record serializes");
        if let Err(err) = fs::write(info.dir.join(META), text) {
            warn!(error = %err, dir = %info.dir.display(), "cannot record an image template; a restarted hulld builds it again");
        }
    }

    /// Forgets a template whose build or clone failed; the image's starts
    /// count from naught again, so it is not rebuilt at every start.
    pub fn drop_failed(&self, size: VmSize, rootfs: &Path, failed: &Templates) {
        let key = (size, rootfs.to_owned());
        self.uses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        let mut entries = self.entries();
        // Not one that replaced it since, nor one being built.
        if entries.get(&key).is_some_and(|e| {
            std::ptr::eq(&*e.templates, failed) && e.templates.status() != "building"
        }) {
            if let Some(old) = entries.remove(&key) {
                discard(&old.templates);
            }
        }
    }

    /// Memory that ready image templates hold, in MiB. Read at every VM
    /// start, so it does not look for removed images: a template holds its
    /// memory until it is discarded anyway.
    pub fn held_mib(&self) -> u64 {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        mib_of(&entries, |e| e.templates.ready().is_some())
    }

    /// Removes the image template whose key starts with `key`.
    pub fn remove(&self, key: &str) -> bool {
        let mut entries = self.entries();
        let found = entries
            .iter()
            .find(|(_, e)| {
                !key.is_empty()
                    && e.templates.key().starts_with(key)
                    && e.templates.status() != "building"
            })
            .map(|(k, _)| k.clone());
        let Some(found) = found else {
            return false;
        };
        if let Some(old) = entries.remove(&found) {
            discard(&old.templates);
        }
        true
    }

    /// Every image template, for `hull template ls`.
    pub fn list(&self) -> Vec<ImageTemplateInfo> {
        let uses = self.uses.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut list: Vec<ImageTemplateInfo> = self
            .entries()
            .iter()
            .map(|(key, entry)| ImageTemplateInfo {
                key: entry.templates.key().to_owned(),
                size: key.0,
                image_id: image_id(&key.1),
                pinned: entry.pinned,
                uses: uses.get(key).copied().unwrap_or(0),
                status: entry.templates.status(),
                template: entry.templates.describe(),
            })
            .collect();
        list.sort_by(|a, b| (a.size, &a.image_id).cmp(&(b.size, &b.image_id)));
        list
    }
}

/// The memory of the entries that `keep` chooses, in MiB.
fn mib_of(entries: &BTreeMap<(VmSize, PathBuf), Entry>, keep: impl Fn(&Entry) -> bool) -> u64 {
    entries
        .iter()
        .filter(|(_, e)| keep(e))
        .map(|((size, _), _)| u64::from(size.memory_mib))
        .sum()
}

/// An image's id, from its rootfs's name (`<id>.erofs`).
fn image_id(rootfs: &Path) -> String {
    rootfs
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes a template's files and its directory: clones that map its
/// memory keep it until they end.
fn discard(templates: &Templates) {
    if let Some(info) = templates.describe() {
        templates.remove(&info.key);
    }
    let _ = fs::remove_dir_all(templates.dir());
}

impl<H: Hypervisor> VmFactory<H> {
    /// A clone of the image template of this start's image (`prime`), with
    /// the rest of `disks` attached, if one is ready; counts the start, and
    /// builds the template in the background if that made the image a
    /// frequent one. `None`: the start goes on as it would without.
    pub(crate) async fn from_image_template(
        self: &Arc<Self>,
        prime: Option<Prime>,
        (id, detached, network, size): (&str, bool, &NetBackend, VmSize),
        run_dir: &RunDir,
        disks: &[DiskConfig],
    ) -> Option<(H::Vm, AgentClient)> {
        let images = self.image_templates.as_ref()?;
        let prime = prime?;
        // Only a run of that very rootfs, attached as a run attaches it.
        let rootfs = disks.iter().find(|d| d.id == ROOTFS_DISK)?;
        if *rootfs != prime.disk() {
            return None;
        }
        let (slot, template) = match images.lookup(size, &prime) {
            Lookup::Ready(slot, template) => (slot, template),
            Lookup::Build(templates) => {
                let factory = self.clone();
                tokio::spawn(async move {
                    let _ = factory.build_image_template(size, &prime, &templates).await;
                    if let Some(images) = factory.image_templates.as_ref() {
                        images.auto_built();
                    }
                });
                return None;
            }
            Lookup::None => return None,
        };
        let cloned = async {
            let mut config = self.config(id, &run_dir.path, vec![prime.disk()], detached, size)?;
            config.network = network.clone();
            crate::template::clone_vm(&*self.hypervisor, &template, config).await
        };
        let (vm, agent) = match cloned.await {
            Ok(started) => started,
            Err(err) => {
                warn!(error = %crate::error_chain(&err), rootfs = %prime.rootfs.display(), "cloning an image template failed; dropping it");
                images.drop_failed(size, &prime.rootfs, &slot);
                return None;
            }
        };
        // The run's own disks: their failure is the run's, not the template's.
        let rest: Vec<DiskConfig> = disks
            .iter()
            .filter(|d| d.id != ROOTFS_DISK)
            .cloned()
            .collect();
        if let Err(err) = crate::start::attach(&vm, &rest).await {
            warn!(error = %crate::error_chain(&err), "cannot attach a run's disks to an image template's clone");
            vm.kill();
            return None;
        }
        Some((vm, agent))
    }

    /// Builds the image template `templates` of `prime`'s image in `size`:
    /// a VM booted with the rootfs, primed, saved.
    pub(crate) async fn build_image_template(
        &self,
        size: VmSize,
        prime: &Prime,
        templates: &Templates,
    ) -> Result<(), ImageTemplateError> {
        let Some(images) = self.image_templates.as_ref() else {
            return Err(ImageTemplateError::Off);
        };
        let started = Instant::now();
        // The build's VM is a VM like any other while it runs.
        let built = match self.admit(size) {
            Ok(_building) => {
                templates
                    .build(&*self.hypervisor, size.vcpus, size.memory_mib)
                    .await
            }
            Err(err) => Err(err),
        };
        match built {
            Ok(()) if templates.ready().is_some() => {
                images.saved(size, prime);
                info!(
                    rootfs = %prime.rootfs.display(),
                    size = %size.token(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "image template ready"
                );
                Ok(())
            }
            // Another hulld or shim builds it, or this one already does.
            Ok(()) => Ok(()),
            Err(err) => {
                warn!(error = %crate::error_chain(&err), rootfs = %prime.rootfs.display(), "cannot build an image template");
                images.drop_failed(size, &prime.rootfs, templates);
                Err(ImageTemplateError::Build(Box::new(err)))
            }
        }
    }
}

impl<H: Hypervisor> Runtime<H> {
    /// `hull template create IMAGE`: builds `image`'s template in `size`
    /// (the default size when `None`), pinned, and waits for it.
    pub async fn create_image_template(
        &self,
        image: &str,
        size: Option<VmSize>,
    ) -> Result<ImageTemplateInfo, ImageTemplateError> {
        let Some(images) = self.vms.image_templates.as_ref() else {
            return Err(ImageTemplateError::Off);
        };
        let size = size.unwrap_or(self.vms.default_size);
        let store = self.images().clone();
        let name = image.to_owned();
        let prime = tokio::task::spawn_blocking(move || {
            let image = store.resolve(&name)?;
            let rootfs = store.rootfs(&image)?;
            Ok::<_, hull_image::StoreError>(Prime::for_image(rootfs, &image.config))
        })
        .await
        .expect("image tasks do not panic")?;
        let (templates, _) = images.reserve(size, &prime, true)?;
        self.vms
            .build_image_template(size, &prime, &templates)
            .await?;
        images
            .list()
            .into_iter()
            .find(|t| t.size == size && t.image_id == image_id(&prime.rootfs))
            .ok_or(ImageTemplateError::Off)
    }

    /// Has the template of `image_id` in `size` (the default size when
    /// `None`) built in the background, unpinned, unless it has one or
    /// pinned ones fill the budget: a function's calls want every start
    /// after its first to be a resume, not only those of frequent images.
    pub fn want_image_template(&self, image_id: &str, size: Option<VmSize>) {
        if self.vms.image_templates.is_none() {
            return;
        }
        let (vms, store) = (self.vms.clone(), self.images().clone());
        let image_id = image_id.to_owned();
        let size = size.unwrap_or(vms.default_size);
        tokio::spawn(async move {
            let resolved = tokio::task::spawn_blocking(move || {
                let image = store.resolve(&image_id)?;
                let rootfs = store.rootfs(&image)?;
                Ok::<_, hull_image::StoreError>(Prime::for_image(rootfs, &image.config))
            })
            .await;
            let Ok(Ok(prime)) = resolved else {
                return;
            };
            let Some(images) = vms.image_templates.as_ref() else {
                return;
            };
            if let Some(templates) = images.reserve_auto(size, &prime) {
                let _ = vms.build_image_template(size, &prime, &templates).await;
                images.auto_built();
            }
        });
    }

    /// Every image template, by size and image.
    pub fn image_templates(&self) -> Vec<ImageTemplateInfo> {
        self.vms
            .image_templates
            .as_ref()
            .map(ImageTemplates::list)
            .unwrap_or_default()
    }

    /// Removes the image template whose key starts with `key`.
    pub fn remove_image_template(&self, key: &str) -> bool {
        self.vms
            .image_templates
            .as_ref()
            .is_some_and(|t| t.remove(key))
    }
}

#[cfg(test)]
#[path = "image_template_tests.rs"]
mod tests;
