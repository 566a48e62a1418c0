//! The wire protocol between the host and Hull's guest agent.
//!
//! One byte stream (a virtio-serial port on the guest side, a Unix socket on
//! the host side) carries [`Frame`]s. Requests and responses are matched by id;
//! process stdio travels as `Data` frames per stream id, flow-controlled by
//! `Credit` frames; the agent reports process exits as events. Both sides open
//! with a [`Hello`] carrying [`PROTOCOL_VERSION`].

mod frame;
mod message;

pub use frame::{
    parse_header, Frame, FrameDecoder, FrameError, FrameKind, HEADER_LEN, MAX_PAYLOAD,
};
pub use message::{
    path_mode, ContainerSpec, ErrorKind, Event, ExitStatus, GuestStats, Hello, PathStat,
    ProcessInfo, ProcessSpec, Request, RequestError, Response, RootfsSpec, StreamId, USER_HZ,
};

/// Version of the message set; both sides must speak the same one.
/// 2: containers may have a writable disk; process listing, guest
/// statistics and path archives.
pub const PROTOCOL_VERSION: u32 = 2;

/// Name of the virtio-serial port that carries the control channel.
pub const CONTROL_PORT_NAME: &str = "hull.ctl";

/// Bytes a receiver can buffer per stream before it grants more credit.
/// Every stream starts with this window in both directions.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// Largest chunk of stdio data put into one frame.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
