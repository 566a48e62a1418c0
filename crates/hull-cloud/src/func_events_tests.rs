use std::path::Path;

use super::*;
use crate::funcs::CallState;

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("cloud.db"), &dir.join("secrets.key")).unwrap()
}

#[test]
fn events_are_kept_per_function_in_order_bounded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let echo = store.create_func(None, "echo", "{}").unwrap();
    let other = store.create_func(None, "other", "{}").unwrap();
    let call = store.add_call(&echo, "[]", b"hello", 1 << 20).unwrap();
    let detail = Detail {
        stdin: b"hello",
        ..Detail::default()
    };
    let stored = store
        .add_func_event(echo.id, &call, Event::Call, detail)
        .unwrap()
        .unwrap();
    assert_eq!(stored.short_stdin, "hello");
    store
        .add_func_event(echo.id, &call, Event::Queued, Detail::default())
        .unwrap();
    store.start_call(&call).unwrap();
    store
        .add_func_event(echo.id, &call, Event::Running, Detail::default())
        .unwrap();
    let status = store.func_status(echo.id).unwrap();
    assert_eq!((status.total, status.running, status.pending), (1, 1, 0));
    store
        .finish_call(&call, CallState::Finished, b"HELLO")
        .unwrap();
    let detail = Detail {
        stdout: b"HELLO",
        ..Detail::default()
    };
    store
        .add_func_event(echo.id, &call, Event::Finished, detail)
        .unwrap();
    store
        .add_func_event(other.id, "x", Event::Failed, Detail::default())
        .unwrap();

    let events = store.func_events(echo.id, None, None).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [Event::Call, Event::Queued, Event::Running, Event::Finished]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(events[3].short_stdout, "HELLO");
    let last = store.func_events(echo.id, None, Some(1)).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].event, Event::Finished);
    assert!(store
        .func_events(echo.id, Some("nope"), None)
        .unwrap()
        .is_empty());
    let status = store.func_status(echo.id).unwrap();
    assert_eq!(
        status,
        FuncStatus {
            total: 1,
            pending: 0,
            running: 0,
            finished: 1,
            failed: 0
        }
    );
    assert_eq!(store.func_status(other.id).unwrap().failed, 1);

    // A flood keeps the newest events only; the counts keep counting.
    for n in 0..MAX_EVENTS_PER_FUNC + 50 {
        store
            .add_func_event(echo.id, &format!("c{n}"), Event::Call, Detail::default())
            .unwrap();
    }
    let events = store.func_events(echo.id, None, None).unwrap();
    assert_eq!(events.len(), MAX_EVENTS_PER_FUNC);
    assert_eq!(
        events.last().unwrap().call_id,
        format!("c{}", MAX_EVENTS_PER_FUNC + 49)
    );
    assert_eq!(
        store.func_status(echo.id).unwrap().total,
        MAX_EVENTS_PER_FUNC as u64 + 51
    );

    // Gone with their function, and none are added to a removed one.
    store.remove_func(None, "echo").unwrap();
    assert!(store.func_events(echo.id, None, None).unwrap().is_empty());
    assert!(store
        .add_func_event(echo.id, "late", Event::Failed, Detail::default())
        .unwrap()
        .is_none());
    assert_eq!(store.func_status(echo.id).unwrap(), FuncStatus::default());
}

#[test]
fn an_event_shows_the_first_bytes_and_never_half_a_character() {
    let long = "é".repeat(200);
    let shown = short(long.as_bytes(), SHORT);
    assert_eq!(shown.len(), 254, "{shown}");
    assert!(shown.chars().all(|c| c == 'é'));
    assert_eq!(short(b"ab\xffcd", 10), "ab\u{fffd}cd");
    assert_eq!(short(b"abc", 0), "");
}
