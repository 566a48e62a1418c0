use std::path::Path;

use super::*;
use crate::quota::Quota;

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("cloud.db"), &dir.join("secrets.key")).unwrap()
}

#[test]
fn crons_are_per_owner_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store(dir.path());
        store.create_tenant("acme", Quota::default()).unwrap();
        store.create_tenant("beta", Quota::default()).unwrap();
        store
            .create_cron(Some("acme"), "nightly", "{}", Some(10))
            .unwrap();
        // The same name is another owner's own.
        store
            .create_cron(Some("beta"), "nightly", "{}", Some(10))
            .unwrap();
        store.create_cron(None, "nightly", "{}", Some(10)).unwrap();
        assert!(matches!(
            store.create_cron(Some("acme"), "nightly", "{}", None),
            Err(CronsError::Exists(_))
        ));
        assert!(matches!(
            store.create_cron(None, "nightly", "{}", None),
            Err(CronsError::Exists(_))
        ));
        assert!(matches!(
            store.create_cron(Some("ghost"), "x", "{}", None),
            Err(CronsError::NoTenant(_))
        ));
    }
    let store = store(dir.path());
    assert_eq!(store.crons(Some("acme"), false).unwrap().len(), 1);
    assert_eq!(store.crons(None, false).unwrap().len(), 1);
    assert_eq!(store.crons(None, true).unwrap().len(), 3);
    // Another tenant's cron answers as a missing one.
    assert!(matches!(
        store.remove_cron(Some("beta"), "missing"),
        Err(CronsError::NoCron(_))
    ));
    store.remove_cron(Some("beta"), "nightly").unwrap();
    assert!(store.cron(Some("acme"), "nightly").is_ok());
    assert!(matches!(
        store.cron(Some("beta"), "nightly"),
        Err(CronsError::NoCron(_))
    ));
    // A removed tenant takes its crons along.
    store.remove_tenant("acme").unwrap();
    assert_eq!(store.crons(None, true).unwrap().len(), 1);
}

#[test]
fn an_owner_holds_a_bounded_number_of_crons() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for i in 0..MAX_CRONS_PER_OWNER {
        store
            .create_cron(None, &format!("c{i}"), "{}", None)
            .unwrap();
    }
    assert!(matches!(
        store.create_cron(None, "one-more", "{}", None),
        Err(CronsError::TooMany { .. })
    ));
}

#[test]
fn history_is_counted_filtered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let cron = store.create_cron(None, "c", "{}", Some(0)).unwrap();
    for scheduled in 0..(MAX_HISTORY as i64 + 20) {
        let outcome = match scheduled % 3 {
            0 => Outcome::Success,
            1 => Outcome::Error,
            _ => Outcome::Uncounted,
        };
        store
            .record_cron_run(
                cron.id,
                scheduled,
                Some(scheduled),
                outcome,
                &scheduled.to_string(),
            )
            .unwrap();
    }
    let row = store.cron(None, "c").unwrap();
    assert_eq!(row.success_count, 40);
    assert_eq!(row.error_count, 40);
    assert_eq!(row.last_run, Some(119));
    let all = store.cron_history(cron.id, None, None).unwrap();
    assert_eq!(all.len(), MAX_HISTORY);
    assert_eq!(all.first().map(String::as_str), Some("20"));
    assert_eq!(all.last().map(String::as_str), Some("119"));
    let tail = store.cron_history(cron.id, None, Some(2)).unwrap();
    assert_eq!(tail, vec!["118".to_owned(), "119".to_owned()]);
    let since = store.cron_history(cron.id, Some(117), None).unwrap();
    assert_eq!(since.len(), 3);
    // A run that ends after its cron was removed leaves nothing behind.
    store.remove_cron(None, "c").unwrap();
    store
        .record_cron_run(cron.id, 200, None, Outcome::Error, "late")
        .unwrap();
    assert!(store.cron_history(cron.id, None, None).unwrap().is_empty());
}

#[test]
fn suspending_keeps_or_moves_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.create_cron(None, "c", "{}", Some(100)).unwrap();
    let row = store.suspend_cron(None, "c", true, None).unwrap();
    assert!(row.suspended);
    assert_eq!(row.next_run, Some(100));
    let row = store.suspend_cron(None, "c", false, Some(500)).unwrap();
    assert!(!row.suspended);
    assert_eq!(row.next_run, Some(500));
}
