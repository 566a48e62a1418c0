//! How long the agent may take to answer each kind of request. Generous:
//! under TCG on a loaded host a guest runs tens of times slower than on
//! KVM, and a deadline only has to catch a guest that will never answer.

use std::time::Duration;

use hull_proto::Request;

/// Answered at once by a live agent: a lookup, a signal, a ping.
const QUICK: Duration = Duration::from_secs(10);
/// Work in the guest's kernel: mounts, process starts, CPU hot-unplug,
/// network set-up, a sync.
const KERNEL_WORK: Duration = Duration::from_secs(60);
/// Creating a container mounts its disks and may fill new volumes from the
/// image (docker's copy-up), which copies files.
const CREATE: Duration = Duration::from_secs(300);

/// The deadline of `request`; `None` for one that is a stream rather than
/// a request: `WriteArchive` is answered after its upload, which takes as
/// long as the client sends (its caller puts a deadline on the answer once
/// the upload ended).
pub fn deadline(request: &Request) -> Option<Duration> {
    Some(match request {
        Request::Ping
        | Request::Signal { .. }
        | Request::ResizeTerminal { .. }
        | Request::ListProcesses { .. }
        | Request::Stats { .. }
        | Request::StatPath { .. }
        | Request::ReadArchive { .. }
        | Request::ThawDisk { .. }
        | Request::Reattach
        | Request::Resume { .. } => QUICK,
        Request::StartProcess(_)
        | Request::RemoveContainer { .. }
        | Request::FreezeDisk { .. }
        | Request::SetOnlineCpus { .. }
        | Request::ReadFilesystem { .. }
        | Request::Shutdown
        | Request::ConfigureNetwork(_)
        | Request::ConfigureInterface { .. }
        | Request::PrimeRootfs { .. }
        | Request::ReleaseRootfs { .. } => KERNEL_WORK,
        Request::CreateContainer(_) => CREATE,
        Request::WriteArchive { .. } => return None,
    })
}

/// How long the agent may take to answer `WriteArchive` once the archive's
/// last byte was sent: it writes what it still holds, then answers.
pub const AFTER_UPLOAD: Duration = KERNEL_WORK;

/// The name of a request's kind, for errors.
pub fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Ping => "Ping",
        Request::CreateContainer(_) => "CreateContainer",
        Request::StartProcess(_) => "StartProcess",
        Request::RemoveContainer { .. } => "RemoveContainer",
        Request::Signal { .. } => "Signal",
        Request::ResizeTerminal { .. } => "ResizeTerminal",
        Request::ListProcesses { .. } => "ListProcesses",
        Request::Stats { .. } => "Stats",
        Request::StatPath { .. } => "StatPath",
        Request::ReadArchive { .. } => "ReadArchive",
        Request::WriteArchive { .. } => "WriteArchive",
        Request::ReadFilesystem { .. } => "ReadFilesystem",
        Request::FreezeDisk { .. } => "FreezeDisk",
        Request::ThawDisk { .. } => "ThawDisk",
        Request::SetOnlineCpus { .. } => "SetOnlineCpus",
        Request::Shutdown => "Shutdown",
        Request::Reattach => "Reattach",
        Request::ConfigureNetwork(_) => "ConfigureNetwork",
        Request::ConfigureInterface { .. } => "ConfigureInterface",
        Request::Resume { .. } => "Resume",
        Request::PrimeRootfs { .. } => "PrimeRootfs",
        Request::ReleaseRootfs { .. } => "ReleaseRootfs",
    }
}
