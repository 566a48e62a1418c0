//! The schedule of one run's probes: one at a time, each after the wait
//! [`Schedule::next_wait`] gives, each cut at its timeout, until the run
//! ends. Time is tokio's, so tests run it on a paused clock.

use std::future::Future;
use std::time::SystemTime;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{HealthStatus, ProbeResult, Schedule};

/// Runs probes in the container.
pub trait Prober: Send + 'static {
    /// Runs one probe to its end: its exit code and (bounded) output.
    fn probe(&mut self) -> impl Future<Output = (i64, String)> + Send;
    /// Kills the probe whose `probe` was given up at its timeout.
    fn kill(&mut self) -> impl Future<Output = ()> + Send;
    /// Whether the container is paused: no probe runs in a frozen VM, and
    /// its health stays as it was.
    fn paused(&self) -> bool {
        false
    }
}

enum Ended {
    Stopped,
    Done(i64, String),
    TimedOut,
}

/// Probes until `stop` is cancelled. `started` is when the run started,
/// `status` the health it starts from; `report` takes each result and
/// whether it came within the start period, and answers the health it
/// leads to.
pub async fn monitor<P: Prober>(
    schedule: Schedule,
    started: Instant,
    mut status: HealthStatus,
    mut prober: P,
    stop: CancellationToken,
    mut report: impl FnMut(ProbeResult, bool) -> HealthStatus + Send,
) {
    loop {
        let wait = schedule.next_wait(started.elapsed(), status);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if prober.paused() {
            continue;
        }
        let in_start_period = started.elapsed() < schedule.start_period;
        let start = SystemTime::now();
        let ended = tokio::select! {
            () = stop.cancelled() => Ended::Stopped,
            (code, output) = prober.probe() => Ended::Done(code, output),
            () = tokio::time::sleep(schedule.timeout) => Ended::TimedOut,
        };
        let (exit_code, output) = match ended {
            Ended::Stopped => return,
            Ended::Done(code, output) => (code, output),
            Ended::TimedOut => {
                // Killed before the next may start: probes never overlap.
                prober.kill().await;
                let timeout = humantime::format_duration(schedule.timeout);
                (-1, format!("Health check exceeded timeout ({timeout})"))
            }
        };
        if stop.is_cancelled() {
            return;
        }
        let result = ProbeResult {
            start,
            end: SystemTime::now(),
            exit_code,
            output,
        };
        status = report(result, in_start_period);
    }
}
