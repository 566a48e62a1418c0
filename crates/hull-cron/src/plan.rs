//! What is due when the scheduler wakes (or hulld starts again): the fire
//! times it slept through, and whether the latest of them still runs.
//!
//! As Kubernetes' CronJob controller does: of the times missed since the
//! last one handled, only the latest may start, and only within the
//! starting deadline; the others are recorded as missed.

use crate::schedule::Schedule;

/// Missed times recorded at once, at most: the history keeps no more.
pub const MAX_MISSED: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// Fire times that will not run, oldest first (the latest `MAX_MISSED`).
    pub missed: Vec<i64>,
    /// The fire time to run now, if any.
    pub run: Option<i64>,
    /// The next fire time after `now`.
    pub next: Option<i64>,
}

/// The fire times in `[pending, now]`: `pending` is the first time not yet
/// handled. `deadline` is the starting deadline in seconds (`None`: none).
pub fn due(schedule: &Schedule, pending: i64, now: i64, deadline: Option<u64>) -> Due {
    let next = schedule.next_after(now);
    let Some(latest) = schedule.latest_at(now).filter(|t| *t >= pending) else {
        return Due {
            next: next.map(|n| n.max(pending)),
            ..Due::default()
        };
    };
    let mut missed = Vec::new();
    let mut cursor = latest;
    while missed.len() < MAX_MISSED {
        match schedule.previous_before(cursor) {
            Some(earlier) if earlier >= pending => {
                missed.push(earlier);
                cursor = earlier;
            }
            _ => break,
        }
    }
    missed.reverse();
    let late = u64::try_from(now - latest).unwrap_or(0);
    let run = match deadline {
        Some(limit) if late > limit => {
            missed.push(latest);
            if missed.len() > MAX_MISSED {
                missed.remove(0);
            }
            None
        }
        _ => Some(latest),
    };
    Due { missed, run, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_second() -> Schedule {
        Schedule::parse("* * * * * *", "UTC").unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_pending_time() {
        let due = due(&every_second(), 1_000, 999, None);
        assert_eq!(due.run, None);
        assert!(due.missed.is_empty());
        assert_eq!(due.next, Some(1_000));
    }

    #[test]
    fn the_pending_time_itself_runs() {
        let due = due(&every_second(), 1_000, 1_000, None);
        assert_eq!(due.run, Some(1_000));
        assert!(due.missed.is_empty());
        assert_eq!(due.next, Some(1_001));
    }

    #[test]
    fn times_slept_through_are_missed_and_the_latest_runs() {
        let due = due(&every_second(), 1_000, 1_004, None);
        assert_eq!(due.missed, vec![1_000, 1_001, 1_002, 1_003]);
        assert_eq!(due.run, Some(1_004));
        assert_eq!(due.next, Some(1_005));
    }

    #[test]
    fn the_latest_past_its_deadline_is_missed_too() {
        let hourly = Schedule::parse("@hourly", "UTC").unwrap();
        let due = due(&hourly, 3_600, 3_600 * 3 + 120, Some(60));
        assert_eq!(due.missed, vec![3_600, 7_200, 10_800]);
        assert_eq!(due.run, None);
        assert_eq!(due.next, Some(14_400));
        let within = super::due(&hourly, 3_600, 3_600 * 3 + 30, Some(60));
        assert_eq!(within.run, Some(10_800));
    }

    #[test]
    fn a_long_outage_records_at_most_the_history_s_length() {
        let due = due(&every_second(), 0, 100_000, None);
        assert_eq!(due.missed.len(), MAX_MISSED);
        assert_eq!(due.missed.last(), Some(&99_999));
        assert_eq!(due.run, Some(100_000));
    }
}
