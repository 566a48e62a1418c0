//! Quantities worded as docker words them, for the server and the CLI alike.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Durations as docker words them (go-units' `HumanDuration`).
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    match seconds {
        0 => "Less than a second".into(),
        1..=59 => plural(seconds, "second"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => plural(minutes, "minute"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => plural(hours, "hour"),
        _ if hours < 24 * 7 * 2 => plural(hours / 24, "day"),
        _ if hours < 24 * 30 * 2 => plural(hours / 24 / 7, "week"),
        _ if hours < 24 * 365 * 2 => plural(hours / 24 / 30, "month"),
        _ => plural(hours / 24 / 365, "year"),
    }
}

/// A time as the API's `since` and `until` take it (Unix seconds), from
/// what docker's CLI accepts: Unix seconds, an RFC 3339 time, or a duration
/// back from `now` (`42m`). `None` when it is none of them.
pub fn api_timestamp(text: &str, now: SystemTime) -> Option<String> {
    let seconds = |at: SystemTime| {
        let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        format!(
            "{}.{:09}",
            since_epoch.as_secs(),
            since_epoch.subsec_nanos()
        )
    };
    if text.parse::<f64>().is_ok() {
        return Some(text.to_owned());
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Some(seconds(now.checked_sub(ago).unwrap_or(UNIX_EPOCH)));
    }
    humantime::parse_rfc3339_weak(text).ok().map(seconds)
}

/// Seconds since the epoch, as the Engine API's integer times are.
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(api_timestamp("1700000000", now).unwrap(), "1700000000");
        assert_eq!(api_timestamp("10m", now).unwrap(), "999400.000000000");
        assert_eq!(
            api_timestamp("1970-01-01T00:00:10Z", now).unwrap(),
            "10.000000000"
        );
        assert_eq!(api_timestamp("soon", now), None);
    }

    #[test]
    fn durations_read_like_dockers() {
        let s = Duration::from_secs;
        assert_eq!(human_duration(s(0)), "Less than a second");
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(59)), "59 seconds");
        assert_eq!(human_duration(s(90)), "About a minute");
        assert_eq!(human_duration(s(600)), "10 minutes");
        assert_eq!(human_duration(s(3700)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
    }
}
