//! The messages carried as JSON in `Hello`, `Request`, `Response` and `Event` frames.

use serde::{Deserialize, Serialize};

use crate::rlimit::Rlimit;

/// Identifies one direction of one process's stdio on the channel; chosen by
/// the host, unique per connection.
pub type StreamId = u32;

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Name and version of the software speaking, for error messages.
    pub software: String,
}

/// What the host asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Mounts a container's rootfs and prepares its namespaces' mounts.
    CreateContainer(ContainerSpec),
    /// Starts a process in a created container; answered with `Started`.
    StartProcess(ProcessSpec),
    /// Undoes `CreateContainer` once none of the container's processes
    /// runs any more (refused with `InvalidRequest` while one does):
    /// unmounts its overlay, its filesystems and binds, and its image and
    /// writable disks, and forgets it. Answered with `Done`; its disks are
    /// then unused, and the host may unplug them. Volumes, shared
    /// directories and 9p shares stay mounted in the VM for the
    /// containers that share them.
    RemoveContainer {
        container: String,
    },
    Signal {
        container: String,
        process: String,
        signal: i32,
    },
    ResizeTerminal {
        container: String,
        process: String,
        rows: u16,
        cols: u16,
    },
    /// Lists the processes of a container (`docker top`); answered with
    /// `Processes`.
    ListProcesses {
        container: String,
    },
    /// CPU, memory and pid figures for `docker stats`; answered with `Stats`.
    Stats {
        container: String,
    },
    /// What is at `path` in the container (`docker cp`'s stat); answered
    /// with `PathStat`. A symlink there is described, not followed.
    StatPath {
        container: String,
        path: String,
    },
    /// Sends a tar of `path` in the container on the output stream
    /// `stream`, which the host registered before asking. Answered with
    /// `Done` before the first byte; `Eof` on the stream ends the archive.
    /// The entries are named from the path's base name, as docker names
    /// them (`/etc/hostname` → `hostname`, `/etc` → `etc/…`); a path ending
    /// in `/.` gives the directory's contents (an entry `.`, then `./…`).
    ReadArchive {
        container: String,
        path: String,
        stream: StreamId,
    },
    /// Unpacks the tar the host sends on the input stream `stream`, ended by
    /// `Eof`, into the directory `path` of the container, keeping modes,
    /// owners and modification times. Answered with `Done` after the stream's
    /// `Eof` once every entry is written; a failure is answered at once, and
    /// the agent still takes (and credits) the stream's data until its `Eof`.
    /// The host sends this request before the stream's first `Data` frame
    /// (the agent drops data for a stream it does not know), and without
    /// waiting for the answer, which follows the `Eof`.
    WriteArchive {
        container: String,
        path: String,
        stream: StreamId,
    },
    /// Sends a tar of the container's filesystem on the output stream
    /// `stream`, registered by the host before asking: `Done` before the
    /// first byte, `Eof` after the last (a tar cut short means the walk
    /// failed). Entries are named from the root (`etc/`, `etc/passwd`),
    /// without `/` or `./` before them, as docker's layers and exports
    /// name them. Volumes and the other mounts over the rootfs are never
    /// in it; what lies under them in the container's own files is.
    ReadFilesystem {
        container: String,
        stream: StreamId,
        view: FilesystemView,
    },
    /// Freezes the filesystem of the volume disk `serial` (FIFREEZE): its
    /// writes reach the disk and new ones wait, so the host can copy the
    /// disk whole; `ThawDisk` lets them go on. The agent thaws a freeze
    /// itself after ten minutes.
    FreezeDisk {
        serial: String,
    },
    ThawDisk {
        serial: String,
    },
    /// Brings the first `count` vCPUs online and takes the others offline,
    /// so a container uses no more CPUs than its limit allows. vCPU 0
    /// always stays online.
    SetOnlineCpus {
        count: u32,
    },
    /// Syncs filesystems and powers the VM off after answering. (The end of
    /// the channel does not: the agent waits for a host to connect again.)
    Shutdown,
    /// A host that connected to an agent it did not start (hulld restarted)
    /// learns its processes; answered with `Reattached`. It is the first
    /// request after the reconnection's `Hello`: from the agent noticing the
    /// host left (or a new host's `Hello`) until this request, output
    /// streams get no credit, so their output waits in the guest. Answering
    /// it sets every open output stream's window to [`crate::INITIAL_WINDOW`]:
    /// `Data` written after the answer counts against that fresh window;
    /// `Data` between the `Hello` and the answer (at most one chunk per
    /// stream, read before the agent knew) does not. Input streams keep
    /// going as they were. Exits after the answer are reported by
    /// `ProcessExited` as usual.
    Reattach,
    /// Gives the VM's network interfaces their addresses and routes, and
    /// keeps the resolvers and host names that containers created after it
    /// find in their `/etc/resolv.conf` and `/etc/hosts`. Sent before the
    /// first `CreateContainer`; without it interfaces stay down.
    ConfigureNetwork(NetworkSpec),
    /// Configures the VM's network device `slot` (0 is the first; see
    /// [`crate::nic_mac`]) as `interface` says, or, with `None`, takes its
    /// address away and its link down: a network joined or left while the
    /// VM runs. Answered with `Done`.
    ConfigureInterface {
        slot: u32,
        interface: Option<InterfaceSpec>,
    },
    /// Mounts the image disk of `rootfs` read-only and reads the files of
    /// `read`, at most `budget` bytes in all, so that a later container
    /// finds them in the page cache. Each is an absolute path in the image
    /// or a program name, found along `path` as exec finds it; paths are
    /// resolved inside the image, and missing files skipped. A
    /// `CreateContainer` whose rootfs has this serial then uses this mount,
    /// until `ReleaseRootfs`; the host neither unplugs nor replaces the
    /// disk before that. Answered with `Done` once the reads are over.
    PrimeRootfs {
        rootfs: RootfsSpec,
        read: Vec<String>,
        path: String,
        budget: u64,
    },
    /// Unmounts what `PrimeRootfs` mounted for `serial` (containers made on
    /// it keep their own mount), so the host may unplug the disk. Answered
    /// with `Done`, also when nothing was primed under that serial.
    ReleaseRootfs {
        serial: String,
    },
    /// The VM was restored from a template: set the clock and reseed the
    /// random number generator, so that no two clones share either.
    Resume {
        unix_time_nanos: u64,
        entropy: Vec<u8>,
    },
}

/// What of a container's filesystem `ReadFilesystem` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilesystemView {
    /// Everything, the image's files with the container's changes
    /// (`docker export`).
    Whole,
    /// The container's changes only, as one image layer (`docker
    /// commit`): its writable layer, with what it deleted from the image
    /// as OCI whiteouts (`.wh.name`, and `.wh..wh..opq` in a directory
    /// that hides the image's). The `/etc` files the agent writes itself
    /// (hostname, hosts, resolv.conf) are left out, as docker leaves out
    /// the ones it mounts.
    Changes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub id: String,
    pub hostname: String,
    pub rootfs: RootfsSpec,
    /// The container's own disk (fs_type `ext4`) for the overlay's upper
    /// layer, so its changes survive a stop and start of the VM. The host
    /// hands it over formatted; the agent keeps `upper` and `work` on it.
    /// `None`: the upper layer is a tmpfs, gone with the VM.
    #[serde(default)]
    pub writable: Option<RootfsSpec>,
    /// Directories of the VM mounted into the container: the volumes that
    /// the containers of a pod share.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// Names of files in the rootfs' `/etc` that the host put there itself
    /// (containerd's CRI binds its own `hosts`, `hostname` and
    /// `resolv.conf` into each container), which the agent keeps instead
    /// of writing its own.
    #[serde(default)]
    pub host_etc_files: Vec<String>,
}

/// The VM's network, as the host set it up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// In the order of the VM's network devices.
    pub interfaces: Vec<InterfaceSpec>,
    /// Name servers' addresses for `/etc/resolv.conf`.
    pub dns: Vec<String>,
    /// Search domains for `/etc/resolv.conf`.
    #[serde(default)]
    pub search: Vec<String>,
    /// `(address, names)` lines added to `/etc/hosts`.
    #[serde(default)]
    pub hosts: Vec<(String, Vec<String>)>,
}

/// One network interface of the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceSpec {
    /// The MAC address it takes (`02:…`); a VM cloned from a template
    /// would otherwise keep the template's.
    pub mac: String,
    /// IPv4 address with its prefix length, `10.0.2.15/24`.
    pub address: String,
    /// The default route's gateway, if this interface carries it. One
    /// outside the address's subnet (a CNI's `/32` with a link-local
    /// gateway) is reached on the link.
    pub gateway: Option<String>,
    /// The link's MTU, when the network it joins has one other than 1500.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Routes through this interface besides its subnet's and the default
    /// one (a CNI's routes to the cluster's other networks).
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// One IPv4 route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// The network it reaches, with its prefix length: `10.244.0.0/16`.
    pub destination: String,
    /// The next hop; `None` for a network on the link itself.
    pub gateway: Option<String>,
}

/// A directory bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub source: MountSource,
    /// Absolute path in the container; created if missing.
    pub target: String,
    pub read_only: bool,
    /// Fill the source from what the container's rootfs holds at `target`
    /// when the source is empty (a new volume), as docker does.
    #[serde(default)]
    pub copy_up: bool,
}

/// Where a container's mount comes from. Disks and host directories are
/// mounted once in the VM and shared by the containers that name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountSource {
    /// A directory of the VM, created empty when first named (a pod's
    /// emptyDir volume).
    SharedDir { name: String },
    /// A disk the host attached with this SCSI serial (a named volume).
    Disk { serial: String, fs_type: String },
    /// A host directory shared over virtio-9p under this mount tag.
    HostDir { tag: String },
    /// A directory inside the 9p share `tag`: `path`, relative, of plain
    /// names. A share is fixed when the VM boots, so a host that learns of
    /// its directories later (containerd's shim, one container after
    /// another) shares one directory and bind-mounts them into it.
    HostSubdir { tag: String, path: String },
}

/// A disk the agent mounts: the read-only image disk under the overlay, or
/// the container's writable disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// SCSI serial the host gave the disk; the agent finds the device by it.
    pub serial: String,
    /// Filesystem of the disk, e.g. `erofs`.
    pub fs_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub container: String,
    /// Unique within the container; the main process is `init`.
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// As in an image config: empty (root), `name`, `uid`, `uid:gid`, `name:group`.
    pub user: String,
    pub terminal: bool,
    pub stdin: Option<StreamId>,
    pub stdout: StreamId,
    /// `None` with a terminal, where both outputs share the pty.
    pub stderr: Option<StreamId>,
    /// Set in the new process before it execs, in this order; an unknown
    /// kind, a soft limit above its hard one, or a limit the kernel refuses
    /// fails the request.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Supplementary groups beyond the user's own (docker's `GroupAdd`):
    /// names in the container's `/etc/group`, or gids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// With a terminal, its size (rows, columns) from the start, so that
    /// the process never sees another: a client's resize that came before
    /// the start. 24×80 without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_size: Option<(u16, u16)>,
}

/// A process as `Reattach` lists it: what its `StartProcess` named, and its
/// fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    pub container: String,
    /// The process id of its `StartProcess`.
    pub process: String,
    /// The guest's pid.
    pub pid: i32,
    pub terminal: bool,
    pub stdin: Option<StreamId>,
    pub stdout: StreamId,
    pub stderr: Option<StreamId>,
    /// `Some` once its `ProcessExited` was sent (every byte of its output
    /// and its `Eof` frames preceded it); `None` while that event is still
    /// to come, even if the process already died and its output drains.
    pub exited: Option<ExitStatus>,
}

/// The agent's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "value", rename_all = "snake_case")]
pub enum Response {
    Done,
    Started {
        pid: i32,
    },
    /// Sorted by pid.
    Processes(Vec<ProcessInfo>),
    Stats(GuestStats),
    PathStat(PathStat),
    /// Every process the agent knows of: those not yet reported exited,
    /// sorted by pid, then those reported exited (oldest first, the last
    /// 256), whose `ProcessExited` the host may have missed.
    Reattached(Vec<ProcessState>),
    Failed(RequestError),
}

/// Clock ticks per second of [`ProcessInfo`]'s tick counts: the kernel's
/// `USER_HZ`, which is 100 on every architecture the guest runs on.
pub const USER_HZ: u64 = 100;

/// One process of a container, as `ps` shows it. Pids are the guest's (the
/// VM's), not the container's PID namespace's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    /// Effective user id.
    pub uid: u32,
    /// One letter, as in `/proc/<pid>/stat`: `R`, `S`, `D`, `Z`, `T`, …
    pub state: String,
    /// When the process started, in [`USER_HZ`] ticks after the guest booted.
    pub start_ticks: u64,
    /// User plus system CPU time, in [`USER_HZ`] ticks.
    pub cpu_ticks: u64,
    /// Controlling terminal, e.g. `pts/0`, or `?` without one.
    pub tty: String,
    /// Its command line; `[name]` for a process without one (a kernel
    /// thread or a zombie).
    pub args: Vec<String>,
}

/// What `docker stats` needs, measured for the whole guest: a VM runs one
/// container. CPU times are cumulative since the guest booted; a reader
/// takes the difference of two samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestStats {
    /// CPU time spent busy, all CPUs together: the user, nice, system, irq,
    /// softirq and steal times of `/proc/stat`.
    pub cpu_total_ns: u64,
    /// CPU time that passed, all CPUs together: the busy times plus idle
    /// and iowait (docker's `system_cpu_usage`).
    pub system_ns: u64,
    pub online_cpus: u32,
    /// `MemTotal - MemAvailable` of `/proc/meminfo`.
    pub memory_used_bytes: u64,
    /// `MemTotal`: the VM's memory is the container's limit.
    pub memory_limit_bytes: u64,
    /// Processes in the container.
    pub pids: u32,
    /// The guest's network interfaces but loopback, by name; none from an
    /// agent that predates them.
    #[serde(default)]
    pub networks: std::collections::BTreeMap<String, InterfaceStats>,
}

/// One interface's counters, as `/proc/net/dev` has them (and as docker
/// names them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStats {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// A path in a container, as docker's `X-Docker-Container-Path-Stat`
/// header describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// The path's base name.
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode`: the permission bits (0o777), and of the type and
    /// special bits those of [`path_mode`].
    pub mode: u32,
    pub mtime_unix_nanos: i64,
    /// For a symlink, the absolute path in the container it resolves to (its
    /// raw target if that does not exist); empty otherwise.
    pub link_target: String,
}

/// Bits of Go's `os.FileMode` that [`PathStat::mode`] uses.
pub mod path_mode {
    pub const DIR: u32 = 1 << 31;
    pub const SYMLINK: u32 = 1 << 27;
    /// Block and character devices; the latter also carry [`CHAR_DEVICE`].
    pub const DEVICE: u32 = 1 << 26;
    pub const NAMED_PIPE: u32 = 1 << 25;
    pub const SOCKET: u32 = 1 << 24;
    pub const SETUID: u32 = 1 << 23;
    pub const SETGID: u32 = 1 << 22;
    pub const CHAR_DEVICE: u32 = 1 << 21;
    pub const STICKY: u32 = 1 << 20;
    pub const PERMISSIONS: u32 = 0o777;
}

/// Why a request failed, classified so the host can map it (e.g. to exit code 127).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RequestError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidRequest,
    NotFound,
    /// The process's executable does not exist in the container.
    CommandNotFound,
    /// The process's executable exists but cannot be executed.
    CommandNotExecutable,
    Internal,
}

/// Something the agent reports unasked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "args", rename_all = "snake_case")]
pub enum Event {
    /// Sent after every byte of the process's output and its `Eof` frames.
    ProcessExited {
        container: String,
        process: String,
        status: ExitStatus,
    },
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The exit code a shell (and docker) reports: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
