//! The wire protocol between the host and Hull's guest agent.
//!
//! One byte stream (a virtio-serial port on the guest side, a Unix socket on
//! the host side) carries [`Frame`]s. Requests and responses are matched by id;
//! process stdio travels as `Data` frames per stream id, flow-controlled by
//! `Credit` frames; the agent reports process exits as events. Both sides open
//! with a [`Hello`] carrying [`PROTOCOL_VERSION`].
//!
//! A restarted host re-attaches to a running agent: it connects again, sends
//! its `Hello` first, skips what it reads up to [`RESYNC`], reads the
//! agent's `Hello`, and asks [`Request::Reattach`] for the processes.

mod frame;
mod message;
mod resync;
mod rlimit;

pub use frame::{
    parse_header, Frame, FrameDecoder, FrameError, FrameKind, HEADER_LEN, MAX_PAYLOAD,
};
pub use message::{
    path_mode, ContainerSpec, ErrorKind, Event, ExitStatus, FilesystemView, GuestStats, Hello,
    InterfaceSpec, InterfaceStats, MountSource, MountSpec, NetworkSpec, PathStat, ProcessInfo,
    ProcessSpec, ProcessState, Request, RequestError, Response, RootfsSpec, RouteSpec, StreamId,
    USER_HZ,
};
pub use resync::{find_resync, ResyncScanner, RESYNC};
pub use rlimit::{Rlimit, RLIMIT_KINDS, RLIM_INFINITY};

/// Version of the message set; both sides must speak the same one.
/// 2: containers may have a writable disk; process listing, guest
/// statistics and path archives.
/// 3: a restarted host re-attaches: the agent outlives its host, answers a
/// later `Hello` with [`RESYNC`] and its own, and lists its processes
/// (`Reattach`).
/// 4: an image disk can be mounted and read ahead of its container
/// (`PrimeRootfs`, `ReleaseRootfs`).
/// 5: network devices are told apart by their boot MACs ([`nic_mac`]),
/// and one can be configured while containers run (`ConfigureInterface`).
pub const PROTOCOL_VERSION: u32 = 5;

/// How many network devices a VM has: the first, and spares that networks
/// joined while it runs (or after its first, at its start) plug into.
/// Eight virtio-mmio transports are all microvm has without ACPI, and the
/// other devices take six.
pub const NIC_SLOTS: usize = 3;

/// The MAC address network device `slot` has at boot, by which the agent
/// finds it (the order of `eth0`, `eth1`, … follows the kernel's probing,
/// not the command line). The agent then gives each interface the MAC of
/// its network's endpoint. Locally administered, unicast.
pub fn nic_mac(slot: usize) -> [u8; 6] {
    [0x02, 0x48, 0x55, 0x4c, 0x00, slot as u8]
}

/// [`nic_mac`] as QEMU and `ip` write it.
pub fn nic_mac_text(slot: usize) -> String {
    let mac = nic_mac(slot);
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The `PATH` docker gives a container whose image sets none: the agent
/// runs processes with it, and the host looks for programs along it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Name of the virtio-serial port that carries the control channel.
pub const CONTROL_PORT_NAME: &str = "hull.ctl";

/// Bytes a receiver can buffer per stream before it grants more credit.
/// Every stream starts with this window in both directions.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Largest chunk of stdio data put into one frame.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
