//! `--health-*` and `--no-healthcheck` of `hull run` and `hull create`, sent
//! as docker's CLI sends them: a `Healthcheck` over the image's.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use hull_api::types::container::HealthConfig;

#[derive(Debug, Default, Args)]
pub struct HealthArgs {
    /// The command that tells the container's health (run by /bin/sh -c).
    #[arg(long = "health-cmd", value_name = "COMMAND")]
    pub(crate) cmd: Option<String>,
    /// The time between checks (ms|s|m|h); 30s when not given.
    #[arg(long = "health-interval", value_name = "DURATION", value_parser = duration)]
    pub(crate) interval: Option<Duration>,
    /// The longest one check may run; 30s when not given.
    #[arg(long = "health-timeout", value_name = "DURATION", value_parser = duration)]
    pub(crate) timeout: Option<Duration>,
    /// Failures in a row that make the container unhealthy; 3 when not given.
    #[arg(long = "health-retries", value_name = "N")]
    pub(crate) retries: Option<i64>,
    /// The time the container has to start before failures count.
    #[arg(long = "health-start-period", value_name = "DURATION", value_parser = duration)]
    pub(crate) start_period: Option<Duration>,
    /// The time between checks during the start period; 5s when not given.
    #[arg(long = "health-start-interval", value_name = "DURATION", value_parser = duration)]
    pub(crate) start_interval: Option<Duration>,
    /// Disable the image's health check.
    #[arg(long = "no-healthcheck")]
    pub(crate) none: bool,
}

impl HealthArgs {
    /// Whether any flag was given.
    pub(crate) fn given(&self) -> bool {
        self.none || self.cmd.is_some() || self.tuned()
    }

    fn tuned(&self) -> bool {
        self.interval.is_some()
            || self.timeout.is_some()
            || self.retries.is_some()
            || self.start_period.is_some()
            || self.start_interval.is_some()
    }

    /// The `Healthcheck` of the create request; `None` keeps the image's.
    pub(crate) fn healthcheck(&self) -> Result<Option<HealthConfig>> {
        let tuned = self.tuned();
        if self.none {
            if self.cmd.is_some() || tuned {
                bail!("--no-healthcheck conflicts with --health-* options");
            }
            return Ok(Some(HealthConfig {
                test: vec!["NONE".into()],
                ..HealthConfig::default()
            }));
        }
        if self.cmd.is_none() && !tuned {
            return Ok(None);
        }
        let nanos = |d: Option<Duration>| -> Result<i64> {
            i64::try_from(d.unwrap_or_default().as_nanos()).context("the duration is too long")
        };
        if self.retries.is_some_and(|r| r < 0) {
            bail!("--health-retries cannot be negative");
        }
        Ok(Some(HealthConfig {
            test: self
                .cmd
                .iter()
                .flat_map(|cmd| ["CMD-SHELL".to_owned(), cmd.clone()])
                .collect(),
            interval: nanos(self.interval)?,
            timeout: nanos(self.timeout)?,
            start_period: nanos(self.start_period)?,
            start_interval: nanos(self.start_interval)?,
            retries: self.retries.unwrap_or(0),
        }))
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_dockers_healthcheck() {
        let args = HealthArgs {
            cmd: Some("test -f /tmp/ok".into()),
            interval: Some(Duration::from_secs(1)),
            retries: Some(2),
            ..HealthArgs::default()
        };
        let config = args.healthcheck().unwrap().unwrap();
        assert_eq!(config.test, ["CMD-SHELL", "test -f /tmp/ok"]);
        assert_eq!(config.interval, 1_000_000_000);
        assert_eq!(config.timeout, 0, "the image's, or docker's default");
        assert_eq!(config.retries, 2);
        let none = HealthArgs {
            none: true,
            ..HealthArgs::default()
        };
        assert_eq!(none.healthcheck().unwrap().unwrap().test, ["NONE"]);
        assert!(HealthArgs::default().healthcheck().unwrap().is_none());
        let both = HealthArgs {
            none: true,
            cmd: Some("true".into()),
            ..HealthArgs::default()
        };
        assert!(both.healthcheck().is_err());
        assert!(duration("1m30s").is_ok() && duration("soon").is_err());
    }
}
