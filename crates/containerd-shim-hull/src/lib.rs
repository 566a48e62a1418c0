//! `containerd-shim-hull-v2`: containerd's shim v2 for Hull. One shim
//! process per sandbox (a CRI pod, or a lone `ctr run` container) owns one
//! QEMU microvm; each container of the sandbox gets its rootfs as a disk
//! in that VM and runs there under Hull's guest agent.

pub mod binds;
pub mod config;
pub mod events;
pub mod podnet;
pub mod resources;
pub mod rootfs;
pub mod sandbox;
pub mod service;
pub mod shim;
pub mod spec;
pub mod state;
pub mod stdio;
pub mod task;
