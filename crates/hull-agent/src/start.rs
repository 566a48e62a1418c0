//! StartProcess: from a [`ProcessSpec`] to a running process with its stdio
//! pumped, the pieces prepared here and the system calls in `spawn`.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hull_proto::{ErrorKind, Frame, ProcessSpec, RequestError, Response, StreamId};

use crate::agent::{lock, Agent, Stream};
use crate::container::Container;
use crate::process::{ExitTracker, Process};
use crate::spawn::{self, Namespaces, SpawnError, SpawnPlan};
use crate::{error_chain, log, procenv, pty, rlimit, stdio, sys, user};

/// The process id docker gives a container's main process; it gets fresh
/// namespaces, later processes join its.
pub(crate) const INIT: &str = "init";

/// Where the process's output goes once it runs, and where its input comes from.
struct Pumps {
    outputs: Vec<(StreamId, File)>,
    input: Option<(StreamId, Input)>,
}

enum Input {
    Pipe(File),
    /// Input to a pty is never closed: the master is also the output.
    Pty(Arc<File>),
}

fn invalid(message: String) -> RequestError {
    RequestError::new(ErrorKind::InvalidRequest, message)
}

fn internal(what: &str, error: &dyn std::error::Error) -> RequestError {
    RequestError::new(
        ErrorKind::Internal,
        format!("{what}: {}", error_chain(error)),
    )
}

impl Agent {
    /// Handles StartProcess on its own thread; answers it itself, so that the
    /// `Started` answer precedes any output and the exit event.
    pub(crate) fn start_process(self: &Arc<Self>, request: u32, spec: ProcessSpec) {
        let stream_ids = spec_streams(&spec);
        let (process, pumps) = match self.launch(&spec) {
            Ok(launched) => launched,
            Err(error) => {
                log!(
                    "cannot start process {} in container {}: {}",
                    spec.id,
                    spec.container,
                    error.message
                );
                self.unregister_streams(&stream_ids);
                return self.channel.respond(request, &Response::Failed(error));
            }
        };
        let pid = process.pid;
        self.channel.respond(request, &Response::Started { pid });
        self.start_pumps(&process, pumps);
        if spec.terminal {
            // A terminal merges stderr into stdout; a separate stream just ends.
            if let Some(stderr) = spec.stderr {
                self.channel.send(&Frame::eof(stderr));
            }
        }
        if let Some(status) = process.track(|t| t.announced()) {
            self.report_exit(&process, status);
        }
    }

    fn start_pumps(self: &Arc<Self>, process: &Arc<Process>, pumps: Pumps) {
        for (stream, source) in pumps.outputs {
            let Some(Stream::Output(window)) = self.stream(stream) else {
                self.output_done(process);
                continue;
            };
            let (agent, process) = (self.clone(), process.clone());
            self.thread(format!("out-{stream}"), move || {
                stdio::pump_output(source, stream, &window, &agent.channel);
                agent.output_done(&process);
            });
        }
        if let Some((stream, sink)) = pumps.input {
            let Some(Stream::Input(queue)) = self.stream(stream) else {
                return;
            };
            let channel = self.channel.clone();
            self.thread(format!("in-{stream}"), move || match sink {
                Input::Pipe(pipe) => stdio::pump_input(&queue, pipe, stream, &channel),
                Input::Pty(master) => stdio::pump_input(&queue, &*master, stream, &channel),
            });
        }
    }

    fn thread(&self, name: String, work: impl FnOnce() + Send + 'static) {
        if let Err(e) = std::thread::Builder::new().name(name.clone()).spawn(work) {
            // Without its pump the process would block: nothing better to do.
            panic!("cannot start thread {name}: {e}");
        }
    }

    fn launch(&self, spec: &ProcessSpec) -> Result<(Arc<Process>, Pumps), RequestError> {
        let container = self.container(&spec.container)?;
        let namespaces = self.namespaces(&container, &spec.id)?;
        let (plan, pumps, pty) = prepare(spec, &container, namespaces)?;
        let outputs = pumps.outputs.len();
        let mut table = lock(&self.processes);
        // RemoveContainer takes a container away under this lock: one
        // removed since it was looked up gets no process.
        if !Arc::ptr_eq(&self.container(&spec.container)?, &container) {
            let message = format!("container {} was removed", spec.container);
            return Err(RequestError::new(ErrorKind::NotFound, message));
        }
        let key = (spec.container.clone(), spec.id.clone());
        if table.by_name.contains_key(&key) {
            let message = format!(
                "process {} already exists in container {}",
                spec.id, spec.container
            );
            return Err(invalid(message));
        }
        let pid = spawn::spawn(&plan).map_err(|e| spawn_error(spec, e))?;
        // The agent's copies of the child's stdio must close, or the
        // output would never reach end of file.
        drop(plan);
        let process = Arc::new(Process {
            container: spec.container.clone(),
            id: spec.id.clone(),
            pid,
            pty,
            stdin: spec.stdin,
            stdout: spec.stdout,
            stderr: spec.stderr,
            tracker: Mutex::new(ExitTracker::new(outputs)),
        });
        table.by_name.insert(key, process.clone());
        table.by_pid.insert(pid, process.clone());
        log!(
            "started process {} of container {} as pid {pid}: {:?}",
            spec.id,
            spec.container,
            spec.args
        );
        Ok((process, pumps))
    }

    fn namespaces(&self, container: &Container, id: &str) -> Result<Namespaces, RequestError> {
        if id == INIT {
            let rootfs = sys::path_cstring(&container.rootfs())
                .map_err(|e| internal("bad rootfs path", &e))?;
            return Ok(Namespaces::New { rootfs });
        }
        let init = self.running(&container.id, INIT).map_err(|_| {
            let message = format!("container {} is not running", container.id);
            RequestError::new(ErrorKind::NotFound, message)
        })?;
        let open = |kind: &str| {
            File::open(format!("/proc/{}/ns/{kind}", init.pid)).map_err(|e| {
                let what = format!(
                    "cannot open the {kind} namespace of container {}",
                    container.id
                );
                internal(&what, &e)
            })
        };
        Ok(Namespaces::Join {
            pid_ns: open("pid")?,
            mnt_ns: open("mnt")?,
        })
    }
}

/// Why the process did not start, naming the limit the kernel refused.
fn spawn_error(spec: &ProcessSpec, error: SpawnError) -> RequestError {
    match error {
        SpawnError::Exec { errno } => procenv::exec_error(&spec.args[0], errno),
        SpawnError::Rlimit { index, source } => {
            let limit = spec.rlimits.get(index).map_or_else(
                || format!("resource limit {index}"),
                |l| format!("{} to soft {} hard {}", l.kind, l.soft, l.hard),
            );
            let message = format!(
                "cannot start process {}: cannot set {limit}: {source}",
                spec.id
            );
            RequestError::new(ErrorKind::InvalidRequest, message)
        }
        other => internal(&format!("cannot start process {}", spec.id), &other),
    }
}

fn spec_streams(spec: &ProcessSpec) -> Vec<StreamId> {
    let mut ids = vec![spec.stdout];
    ids.extend(spec.stderr);
    ids.extend(spec.stdin);
    ids
}

fn cstrings(
    list: impl IntoIterator<Item = String>,
    what: &str,
) -> Result<Vec<CString>, RequestError> {
    list.into_iter()
        .map(|s| sys::cstring(s).map_err(|_| invalid(format!("{what} contains a NUL byte"))))
        .collect()
}

/// Reads a file of the container's `/etc`; a missing one reads as empty.
fn read_etc(rootfs: &Path, name: &str) -> String {
    fs::read_to_string(rootfs.join("etc").join(name)).unwrap_or_default()
}

type Prepared = (SpawnPlan, Pumps, Option<Arc<File>>);

/// Everything but the system calls: user, environment, paths, stdio.
fn prepare(
    spec: &ProcessSpec,
    container: &Container,
    namespaces: Namespaces,
) -> Result<Prepared, RequestError> {
    let Some(name) = spec.args.first() else {
        return Err(invalid(format!("process {} has no command", spec.id)));
    };
    let rootfs = container.rootfs();
    let passwd = user::parse_passwd(&read_etc(&rootfs, "passwd"));
    let groups = user::parse_group(&read_etc(&rootfs, "group"));
    let mut user =
        user::resolve(&spec.user, &passwd, &groups).map_err(|e| invalid(e.to_string()))?;
    user::add_groups(&mut user, &spec.groups, &groups).map_err(|e| invalid(e.to_string()))?;
    let home = user.home.as_deref().unwrap_or("/");
    let env = procenv::with_defaults(&spec.env, &container.hostname, home, spec.terminal);
    let candidates = procenv::exec_candidates(name, &env);
    let cwd = match spec.cwd.as_str() {
        "" => "/".to_owned(),
        cwd if cwd.starts_with('/') => cwd.to_owned(),
        cwd => format!("/{cwd}"),
    };
    let rlimits = rlimit::resolve(&spec.rlimits).map_err(|e| invalid(e.to_string()))?;
    let stdio = open_stdio(spec).map_err(|e| internal("cannot set up stdio", &e))?;
    let plan = SpawnPlan {
        argv: cstrings(spec.args.clone(), "an argument")?,
        envp: cstrings(env, "the environment")?,
        candidates: cstrings(candidates, "the command")?,
        cwd_dirs: cstrings(procenv::dir_prefixes(&cwd), "the working directory")?,
        cwd: cstrings([cwd], "the working directory")?.remove(0),
        uid: user.uid,
        gid: user.gid,
        groups: user.additional_gids,
        rlimits,
        namespaces,
        stdio: stdio.child,
        terminal: spec.terminal,
    };
    Ok((plan, stdio.pumps, stdio.pty))
}

#[derive(Debug, thiserror::Error)]
enum StdioError {
    #[error(transparent)]
    Pty(#[from] pty::PtyError),
    #[error("cannot create a pipe or open /dev/null")]
    Io(#[from] io::Error),
}

/// The child's stdin, stdout and stderr, and the agent's ends of them.
struct Stdio {
    child: [File; 3],
    pumps: Pumps,
    pty: Option<Arc<File>>,
}

fn open_stdio(spec: &ProcessSpec) -> Result<Stdio, StdioError> {
    if spec.terminal {
        let pty = pty::open(spec.terminal_size)?;
        let master = Arc::new(pty.master);
        let output = master.try_clone()?;
        let stdio = [pty.slave.try_clone()?, pty.slave.try_clone()?, pty.slave];
        let pumps = Pumps {
            outputs: vec![(spec.stdout, output)],
            input: spec.stdin.map(|id| (id, Input::Pty(master.clone()))),
        };
        return Ok(Stdio {
            child: stdio,
            pumps,
            pty: Some(master),
        });
    }
    let null_read = || File::open("/dev/null");
    let null_write = || OpenOptions::new().write(true).open("/dev/null");
    let mut pumps = Pumps {
        outputs: Vec::new(),
        input: None,
    };
    let stdin = match spec.stdin {
        Some(id) => {
            let (read, write) = sys::pipe()?;
            pumps.input = Some((id, Input::Pipe(write)));
            read
        }
        None => null_read()?,
    };
    let (out_read, stdout) = sys::pipe()?;
    pumps.outputs.push((spec.stdout, out_read));
    let stderr = match spec.stderr {
        Some(id) => {
            let (read, write) = sys::pipe()?;
            pumps.outputs.push((id, read));
            write
        }
        None => null_write()?,
    };
    Ok(Stdio {
        child: [stdin, stdout, stderr],
        pumps,
        pty: None,
    })
}
