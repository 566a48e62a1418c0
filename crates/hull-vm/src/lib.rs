//! Virtual machines for Hull: the [`Hypervisor`] and [`Vm`] traits, the QEMU
//! `microvm` backend, accelerator detection and the guest's boot artifacts.

pub mod accel;
pub mod artifacts;
mod initramfs;
pub mod jail;
pub mod mount;
pub mod qemu;
pub mod qmp;
pub mod uids;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use tokio::net::UnixStream;
use tokio::sync::watch;

pub use accel::{Accel, AccelChoice, AccelDecision};
pub use artifacts::{ArtifactError, ArtifactSources, GuestArtifacts};
pub use qemu::{parse_tb_size, Confinement, Qemu, QemuError, QemuVm, DEFAULT_TCG_TB_SIZE_MIB};
pub use uids::VmUids;

/// What a VM is made of.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub id: String,
    /// A directory owned by this VM for its sockets and logs; must exist.
    pub run_dir: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    /// Disks attached at boot.
    pub disks: Vec<DiskConfig>,
    /// Guest memory in a file (templates and their clones) instead of
    /// anonymous memory.
    pub memory_file: Option<MemoryFile>,
    /// Device state saved by [`Vm::save_state`]: the VM resumes from it
    /// instead of booting. Needs the template's `memory_file`.
    pub restore_from: Option<PathBuf>,
    /// Keep the VM running when this process exits, so that a later one can
    /// take it back with [`Hypervisor::adopt`]. Otherwise the VM dies with
    /// its parent and with its handle.
    pub detached: bool,
    /// What the VM's network device is connected to.
    pub network: NetBackend,
    /// Host directories shared with the guest over virtio-9p. A VM with
    /// shares has devices its template lacks, so it boots cold.
    pub shares: Vec<HostShare>,
}

/// A host directory the guest mounts over virtio-9p by its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostShare {
    pub tag: String,
    pub path: PathBuf,
    pub read_only: bool,
}

/// Names the devices every VM has, for keys of saved device state: a
/// clone's devices must be its template's.
pub const DEVICE_LAYOUT: &str =
    "serial,rng,scsi,balloon(no-reporting),net(slot macs),net,net,9p;no-rtc";

/// The backend of a VM's network device. Every VM has the device, so that
/// clones match their template; the backend is each VM's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetBackend {
    /// Connected to nothing.
    #[default]
    Isolated,
    /// QEMU's user-mode stack: the guest is 10.0.2.15 behind NAT, with
    /// host ports forwarded in. Needs no privileges.
    User { forwards: Vec<HostForward> },
    /// A tap device the host created and bridged, or wired to a pod's
    /// interface. With `netns`, the tap is in that network namespace (a
    /// CRI pod's), where the host opens it for QEMU, which inherits it.
    Tap {
        ifname: String,
        netns: Option<PathBuf>,
    },
}

/// A host port forwarded to the guest by the user-mode stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostForward {
    pub udp: bool,
    /// The host address to listen on; empty for all.
    pub host_ip: String,
    pub host_port: u16,
    pub guest_port: u16,
}

/// A file holding guest RAM. A template maps it shared, so its memory lands
/// in the file; clones map it private, sharing its pages copy-on-write.
#[derive(Debug, Clone)]
pub struct MemoryFile {
    pub path: PathBuf,
    pub shared: bool,
}

/// A raw disk image, found in the guest by its SCSI serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub id: String,
    pub path: PathBuf,
    pub serial: String,
    pub read_only: bool,
}

/// How a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// The hypervisor exited by itself with this status (a guest poweroff is 0).
    Exited(i32),
    /// The hypervisor was killed by this signal.
    Killed(i32),
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(code) => write!(f, "the hypervisor exited with status {code}"),
            Self::Killed(signal) => write!(f, "the hypervisor was killed by signal {signal}"),
        }
    }
}

/// Starts VMs. QEMU is one implementation; tests may provide fakes.
pub trait Hypervisor: Send + Sync + 'static {
    type Vm: Vm;
    type Error: std::error::Error + Send + Sync + 'static;

    fn start(&self, config: VmConfig)
        -> impl Future<Output = Result<Self::Vm, Self::Error>> + Send;

    /// Takes back a detached VM that an earlier process started with
    /// `run_dir` as its directory.
    fn adopt(
        &self,
        id: &str,
        run_dir: &std::path::Path,
    ) -> impl Future<Output = Result<Self::Vm, Self::Error>> + Send;
}

/// A running VM. Dropping it stops the VM.
pub trait Vm: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    fn id(&self) -> &str;
    /// The byte stream to the guest agent; it can be taken once.
    fn take_control_channel(&mut self) -> Option<UnixStream>;
    /// Becomes `Some` when the VM has stopped, for whatever reason.
    fn exit(&self) -> watch::Receiver<Option<VmExit>>;
    /// Stops the VM at once; the guest gets no chance to clean up.
    fn kill(&self);
    /// Asks the hypervisor to quit (QMP `quit`): the guest stops at once,
    /// but the hypervisor closes its disks and files first. Returns once
    /// asked (an error may only mean it quit before answering): [`Vm::exit`]
    /// tells when it is gone. A hypervisor that is itself hung never
    /// answers; callers bound the wait and [`Vm::kill`] it.
    fn quit(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Whether the VM keeps running when its handle is dropped.
    fn is_detached(&self) -> bool;
    /// The last lines the guest wrote to its console, to explain a failure.
    fn console_tail(&self) -> String;
    /// Plugs a disk into the running VM; the guest finds it by serial.
    fn attach_disk(
        &self,
        disk: &DiskConfig,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Unplugs the disk that `attach_disk` plugged in as `id` (its
    /// [`DiskConfig::id`]), which the guest must no longer use; when it
    /// returns, the hypervisor has let go of the disk's file.
    fn detach_disk(&self, id: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Plugs the host's tap `tap` into spare network device `slot` (1 or
    /// more; see [`hull_proto::NIC_SLOTS`]), whose guest interface then
    /// carries its traffic. The host opens the tap; the hypervisor gets
    /// the open descriptor.
    fn plug_nic(
        &self,
        slot: usize,
        tap: &str,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Takes out what `plug_nic` plugged into `slot`: the hypervisor closes
    /// the tap. Nothing plugged there is no error.
    fn unplug_nic(&self, slot: usize) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Leaves the guest `bytes` of its memory and takes the rest back with
    /// the balloon (all of it back to the guest when `bytes` is the VM's
    /// memory). The guest gives the pages up in the background.
    fn set_guest_memory(&self, bytes: u64) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Freezes the guest's vCPUs where they are (`running` false), or lets
    /// them go on: `docker pause`, which a VM does whole, as no guest
    /// process can tell.
    fn set_running(&self, running: bool) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Pauses the VM and writes its device state to `path` (its memory is
    /// already in its memory file). The VM stays paused.
    fn save_state(
        &self,
        path: &std::path::Path,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
