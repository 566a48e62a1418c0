//! A cron as its owner defines it, and the record of one of its runs: what
//! the API answers, the history keeps and the webhook receives.

use serde::{Deserialize, Serialize};

use crate::policy::{Concurrency, Notify};

/// Runs a cron's history keeps, as Hyper.sh did.
pub const HISTORY_LEN: usize = 100;
/// Lines of a run's output kept in its record.
pub const OUTPUT_LINES: usize = 100;
/// Bytes of a run's output kept in its record, whatever its lines' length.
pub const OUTPUT_BYTES: usize = 16 * 1024;
/// A cron's name with `-` and a Unix time (10 digits) after it is still a
/// container name of at most 63 characters.
pub const MAX_NAME_LEN: usize = 52;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("a cron's name is 1-{MAX_NAME_LEN} of a-z, A-Z, 0-9, '_', '.' and '-', starting with a letter or digit; {0:?} is not")]
    BadName(String),
}

/// Checks a cron's name: its runs' containers are named after it.
pub fn check_name(name: &str) -> Result<(), RecordError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && name.len() <= MAX_NAME_LEN {
        Ok(())
    } else {
        Err(RecordError::BadName(name.chars().take(80).collect()))
    }
}

/// The container of the run due at `scheduled`.
pub fn container_name(cron: &str, scheduled: i64) -> String {
    format!("{cron}-{scheduled}")
}

/// What `POST /crons/create` takes: the schedule and its policies beside
/// the container to run, in the shape `POST /containers/create` takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CronSpec {
    pub schedule: String,
    #[serde(default = "utc")]
    pub time_zone: String,
    #[serde(default)]
    pub concurrency_policy: Concurrency,
    /// Seconds after its time a run missed while hulld was down may still
    /// start; `None`: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    #[serde(default)]
    pub notify_policy: Notify,
    /// A `POST /containers/create` body.
    pub config: serde_json::Value,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Its process exited 0.
    Succeeded,
    /// Its process exited non-zero, or its container could not be made or started.
    Failed,
    /// It was due while hulld was down (or past its starting deadline).
    Missed,
    /// It was due while another ran and the policy is Forbid.
    Skipped,
    /// A later run stopped it (policy Replace).
    Replaced,
}

impl Status {
    /// Whether it counts in SuccessCount (true), ErrorCount (false) or neither.
    pub fn counts_as_success(self) -> Option<bool> {
        match self {
            Self::Succeeded => Some(true),
            Self::Failed | Self::Replaced => Some(false),
            Self::Missed | Self::Skipped => None,
        }
    }
}

/// One run in a cron's history. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Run {
    pub cron: String,
    pub container: String,
    pub scheduled: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<i64>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Run {
    /// A run that did not start at all.
    pub fn not_started(cron: &str, scheduled: i64, status: Status) -> Self {
        Self {
            cron: cron.to_owned(),
            container: container_name(cron, scheduled),
            scheduled,
            started: None,
            finished: None,
            status,
            exit_code: None,
            output: String::new(),
            error: None,
        }
    }
}

/// The last `OUTPUT_LINES` lines of `output`, at most `OUTPUT_BYTES` of them
/// (cut at a character boundary), invalid UTF-8 replaced.
pub fn output_tail(output: &[u8]) -> String {
    let start = output.len().saturating_sub(OUTPUT_BYTES * 4);
    let text = String::from_utf8_lossy(&output[start..]);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut lines: Vec<&str> = text.rsplit('\n').take(OUTPUT_LINES).collect();
    lines.reverse();
    let mut joined = lines.join("\n");
    if joined.len() > OUTPUT_BYTES {
        let mut cut = joined.len() - OUTPUT_BYTES;
        while !joined.is_char_boundary(cut) {
            cut += 1;
        }
        joined = joined.split_off(cut);
    }
    joined
}

/// A `--since` as Unix seconds: Unix seconds, RFC 3339, or a duration
/// before `now` (`90s`, `10m`, `2h`, `1d`).
pub fn parse_since(text: &str, now: i64) -> Option<i64> {
    if let Ok(unix) = text.parse::<i64>() {
        return Some(unix);
    }
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(time.timestamp());
    }
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let count: i64 = text[..text.len() - 1].parse().ok()?;
    now.checked_sub(count.checked_mul(unit)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_unix_times_rfc3339_and_durations() {
        assert_eq!(parse_since("1700000000", 0), Some(1_700_000_000));
        assert_eq!(parse_since("2024-01-01T00:00:00Z", 0), Some(1_704_067_200));
        assert_eq!(parse_since("10m", 1_000), Some(400));
        assert_eq!(parse_since("2h", 10_000), Some(2_800));
        assert_eq!(parse_since("soon", 0), None);
        assert_eq!(parse_since("", 0), None);
        assert_eq!(parse_since("99999999999999999d", 0), None);
    }

    #[test]
    fn names_fit_a_container_name_with_a_unix_time() {
        assert!(check_name("nightly").is_ok());
        assert!(check_name("a.b_c-1").is_ok());
        for bad in ["", "-x", "a/b", "a b", "ü", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            container_name("nightly", 1_700_000_000),
            "nightly-1700000000"
        );
        assert!(container_name(&"a".repeat(MAX_NAME_LEN), 9_999_999_999).len() <= 63);
    }

    #[test]
    fn output_keeps_the_last_hundred_lines() {
        let text: String = (0..250).map(|i| format!("line {i}\n")).collect();
        let tail = output_tail(text.as_bytes());
        assert_eq!(tail.lines().count(), OUTPUT_LINES);
        assert!(tail.starts_with("line 150\n"), "{tail}");
        assert!(tail.ends_with("line 249"), "{tail}");
    }

    #[test]
    fn output_is_bounded_in_bytes_and_survives_bad_utf8() {
        let long = vec![b'x'; 10 * OUTPUT_BYTES];
        assert_eq!(output_tail(&long).len(), OUTPUT_BYTES);
        let tail = output_tail(&[0xff, b'a', 0xc3]);
        assert!(tail.contains('a'));
        let wide = "é".repeat(OUTPUT_BYTES);
        assert!(output_tail(wide.as_bytes()).len() <= OUTPUT_BYTES);
    }

    #[test]
    fn specs_default_to_utc_allow_and_on_failure() {
        let spec: CronSpec =
            serde_json::from_str(r#"{"Schedule":"@hourly","Config":{"Image":"busybox"}}"#).unwrap();
        assert_eq!(spec.time_zone, "UTC");
        assert_eq!(spec.concurrency_policy, Concurrency::Allow);
        assert_eq!(spec.notify_policy, Notify::OnFailure);
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["ConcurrencyPolicy"], "Allow");
        assert_eq!(json["NotifyPolicy"], "on-failure");
    }
}

/// A cron as `inspect` and `ls` show it: its definition, state and counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CronView {
    pub name: String,
    /// The owning tenant, shown to the operator; none for the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(flatten)]
    pub spec: CronSpec,
    pub suspended: bool,
    pub success_count: u64,
    pub error_count: u64,
    /// When its last run started (RFC 3339), if it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// When it fires next (RFC 3339), unless suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<String>,
    /// Runs going on now.
    #[serde(default)]
    pub running: usize,
    pub created: String,
}

/// A Unix time as RFC 3339 in UTC, as the Engine API writes times.
pub fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}
