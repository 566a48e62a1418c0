//! What the shim remembers of its containers and their processes, and how
//! that reads as containerd's task states.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use containerd_shim::api::Status;
use hull_runtime::size::Limits;
use tokio::sync::watch;

use crate::sandbox::RootfsDisk;
use crate::spec::ProcessConfig;
use crate::stdio::CloseInput;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    /// The exit code, or 128 + the signal that killed it.
    pub status: u32,
    pub at: SystemTime,
}

/// Where containerd wants a process's stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A container's init process or one exec'd into it.
pub struct Process {
    pub config: ProcessConfig,
    pub stdio: Stdio,
    /// The guest's pid once started.
    pub pid: Option<u32>,
    pub exit: watch::Sender<Option<Exited>>,
    pub close_input: Option<CloseInput>,
    /// A terminal size (rows, columns) given before the process started,
    /// as `ctr run -t` gives it.
    pub pending_size: Option<(u16, u16)>,
}

impl Process {
    pub fn new(config: ProcessConfig, stdio: Stdio) -> Self {
        Self {
            config,
            stdio,
            pid: None,
            exit: watch::channel(None).0,
            close_input: None,
            pending_size: None,
        }
    }

    pub fn exited(&self) -> Option<Exited> {
        *self.exit.borrow()
    }

    /// containerd's view: created until started, stopped once exited; a
    /// running process of a paused VM is paused.
    pub fn status(&self, vm_paused: bool) -> Status {
        match (self.pid, self.exited()) {
            (_, Some(_)) => Status::STOPPED,
            (None, None) => Status::CREATED,
            (Some(_), None) if vm_paused => Status::PAUSED,
            (Some(_), None) => Status::RUNNING,
        }
    }
}

/// A container of the sandbox: its bundle, image and processes. The init
/// process is under the exec id `""`, as containerd names it.
pub struct Container {
    pub bundle: PathBuf,
    pub image: PathBuf,
    /// The image's disk in the VM.
    pub disk: RootfsDisk,
    pub processes: HashMap<String, Process>,
    /// Its memory and CPU limits, from its spec and later updates.
    pub limits: Limits,
    /// A workload, not the pod's own (pause) container: its limits count
    /// towards what the guest is held to.
    pub workload: bool,
}

impl Container {
    pub fn init(&self) -> &Process {
        self.processes
            .get("")
            .expect("a container has its init process")
    }
}

/// The agent's name for a process: the init process is `init`; an exec'd
/// one keeps containerd's exec id (which is never `init`'s empty id).
pub fn agent_process_id(exec_id: &str) -> &str {
    if exec_id.is_empty() {
        "init"
    } else {
        exec_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> Process {
        let config = ProcessConfig {
            args: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            user: "0:0".into(),
            tty: false,
            rlimits: Vec::new(),
            groups: Vec::new(),
        };
        Process::new(config, Stdio::default())
    }

    #[test]
    fn a_process_goes_from_created_to_running_to_stopped() {
        let mut p = process();
        assert_eq!(p.status(false), Status::CREATED);
        p.pid = Some(7);
        assert_eq!(p.status(false), Status::RUNNING);
        assert_eq!(p.status(true), Status::PAUSED);
        p.exit.send_replace(Some(Exited {
            status: 0,
            at: SystemTime::now(),
        }));
        assert_eq!(p.status(true), Status::STOPPED);
    }

    #[test]
    fn the_init_process_has_the_agents_name() {
        assert_eq!(agent_process_id(""), "init");
        assert_eq!(agent_process_id("e1"), "e1");
    }
}
