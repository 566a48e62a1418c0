//! Cron schedules: five fields (or six, with seconds first), names,
//! steps, ranges, lists and `@hourly`-style macros, in a time zone.
//!
//! `croner` parses and evaluates; this module checks each field on its own
//! first, so that an error names the field that is wrong, and refuses what
//! croner would read differently from cron (a weekday name in the month
//! field, a year field).

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The longest schedule text read: a peer's string is bounded before parsing.
pub const MAX_SCHEDULE_LEN: usize = 256;

const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIELDS: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the schedule is empty: give five fields (minute hour day-of-month month day-of-week), six with seconds first, or a macro such as @hourly")]
    Empty,
    #[error("the schedule is {0} bytes long; at most {MAX_SCHEDULE_LEN} are read")]
    TooLong(usize),
    #[error("the schedule has {0} fields: give five (minute hour day-of-month month day-of-week) or six with seconds first")]
    FieldCount(usize),
    #[error("unknown macro {0:?}: use one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly")]
    UnknownMacro(String),
    #[error("the {field} field {value:?} is invalid: {reason}")]
    Field {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("unknown time zone {0:?}: use an IANA name such as UTC or Europe/Paris")]
    TimeZone(String),
    #[error("the schedule {0:?} never fires")]
    Never(String),
}

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    zone: Tz,
    cron: Cron,
}

impl Schedule {
    /// Parses `text` in the IANA time zone `zone`.
    pub fn parse(text: &str, zone: &str) -> Result<Self, ScheduleError> {
        if text.len() > MAX_SCHEDULE_LEN {
            return Err(ScheduleError::TooLong(text.len()));
        }
        let zone: Tz = zone
            .parse()
            .map_err(|_| ScheduleError::TimeZone(zone.chars().take(64).collect()))?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if trimmed.starts_with('@') {
            let lower = trimmed.to_ascii_lowercase();
            if !MACROS.contains(&lower.as_str()) {
                return Err(ScheduleError::UnknownMacro(trimmed.to_owned()));
            }
        } else {
            check_fields(trimmed)?;
        }
        let cron = parser().parse(trimmed).map_err(|e| ScheduleError::Field {
            field: "schedule",
            value: trimmed.to_owned(),
            reason: e.to_string(),
        })?;
        let schedule = Self {
            text: trimmed.to_owned(),
            zone,
            cron,
        };
        // "0 0 30 2 *" parses but no day matches it.
        if schedule.next_after(0).is_none() {
            return Err(ScheduleError::Never(schedule.text));
        }
        Ok(schedule)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn zone(&self) -> &str {
        self.zone.name()
    }

    /// The first fire time strictly after `after` (Unix seconds).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let from = self.at(after)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp())
    }

    /// The last fire time at or before `at` (Unix seconds).
    pub fn latest_at(&self, at: i64) -> Option<i64> {
        let from = self.at(at)?;
        let previous = self.cron.find_previous_occurrence(&from, true).ok()?;
        Some(previous.timestamp())
    }

    /// The last fire time strictly before `before` (Unix seconds).
    pub fn previous_before(&self, before: i64) -> Option<i64> {
        let from = self.at(before)?;
        let previous = self.cron.find_previous_occurrence(&from, false).ok()?;
        Some(previous.timestamp())
    }

    fn at(&self, unix: i64) -> Option<DateTime<Tz>> {
        let utc: DateTime<Utc> = DateTime::from_timestamp(unix, 0)?;
        Some(self.zone.from_utc_datetime(&utc.naive_utc()))
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .sloppy_ranges(true)
        .build()
}

/// Checks each field alone, so that an error names it.
fn check_fields(text: &str) -> Result<(), ScheduleError> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    let names: &[&'static str] = match fields.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS,
        n => return Err(ScheduleError::FieldCount(n)),
    };
    for (index, (&value, &field)) in fields.iter().zip(names).enumerate() {
        let invalid = |reason: String| ScheduleError::Field {
            field,
            value: value.to_owned(),
            reason,
        };
        check_names(field, value).map_err(invalid)?;
        // The field in its place, every other one a wildcard.
        let position = index + 6 - fields.len();
        let mut alone = ["*"; 6];
        alone[position] = value;
        CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .sloppy_ranges(true)
            .build()
            .parse(&alone.join(" "))
            .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// croner replaces names across the whole pattern (`MON` would be month
/// 1 in the month field): only a field's own names are let through.
fn check_names(field: &str, value: &str) -> Result<(), String> {
    let allowed: &[&str] = match field {
        "month" => &MONTHS,
        "day-of-week" => &WEEKDAYS,
        _ => &[],
    };
    let extra: &[&str] = match field {
        "day-of-month" => &["L", "W", "LW"],
        "day-of-week" => &["L"],
        _ => &[],
    };
    for word in value
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        let upper = word.to_ascii_uppercase();
        if !allowed.contains(&upper.as_str()) && !extra.contains(&upper.as_str()) {
            let hint = match field {
                "month" => "month names are JAN-DEC",
                "day-of-week" => "weekday names are SUN-SAT",
                _ => "this field takes numbers",
            };
            return Err(format!("{word:?} is not a name it knows ({hint})"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
