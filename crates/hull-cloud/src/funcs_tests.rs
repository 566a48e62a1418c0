use std::path::Path;

use super::*;
use crate::quota::Quota;

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("cloud.db"), &dir.join("secrets.key")).unwrap()
}

#[test]
fn functions_are_per_owner_and_their_uuid_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.create_tenant("acme", Quota::default()).unwrap();
    store.create_tenant("beta", Quota::default()).unwrap();
    let acme = store.create_func(Some("acme"), "resize", "{}").unwrap();
    let beta = store.create_func(Some("beta"), "resize", "{}").unwrap();
    assert_ne!(acme.uuid, beta.uuid);
    assert_eq!(acme.uuid.len(), 32);
    assert!(matches!(
        store.create_func(Some("acme"), "resize", "{}"),
        Err(FuncsError::Exists(_))
    ));
    assert!(matches!(
        store.create_func(Some("nobody"), "resize", "{}"),
        Err(FuncsError::NoTenant(_))
    ));
    assert!(matches!(
        store.func(None, "resize"),
        Err(FuncsError::NoFunc(_))
    ));
    assert_eq!(store.funcs(Some("acme"), false).unwrap().len(), 1);
    assert_eq!(store.funcs(None, true).unwrap().len(), 2);

    let refreshed = store
        .update_func(Some("acme"), "resize", Some("{\"a\":1}"), true)
        .unwrap();
    assert_ne!(refreshed.uuid, acme.uuid);
    assert_eq!(refreshed.spec, "{\"a\":1}");
    assert!(store.func_by_uuid(&acme.uuid).unwrap().is_none());
    assert_eq!(
        store.func_by_uuid(&refreshed.uuid).unwrap().unwrap().id,
        acme.id
    );
}

#[test]
fn calls_are_queued_durably_and_fetched_once() {
    let dir = tempfile::tempdir().unwrap();
    let (func, first, second) = {
        let store = store(dir.path());
        let func = store.create_func(None, "echo", "{}").unwrap();
        let first = store.add_call(func.id, "[]", b"one").unwrap();
        let second = store.add_call(func.id, "[]", b"two").unwrap();
        store.start_call(&first).unwrap();
        (func, first, second)
    };
    let store = store(dir.path());
    let queued = store.queued_calls().unwrap();
    assert_eq!(queued, vec![(func.id, second.clone())]);
    assert_eq!(store.call(&second).unwrap().unwrap().body.unwrap(), b"two");
    // A call running when hulld stopped is failed, not run twice.
    assert_eq!(
        store.fail_running_calls("stopped").unwrap(),
        vec![(func.id, first.clone())]
    );
    assert_eq!(
        store.call(&first).unwrap().unwrap().state,
        CallState::Failed
    );

    // Not done: answered and kept.
    let running = store.take_call(func.id, &second).unwrap().unwrap();
    assert_eq!(running.state, CallState::Queued);
    store
        .finish_call(&second, CallState::Finished, b"out")
        .unwrap();
    // Another function's id for it answers as missing.
    assert!(store.take_call(func.id + 1, &second).unwrap().is_none());
    let done = store.take_call(func.id, &second).unwrap().unwrap();
    assert_eq!(done.result.unwrap(), b"out");
    assert!(store.take_call(func.id, &second).unwrap().is_none());

    // Unfetched past its time: expired, then forgotten.
    let third = store.add_call(func.id, "[]", b"").unwrap();
    store
        .finish_call(&third, CallState::Finished, b"x")
        .unwrap();
    store.expire_calls(i64::MAX as u64, 0).unwrap();
    assert_eq!(
        store.call(&third).unwrap().unwrap().state,
        CallState::Expired
    );
    store
        .expire_calls(i64::MAX as u64, i64::MAX as u64)
        .unwrap();
    assert!(store.call(&third).unwrap().is_none());
    // Removing the function removes its calls.
    let fourth = store.add_call(func.id, "[]", b"").unwrap();
    store.remove_func(None, "echo").unwrap();
    assert!(store.call(&fourth).unwrap().is_none());
}
