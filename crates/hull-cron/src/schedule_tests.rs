use proptest::prelude::*;

use super::*;

/// 2024-01-01T00:00:00Z, a Monday.
const NEW_YEAR: i64 = 1_704_067_200;

fn field_of(text: &str) -> Option<&'static str> {
    match Schedule::parse(text, "UTC") {
        Err(ScheduleError::Field { field, .. }) => Some(field),
        _ => None,
    }
}

#[test]
fn five_fields_fire_on_the_minute() {
    let daily = Schedule::parse("0 3 * * *", "UTC").unwrap();
    assert_eq!(daily.next_after(NEW_YEAR), Some(NEW_YEAR + 3 * 3600));
    let every = Schedule::parse("*/15 * * * *", "UTC").unwrap();
    assert_eq!(every.next_after(NEW_YEAR), Some(NEW_YEAR + 15 * 60));
}

#[test]
fn a_leading_seconds_field_fires_on_the_second() {
    let schedule = Schedule::parse("*/2 * * * * *", "UTC").unwrap();
    assert_eq!(schedule.next_after(NEW_YEAR), Some(NEW_YEAR + 2));
    assert_eq!(schedule.next_after(NEW_YEAR + 1), Some(NEW_YEAR + 2));
}

#[test]
fn names_ranges_lists_and_macros() {
    // The first Friday of February (the 2nd) at 09:30.
    let schedule = Schedule::parse("30 9 * FEB FRI", "UTC").unwrap();
    assert_eq!(schedule.next_after(NEW_YEAR), Some(1_706_866_200));
    let list = Schedule::parse("0 8-10,12 * * MON-FRI", "UTC").unwrap();
    assert_eq!(list.next_after(NEW_YEAR), Some(NEW_YEAR + 8 * 3600));
    let hourly = Schedule::parse("@hourly", "UTC").unwrap();
    assert_eq!(hourly.next_after(NEW_YEAR), Some(NEW_YEAR + 3600));
    assert!(Schedule::parse("@DAILY", "UTC").is_ok());
}

#[test]
fn time_zones_shift_the_fire_time() {
    let paris = Schedule::parse("0 3 * * *", "Europe/Paris").unwrap();
    // 03:00 in Paris in winter is 02:00 UTC.
    assert_eq!(paris.next_after(NEW_YEAR), Some(NEW_YEAR + 2 * 3600));
    assert_eq!(paris.zone(), "Europe/Paris");
    assert!(matches!(
        Schedule::parse("0 3 * * *", "Mars/Olympus"),
        Err(ScheduleError::TimeZone(_))
    ));
}

#[test]
fn errors_name_the_bad_field() {
    assert_eq!(field_of("61 * * * *"), Some("minute"));
    assert_eq!(field_of("* 24 * * *"), Some("hour"));
    assert_eq!(field_of("* * 0 * *"), Some("day-of-month"));
    assert_eq!(field_of("* * * 13 *"), Some("month"));
    assert_eq!(field_of("* * * * 9"), Some("day-of-week"));
    assert_eq!(field_of("70 * * * * *"), Some("second"));
    assert_eq!(field_of("* * * * * 9"), Some("day-of-week"));
    assert_eq!(field_of("*/0 * * * *"), Some("minute"));
    assert_eq!(field_of("x * * * *"), Some("minute"));
    // A weekday's name in the month field is not month 1.
    assert_eq!(field_of("0 0 * MON *"), Some("month"));
    assert_eq!(field_of("0 0 * * JAN"), Some("day-of-week"));
    let message = Schedule::parse("0 25 * * *", "UTC")
        .unwrap_err()
        .to_string();
    assert!(message.contains("hour field \"25\""), "{message}");
}

#[test]
fn malformed_schedules_are_refused() {
    assert_eq!(
        Schedule::parse("* * *", "UTC").unwrap_err(),
        ScheduleError::FieldCount(3)
    );
    assert_eq!(
        Schedule::parse("* * * * * * *", "UTC").unwrap_err(),
        ScheduleError::FieldCount(7)
    );
    assert_eq!(
        Schedule::parse("  ", "UTC").unwrap_err(),
        ScheduleError::Empty
    );
    assert!(matches!(
        Schedule::parse("@sometimes", "UTC"),
        Err(ScheduleError::UnknownMacro(_))
    ));
    assert!(matches!(
        Schedule::parse(&"* ".repeat(200), "UTC"),
        Err(ScheduleError::TooLong(_))
    ));
    assert!(matches!(
        Schedule::parse("0 0 30 2 *", "UTC"),
        Err(ScheduleError::Never(_))
    ));
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "\\PC{0,80}", zone in "[A-Za-z/_]{0,20}") {
        let _ = Schedule::parse(&text, &zone);
    }

    #[test]
    fn hostile_field_text_never_panics(fields in prop::collection::vec("[-0-9*/,?LW#A-Z]{1,12}", 5..=6)) {
        let _ = Schedule::parse(&fields.join(" "), "UTC");
    }

    #[test]
    fn the_next_time_is_later_and_matches_its_fields(
        minute in 0u32..60, hour in 0u32..24, step in 1u32..30,
        from in 0i64..4_000_000_000,
    ) {
        let text = format!("{minute} {hour}/{step} * * *");
        let schedule = Schedule::parse(&text, "UTC").unwrap();
        let next = schedule.next_after(from).unwrap();
        prop_assert!(next > from);
        prop_assert!(next - from <= 86_400 + 60);
        let at = DateTime::from_timestamp(next, 0).unwrap();
        use chrono::Timelike;
        prop_assert_eq!(at.minute(), minute);
        prop_assert_eq!((at.hour() - hour) % step, 0);
        prop_assert!(at.hour() >= hour);
        prop_assert_eq!(at.second(), 0);
        // Nothing matched in between.
        prop_assert_eq!(schedule.previous_before(next).map(|p| p <= from), Some(true));
    }

    #[test]
    fn seconds_steps_fire_within_their_step(step in 1u32..60, from in 0i64..4_000_000_000) {
        let schedule = Schedule::parse(&format!("*/{step} * * * * *"), "UTC").unwrap();
        let next = schedule.next_after(from).unwrap();
        prop_assert!(next > from && next - from <= i64::from(step));
        prop_assert_eq!(schedule.latest_at(next), Some(next));
    }
}
