//! Health checks as docker runs them: the image's `HEALTHCHECK`, or the
//! container's override, run in the container now and then; its results
//! make the container `starting`, `healthy` or `unhealthy`, with the last
//! few kept for inspect. This module holds the rules (settings, defaults,
//! the state each result leads to); [`monitor`] the schedule, and
//! [`probe`] the probes in the guest.

pub(super) mod monitor;
mod probe;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

pub use hull_image::spec::HealthConfig;
use serde::{Deserialize, Serialize};

/// Docker's defaults for a zero duration or retry count.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the log, as docker keeps them.
pub const LOG_ENTRIES: usize = 5;
/// Bytes of a probe's output kept, as docker keeps them.
pub const MAX_OUTPUT: usize = 4096;
/// The shortest duration docker takes for an interval, timeout or period.
const MIN_DURATION: i64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("{0} in Healthcheck cannot be less than 1ms")]
    TooShort(&'static str),
    #[error("{0} in Healthcheck cannot be negative")]
    Negative(&'static str),
    #[error("invalid Healthcheck test {0:?}: give [\"CMD\", args…], [\"CMD-SHELL\", command] or [\"NONE\"]")]
    Test(String),
}

/// Checks a container's health settings as docker's create does.
pub fn validate(config: &HealthConfig) -> Result<(), HealthError> {
    let durations = [
        ("Interval", config.interval),
        ("Timeout", config.timeout),
        ("StartPeriod", config.start_period),
        ("StartInterval", config.start_interval),
    ];
    for (name, nanos) in durations {
        if nanos != 0 && nanos < MIN_DURATION {
            return Err(HealthError::TooShort(name));
        }
    }
    if config.retries < 0 {
        return Err(HealthError::Negative("Retries"));
    }
    match config.test.first().map(String::as_str) {
        None | Some("NONE") => Ok(()),
        Some("CMD") | Some("CMD-SHELL") if config.test.len() > 1 => Ok(()),
        _ => Err(HealthError::Test(
            config.test.join(" ").chars().take(128).collect(),
        )),
    }
}

/// The container's settings over the image's, field by field, as docker
/// merges them at create.
pub fn merge(
    container: Option<HealthConfig>,
    image: Option<&HealthConfig>,
) -> Option<HealthConfig> {
    let Some(image) = image else {
        return container;
    };
    let mut merged = container.unwrap_or_default();
    if merged.test.is_empty() {
        merged.test.clone_from(&image.test);
    }
    let fields = [
        (&mut merged.interval, image.interval),
        (&mut merged.timeout, image.timeout),
        (&mut merged.start_period, image.start_period),
        (&mut merged.start_interval, image.start_interval),
        (&mut merged.retries, image.retries),
    ];
    for (value, from_image) in fields {
        if *value == 0 {
            *value = from_image;
        }
    }
    Some(merged)
}

/// How a container's probes run: its settings with docker's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// What runs in the container.
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: u32,
}

impl Schedule {
    /// `None` when the container has no health check (none set, or `NONE`).
    pub fn of(config: &HealthConfig) -> Option<Self> {
        let command = match config.test.split_first() {
            Some((kind, args)) if kind == "CMD" && !args.is_empty() => args.to_vec(),
            Some((kind, args)) if kind == "CMD-SHELL" && !args.is_empty() => {
                let shell = ["/bin/sh".to_owned(), "-c".to_owned()];
                shell.into_iter().chain(args.iter().cloned()).collect()
            }
            _ => return None,
        };
        let duration = |nanos: i64, default: Duration| match u64::try_from(nanos) {
            Ok(nanos) if nanos > 0 => Duration::from_nanos(nanos),
            _ => default,
        };
        Some(Self {
            command,
            interval: duration(config.interval, DEFAULT_INTERVAL),
            timeout: duration(config.timeout, DEFAULT_TIMEOUT),
            start_period: duration(config.start_period, Duration::ZERO),
            start_interval: duration(config.start_interval, DEFAULT_START_INTERVAL),
            retries: u32::try_from(config.retries)
                .ok()
                .filter(|r| *r > 0)
                .unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// The wait before the next probe, `since_start` after the container
    /// started: the start interval while a starting container is within
    /// its start period.
    pub fn next_wait(&self, since_start: Duration, status: HealthStatus) -> Duration {
        if since_start < self.start_period && status == HealthStatus::Starting {
            self.start_interval
        } else {
            self.interval
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }
}

/// One probe's result, as docker's health log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub start: SystemTime,
    pub end: SystemTime,
    /// 0 healthy; anything else (-1 for a probe past its timeout) unhealthy.
    pub exit_code: i64,
    /// At most [`MAX_OUTPUT`] bytes of the probe's stdout and stderr.
    pub output: String,
}

/// A container's health, kept in its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last [`LOG_ENTRIES`] results, oldest first.
    pub log: VecDeque<ProbeResult>,
}

impl Health {
    /// A (re)started container: starting again, its log kept.
    pub fn restart(&mut self) {
        self.status = HealthStatus::Starting;
        self.failing_streak = 0;
    }

    /// Takes a probe's result; returns the new status if it changed. A
    /// failure while a container that was never healthy is within its
    /// start period does not count.
    pub fn record(
        &mut self,
        result: ProbeResult,
        in_start_period: bool,
        retries: u32,
    ) -> Option<HealthStatus> {
        let before = self.status;
        let passed = result.exit_code == 0;
        if self.log.len() >= LOG_ENTRIES {
            self.log.drain(..=self.log.len() - LOG_ENTRIES);
        }
        self.log.push_back(result);
        if passed {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !(self.status == HealthStatus::Starting && in_start_period) {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if self.failing_streak >= retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// Keeps the first [`MAX_OUTPUT`] bytes of a probe's output, whatever
/// more it writes.
#[derive(Debug, Default)]
pub struct BoundedOutput(Vec<u8>);

impl BoundedOutput {
    pub fn push(&mut self, bytes: &[u8]) {
        let room = MAX_OUTPUT.saturating_sub(self.0.len());
        self.0.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The output as text, still within the bound: bytes that are not
    /// UTF-8 become U+FFFD, which may take more room than they did.
    pub fn text(&self) -> String {
        let mut text = String::from_utf8_lossy(&self.0).into_owned();
        let mut end = text.len().min(MAX_OUTPUT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text
    }
}

#[cfg(test)]
mod tests;
