//! Hull's guest agent: PID 1 of the VM. It mounts container root
//! filesystems, runs their processes, and streams their stdio over the
//! control channel (see `hull-proto`).
//!
//! System calls live in narrow modules (`boot`, `container`, `spawn`, `pty`,
//! `sys`); the rest is logic with unit tests that run on the host.

pub mod agent;
pub mod archive;
pub mod boot;
pub mod channel;
pub mod container;
mod copy;
pub mod copyup;
pub mod cpus;
pub mod disk;
pub mod export;
pub mod flow;
pub mod freeze;
pub mod fsat;
mod inspect;
pub mod network;
pub mod port;
pub mod prime;
pub mod procenv;
pub mod process;
pub mod ps;
pub mod pty;
mod reaper;
mod remove;
pub mod rlimit;
pub mod session;
pub mod spawn;
mod start;
pub mod stats;
pub mod stdio;
pub mod sys;
#[cfg(test)]
mod testutil;
pub mod unpack;
pub mod user;

/// Logs a line to stderr, which is the guest console (ttyS0).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "hull-agent: {}", format_args!($($arg)*));
    }};
}

/// An error and its sources as one line: "a: b: c".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}
