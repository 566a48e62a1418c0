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
        let first = store.add_call(&func, "[]", b"one", u64::MAX).unwrap();
        let second = store.add_call(&func, "[]", b"two", u64::MAX).unwrap();
        store.start_call(&first).unwrap();
        (func, first, second)
    };
    let store = store(dir.path());
    let queued = store.queued_calls().unwrap();
    assert_eq!(queued, vec![(func.id, None, second.clone())]);
    assert_eq!(store.call(&second).unwrap().unwrap().body.unwrap(), b"two");
    // A call running when hulld stopped is found again, to be taken back.
    assert_eq!(
        store.running_calls().unwrap(),
        vec![(func.id, None, first.clone())]
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
    let third = store.add_call(&func, "[]", b"", u64::MAX).unwrap();
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
    let fourth = store.add_call(&func, "[]", b"", u64::MAX).unwrap();
    let (_, running) = store.remove_func(None, "echo").unwrap();
    assert_eq!(running, vec![first.clone()]);
    assert!(store.call(&fourth).unwrap().is_none());
    assert!(store.call(&first).unwrap().is_none());
}

#[test]
fn an_owner_s_calls_hold_bytes_within_its_budget_until_fetched_expired_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.create_tenant("acme", Quota::default()).unwrap();
    store.create_tenant("beta", Quota::default()).unwrap();
    let hoard = store.create_func(Some("acme"), "hoard", "{}").unwrap();
    let other = store.create_func(Some("acme"), "other", "{}").unwrap();
    let beta = store.create_func(Some("beta"), "hoard", "{}").unwrap();
    let cost = |body: usize| CALL_OVERHEAD + 2 + body as u64;
    let budget = 3 * cost(1000);
    let first = store.add_call(&hoard, "[]", &[0; 1000], budget).unwrap();
    let second = store.add_call(&other, "[]", &[0; 1000], budget).unwrap();
    assert_eq!(store.held_bytes(Some("acme")).unwrap(), 2 * cost(1000));
    // Past the budget, across the owner's functions: refused, nothing kept.
    let refused = store
        .add_call(&hoard, "[]", &[0; 1001], budget)
        .unwrap_err();
    assert!(
        matches!(refused, FuncsError::Full { held, adding, .. } if held == 2 * cost(1000) && adding == cost(1001)),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("tenant acme") && message.contains("fetch the results"),
        "{message}"
    );
    assert_eq!(store.held_bytes(Some("acme")).unwrap(), 2 * cost(1000));
    // Another owner has a budget of its own.
    store.add_call(&beta, "[]", &[0; 1000], budget).unwrap();
    // Running, a call's environment and body are held until its result
    // takes their place: nothing changes.
    store.start_call(&first).unwrap();
    assert_eq!(store.held_bytes(Some("acme")).unwrap(), 2 * cost(1000));
    store
        .finish_call(&first, CallState::Finished, &[1; 2000])
        .unwrap();
    assert_eq!(
        store.held_bytes(Some("acme")).unwrap(),
        CALL_OVERHEAD + 2000 + cost(1000)
    );
    // A fetch frees it all, as does a removal; the empty call's record counts.
    store.take_call(hoard.id, &first).unwrap().unwrap();
    assert_eq!(store.held_bytes(Some("acme")).unwrap(), cost(1000));
    store.add_call(&hoard, "[]", &[0; 1001], budget).unwrap();
    store.remove_func(Some("acme"), "other").unwrap();
    assert!(store.call(&second).unwrap().is_none());
    assert_eq!(store.held_bytes(Some("acme")).unwrap(), cost(1001));
    // An expired result is dropped, its record still held until forgotten.
    let third = store.add_call(&hoard, "[]", b"", budget).unwrap();
    store
        .finish_call(&third, CallState::Finished, &[0; 500])
        .unwrap();
    store.expire_calls(i64::MAX as u64, 0).unwrap();
    assert_eq!(
        store.held_bytes(Some("acme")).unwrap(),
        cost(1001) + CALL_OVERHEAD
    );
    // A call of a function removed meanwhile is not kept.
    let gone = hoard.clone();
    store.remove_func(Some("acme"), "hoard").unwrap();
    assert!(matches!(
        store.add_call(&gone, "[]", b"", budget),
        Err(FuncsError::NoFunc(_))
    ));
    assert_eq!(store.held_bytes(Some("acme")).unwrap(), 0);
    assert_eq!(store.held_bytes(Some("beta")).unwrap(), cost(1000));
}
