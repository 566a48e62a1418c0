//! What a cron does when a run is due while the last is still running, and
//! when its owner's webhook hears of a run.

use serde::{Deserialize, Serialize};

use crate::record::Status;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown concurrency policy {0:?}: use allow, forbid or replace")]
    Concurrency(String),
    #[error("unknown notification policy {0:?}: use on-failure, on-success or all")]
    Notify(String),
}

/// Kubernetes CronJob's `concurrencyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Concurrency {
    /// Runs may overlap.
    #[default]
    Allow,
    /// A run due while one is running is skipped.
    Forbid,
    /// A run due while one is running stops it and takes its place.
    Replace,
}

impl std::str::FromStr for Concurrency {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, PolicyError> {
        match text.to_ascii_lowercase().as_str() {
            "allow" => Ok(Self::Allow),
            "forbid" => Ok(Self::Forbid),
            "replace" => Ok(Self::Replace),
            _ => Err(PolicyError::Concurrency(text.chars().take(32).collect())),
        }
    }
}

/// Which finished runs are posted to the notify URL (Hyper.sh's `--mail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Notify {
    #[default]
    #[serde(rename = "on-failure")]
    OnFailure,
    #[serde(rename = "on-success")]
    OnSuccess,
    #[serde(rename = "all")]
    All,
}

impl Notify {
    /// Whether a run that ended as `status` is posted.
    pub fn wants(self, status: Status) -> bool {
        match status {
            Status::Succeeded => matches!(self, Self::OnSuccess | Self::All),
            Status::Failed | Status::Missed | Status::Replaced => {
                matches!(self, Self::OnFailure | Self::All)
            }
            Status::Skipped => matches!(self, Self::All),
        }
    }
}

impl std::str::FromStr for Notify {
    type Err = PolicyError;

    fn from_str(text: &str) -> Result<Self, PolicyError> {
        match text.to_ascii_lowercase().as_str() {
            "on-failure" => Ok(Self::OnFailure),
            "on-success" => Ok(Self::OnSuccess),
            "all" => Ok(Self::All),
            _ => Err(PolicyError::Notify(text.chars().take(32).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_in_any_case_and_refuse_the_rest() {
        assert_eq!("Forbid".parse(), Ok(Concurrency::Forbid));
        assert_eq!("replace".parse(), Ok(Concurrency::Replace));
        assert!("sometimes".parse::<Concurrency>().is_err());
        assert_eq!("ALL".parse(), Ok(Notify::All));
        assert!("never".parse::<Notify>().is_err());
    }

    #[test]
    fn notifications_follow_the_policy() {
        assert!(Notify::OnFailure.wants(Status::Failed));
        assert!(!Notify::OnFailure.wants(Status::Succeeded));
        assert!(Notify::OnSuccess.wants(Status::Succeeded));
        assert!(!Notify::OnSuccess.wants(Status::Missed));
        assert!(Notify::All.wants(Status::Skipped));
    }
}
