//! The `X-Hyper-Date` timestamps: `YYYYMMDDTHHMMSSZ`, always UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A request time as the signature scheme writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperDate {
    stamp: String,
    since_epoch: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the date {0:?} is not of the form YYYYMMDDTHHMMSSZ")]
pub struct DateError(pub String);

impl HyperDate {
    /// The date of `time`, to the second.
    pub fn from_time(time: SystemTime) -> Self {
        let since_epoch = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let days = since_epoch / 86_400;
        let seconds = since_epoch % 86_400;
        let (year, month, day) = civil_from_days(days);
        let stamp = format!(
            "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        );
        Self { stamp, since_epoch }
    }

    pub fn parse(text: &str) -> Result<Self, DateError> {
        let error = || DateError(text.chars().take(40).collect());
        let b = text.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return Err(error());
        }
        // Bytes, not `str` slices: a multibyte character may straddle a field.
        let digits = |range: std::ops::Range<usize>| -> Result<u64, DateError> {
            let part = &b[range];
            if part.iter().all(u8::is_ascii_digit) {
                Ok(part
                    .iter()
                    .fold(0, |n, digit| n * 10 + u64::from(digit - b'0')))
            } else {
                Err(error())
            }
        };
        let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
        let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
        if year < 1970
            || !(1..=12).contains(&month)
            || !(1..=days_in_month(year, month)).contains(&day)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(error());
        }
        let days = days_from_civil(year, month, day);
        Ok(Self {
            stamp: text.to_owned(),
            since_epoch: days * 86_400 + hour * 3600 + minute * 60 + second,
        })
    }

    /// `YYYYMMDDTHHMMSSZ`.
    pub fn stamp(&self) -> &str {
        &self.stamp
    }

    /// `YYYYMMDD`: the day a credential scope names.
    pub fn day(&self) -> &str {
        &self.stamp[..8]
    }

    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.since_epoch)
    }
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let years = (1970..year).map(|y| if is_leap(y) { 366 } else { 365 });
    let months = (1..month).map(|m| days_in_month(year, m));
    years.sum::<u64>() + months.sum::<u64>() + day - 1
}

fn civil_from_days(mut days: u64) -> (u64, u64, u64) {
    let mut year = 1970;
    loop {
        let length = if is_leap(year) { 366 } else { 365 };
        if days < length {
            break;
        }
        days -= length;
        year += 1;
    }
    let mut month = 1;
    while days >= days_in_month(year, month) {
        days -= days_in_month(year, month);
        month += 1;
    }
    (year, month, days + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_round_trips_through_its_stamp() {
        for stamp in [
            "19700101T000000Z",
            "20000229T235959Z",
            "20261202T070209Z",
            "21001231T120000Z",
        ] {
            let date = HyperDate::parse(stamp).unwrap();
            assert_eq!(HyperDate::from_time(date.time()).stamp(), stamp);
        }
        assert_eq!(
            HyperDate::parse("20261202T070209Z").unwrap().time(),
            UNIX_EPOCH + Duration::from_secs(1_796_194_929)
        );
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "",
            "20261202070209Z",
            "20261302T070209Z",
            "20260230T070209Z",
            "20261202T250209Z",
            "2026120xT070209Z",
            "+0261202T070209Z",
            "20261202T070209",
            "20261202T0702099Z",
        ] {
            assert!(HyperDate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_date_with_multibyte_characters_is_refused_not_a_panic() {
        // 16 bytes with `T` and `Z` in place, but the digit fields would be
        // cut inside a character (found by fuzzing).
        for bad in [
            "202\u{e9}010T000000Z",
            "2026120\u{e9}T00000Z",
            "20261202T0\u{20ac}00Z",
        ] {
            assert_eq!(bad.len(), 16, "{bad}");
            assert!(HyperDate::parse(bad).is_err(), "{bad}");
        }
    }
}
