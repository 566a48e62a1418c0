//! Exec instances: more processes in a running container, each created
//! first and started later, with its exit code kept for inspection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hull_proto::{ProcessSpec, Request};
use hull_vm::Hypervisor;
use tokio::sync::mpsc;

use super::attach::OutputChunk;
use super::logs::LogStream;
use super::{lock, Container, ContainerError, Containers, StreamIds};
use crate::run::{new_container_id, RunError};

/// Stream ids of exec processes and archives; those below are the main
/// process's.
pub(super) static NEXT_STREAM: AtomicU32 = AtomicU32::new(16);

/// What `docker exec` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecConfig {
    pub args: Vec<String>,
    /// `KEY=VALUE` entries added to the container's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// The keys that detach an attached client, in docker's notation;
    /// empty for docker's default.
    pub detach_keys: String,
}

/// An exec instance as inspect shows it.
#[derive(Debug, Clone)]
pub struct ExecInfo {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub running: bool,
    /// `None` until it has run.
    pub exit_code: Option<i32>,
    pub pid: i32,
    pub started: bool,
}

pub(crate) struct Exec {
    container: Arc<Container>,
    info: Mutex<ExecInfo>,
}

/// The client's side of an exec: its stdin (if attached) and where its
/// output goes.
pub struct ExecIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub output: mpsc::Sender<OutputChunk>,
}

impl<H: Hypervisor> Containers<H> {
    /// Creates an exec instance in a running container.
    pub fn create_exec(
        &self,
        container: &Arc<Container>,
        config: ExecConfig,
    ) -> Result<String, ContainerError> {
        if !container.state().running() {
            return Err(ContainerError::NotRunning(container.id.clone()));
        }
        container.check_not_paused()?;
        let id = new_container_id();
        let exec = Exec {
            container: container.clone(),
            info: Mutex::new(ExecInfo {
                id: id.clone(),
                container_id: container.id.clone(),
                config,
                running: false,
                exit_code: None,
                pid: 0,
                started: false,
            }),
        };
        let command = lock(&exec.info).config.args.join(" ");
        lock(&container.execs).insert(id.clone(), Arc::new(exec));
        self.emit(
            container,
            &format!("exec_create: {command}"),
            &[("execID", id.clone())],
        );
        Ok(id)
    }

    fn exec(&self, id: &str) -> Result<Arc<Exec>, ContainerError> {
        lock(&self.table)
            .values()
            .find_map(|c| lock(&c.execs).get(id).cloned())
            .ok_or_else(|| ContainerError::ExecNotFound(id.to_owned()))
    }

    pub fn exec_info(&self, id: &str) -> Result<ExecInfo, ContainerError> {
        Ok(lock(&self.exec(id)?.info).clone())
    }

    /// Runs an exec instance to its end; returns its exit code, which
    /// inspect reports from then on.
    pub async fn start_exec(&self, id: &str, io: ExecIo) -> Result<i32, ContainerError> {
        let exec = self.exec(id)?;
        let config = {
            let mut info = lock(&exec.info);
            if info.started {
                return Err(ContainerError::ExecAlreadyRan(id.to_owned()));
            }
            info.started = true;
            info.running = true;
            info.config.clone()
        };
        let command = config.args.join(" ");
        self.emit(
            &exec.container,
            &format!("exec_start: {command}"),
            &[("execID", id.to_owned())],
        );
        let result = run_exec(&exec, id, config, io).await;
        // An exec that cannot start is docker's 126, a missing command too
        // (a run's is 127).
        let code = *result.as_ref().unwrap_or(&126);
        {
            let mut info = lock(&exec.info);
            info.running = false;
            info.exit_code = Some(code);
        }
        self.emit(
            &exec.container,
            "exec_die",
            &[("execID", id.to_owned()), ("exitCode", code.to_string())],
        );
        result
    }

    /// Resizes an exec instance's terminal.
    pub async fn resize_exec(&self, id: &str, rows: u16, cols: u16) -> Result<(), ContainerError> {
        let exec = self.exec(id)?;
        let agent = exec.container.running_agent()?;
        let request = Request::ResizeTerminal {
            container: exec.container.id.clone(),
            process: id.to_owned(),
            rows,
            cols,
        };
        agent.request_done(&request).await.map_err(Into::into)
    }
}

/// The process of an exec (or a health probe) in `container`: the
/// container's environment, directory, user and limits, as `config`
/// changes them.
pub(super) fn exec_spec(
    container: &Container,
    id: &str,
    config: &ExecConfig,
    streams: StreamIds,
) -> ProcessSpec {
    let base = container.config().process;
    let mut env = super::links::merge_env(container.state().link_env, &base.env);
    for entry in &config.env {
        let key = entry.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
    ProcessSpec {
        container: container.id.clone(),
        id: id.to_owned(),
        args: config.args.clone(),
        env,
        cwd: given(&config.workdir).unwrap_or(base.cwd),
        user: given(&config.user).unwrap_or(base.user),
        terminal: config.tty,
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
        // As docker's: an exec'd process has the container's limits.
        rlimits: base.rlimits,
        groups: base.groups,
        terminal_size: None,
    }
}

async fn run_exec(
    exec: &Exec,
    id: &str,
    config: ExecConfig,
    io: ExecIo,
) -> Result<i32, ContainerError> {
    let container = &exec.container;
    let agent = container.running_agent()?;
    let stream = |wanted: bool| wanted.then(|| NEXT_STREAM.fetch_add(1, Ordering::Relaxed));
    let stdin = stream(config.attach_stdin && io.stdin.is_some());
    let stdout = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
    let stderr = stream(!config.tty);
    let streams = StreamIds {
        stdin,
        stdout,
        stderr,
    };
    let spec = exec_spec(container, id, &config, streams);
    let exited = agent.watch_exit(&container.id, id);
    let mut outputs = vec![(
        LogStream::Stdout,
        agent.open_output(stdout),
        config.attach_stdout,
    )];
    if let Some(stderr) = stderr {
        outputs.push((
            LogStream::Stderr,
            agent.open_output(stderr),
            config.attach_stderr,
        ));
    }
    let input = stdin.map(|stream| agent.open_input(stream));
    let pid = crate::run::start_process(&agent, spec)
        .await
        .map_err(ContainerError::Run)?;
    lock(&exec.info).pid = pid;

    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(stream, mut output, wanted)| {
            let to = io.output.clone();
            tokio::spawn(async move {
                while let Some(chunk) = output.recv().await {
                    if wanted {
                        // A departed client must not stall the process: keep draining.
                        let _ = to.send((stream, chunk)).await;
                    }
                }
            })
        })
        .collect();
    drop(io.output);
    let stdin_pump = match (input, io.stdin) {
        (Some(input), Some(mut from)) => Some(tokio::spawn(async move {
            while let Some(chunk) = from.recv().await {
                if input.write(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = input.close().await;
        })),
        _ => None,
    };
    let status = exited
        .await
        .map_err(|_| ContainerError::Run(RunError::Agent(agent.lost())))?;
    for pump in pumps {
        let _ = pump.await;
    }
    if let Some(pump) = stdin_pump {
        pump.abort();
    }
    Ok(status.code())
}
