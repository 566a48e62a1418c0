//! Probes in the guest: each an exec of the container's, its output kept
//! to [`super::MAX_OUTPUT`] bytes however much it writes, and the glue that runs
//! a container's monitor beside its run and keeps the results in its state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hull_proto::Request;
use hull_vm::Hypervisor;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::debug;

use super::monitor::{monitor, Prober};
use super::{BoundedOutput, HealthStatus, Schedule};
use crate::agent::OutputStream;
use crate::container::exec::{exec_spec, NEXT_STREAM};
use crate::container::{Container, Containers, ExecConfig, Status, StreamIds};

/// How long the kill of a probe past its timeout may take.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a probe's output may trail its exit: a child it left behind
/// may hold its stdout open.
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// Names each probe's process in the guest.
static NEXT_PROBE: AtomicU64 = AtomicU64::new(1);

/// Runs probes as execs of `container`.
struct GuestProber {
    container: Arc<Container>,
    command: Vec<String>,
    /// The process of the last probe started.
    current: Option<String>,
}

impl Prober for GuestProber {
    fn paused(&self) -> bool {
        self.container.state().paused
    }

    async fn probe(&mut self) -> (i64, String) {
        let agent = match self.container.running_agent() {
            Ok(agent) => agent,
            Err(err) => return (-1, err.to_string()),
        };
        let id = format!("health-{}", NEXT_PROBE.fetch_add(1, Ordering::Relaxed));
        self.current = Some(id.clone());
        let streams = StreamIds {
            stdin: None,
            stdout: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            stderr: Some(NEXT_STREAM.fetch_add(1, Ordering::Relaxed)),
        };
        let config = ExecConfig {
            args: self.command.clone(),
            ..ExecConfig::default()
        };
        let spec = exec_spec(&self.container, &id, &config, streams);
        let exited = agent.watch_exit(&self.container.id, &id);
        let stdout = agent.open_output(streams.stdout);
        let stderr = streams.stderr.map(|s| agent.open_output(s));
        if let Err(err) = crate::run::start_process(&agent, spec).await {
            self.current = None;
            return (i64::from(err.exit_code()), err.to_string());
        }
        let mut output = BoundedOutput::default();
        let status = {
            let mut exited = std::pin::pin!(exited);
            let mut drained = std::pin::pin!(read_both(stdout, stderr, &mut output));
            let mut output_ended = false;
            let status = loop {
                tokio::select! {
                    status = &mut exited => break status,
                    () = &mut drained, if !output_ended => output_ended = true,
                }
            };
            if !output_ended {
                let _ = tokio::time::timeout(OUTPUT_DRAIN, drained).await;
            }
            status
        };
        self.current = None;
        let code = status.map_or(-1, |s| i64::from(s.code()));
        (code, output.text())
    }

    async fn kill(&mut self) {
        let Some(process) = self.current.take() else {
            return;
        };
        let Ok(agent) = self.container.running_agent() else {
            return;
        };
        let request = Request::Signal {
            container: self.container.id.clone(),
            process,
            signal: libc::SIGKILL,
        };
        let killed = agent.within("signal", KILL_GRACE, agent.request_done(&request));
        match killed.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) | Err(err) => {
                debug!(container = %self.container.id, error = %err, "cannot kill a health probe past its timeout");
            }
        }
    }
}

/// Reads a probe's stdout and stderr to their ends, keeping the first
/// [`super::MAX_OUTPUT`] bytes of them: the rest is read and dropped, so the
/// guest's credit keeps flowing and hulld holds no more than the bound.
async fn read_both(
    mut stdout: OutputStream,
    stderr: Option<OutputStream>,
    output: &mut BoundedOutput,
) {
    let mut stderr = stderr;
    let (mut out_done, mut err_done) = (false, stderr.is_none());
    while !(out_done && err_done) {
        let next_err = async {
            match stderr.as_mut() {
                Some(stream) if !err_done => stream.recv().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = stdout.recv(), if !out_done => match chunk {
                Some(chunk) => output.push(&chunk),
                None => out_done = true,
            },
            chunk = next_err => match chunk {
                Some(chunk) => output.push(&chunk),
                None => err_done = true,
            },
        }
    }
}

impl<H: Hypervisor> Containers<H> {
    /// Starts the health checks of a run that started (`fresh`) or was
    /// taken back after a restart of hulld, which keeps its health and
    /// resumes its schedule. Dropping the guard stops them. `None` for a
    /// container without a health check.
    pub(in crate::container) fn watch_health(
        self: &Arc<Self>,
        container: &Arc<Container>,
        fresh: bool,
    ) -> Option<DropGuard> {
        let schedule = Schedule::of(&container.config().healthcheck?)?;
        let mut status = HealthStatus::Starting;
        container.update(|s| {
            let health = s.health.get_or_insert_with(Default::default);
            if fresh {
                health.restart();
            }
            status = health.status;
        });
        let started_at = container.state().started_at.unwrap_or_else(SystemTime::now);
        let since_start = SystemTime::now()
            .duration_since(started_at)
            .unwrap_or_default();
        let started = Instant::now()
            .checked_sub(since_start)
            .unwrap_or_else(Instant::now);
        let stop = CancellationToken::new();
        let prober = GuestProber {
            container: container.clone(),
            command: schedule.command.clone(),
            current: None,
        };
        let retries = schedule.retries;
        let containers = self.clone();
        let watched = container.clone();
        let report = move |result, in_start_period| {
            let mut changed = None;
            let mut now = HealthStatus::Starting;
            watched.update(|s| {
                let health = s.health.get_or_insert_with(Default::default);
                // A result that comes in as the run ends is not kept.
                if s.status == Status::Running {
                    changed = health.record(result, in_start_period, retries);
                }
                now = health.status;
            });
            if let Some(status) = changed {
                let action = format!("health_status: {}", status.as_str());
                containers.emit(&watched, &action, &[]);
            }
            now
        };
        let task = monitor(schedule, started, status, prober, stop.clone(), report);
        tokio::spawn(task);
        Some(stop.drop_guard())
    }
}
