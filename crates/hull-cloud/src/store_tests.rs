use super::*;

fn store(dir: &Path) -> Store {
    Store::open(&dir.join("cloud.db"), &dir.join("secrets.key")).unwrap()
}

#[test]
fn tenants_and_keys_survive_a_reopen_and_secrets_are_sealed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let key = {
        let store = store(dir.path());
        store.create_tenant("acme", Quota::default()).unwrap();
        store.create_key("acme").unwrap()
    };
    assert_eq!(key.access_key.len(), ACCESS_KEY_LEN);
    assert_eq!(key.secret_key.len(), SECRET_KEY_LEN);
    let store = store(dir.path());
    assert_eq!(store.tenant("acme").unwrap().quota, Quota::default());
    assert_eq!(
        store.secret_of(&key.access_key).unwrap(),
        Some(("acme".to_owned(), key.secret_key.clone()))
    );
    let listed = store.keys(Some("acme")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].access_key, key.access_key);

    // The database alone (and its WAL) never holds the secret in the clear.
    drop(store);
    for file in ["cloud.db", "cloud.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(file)) {
            assert!(
                !bytes
                    .windows(SECRET_KEY_LEN)
                    .any(|w| w == key.secret_key.as_bytes()),
                "{file} holds the secret"
            );
        }
    }
}

#[test]
fn a_removed_key_or_tenant_no_longer_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.create_tenant("a", Quota::default()).unwrap();
    let first = store.create_key("a").unwrap();
    let second = store.create_key("a").unwrap();
    store.remove_key(&first.access_key).unwrap();
    assert_eq!(store.secret_of(&first.access_key).unwrap(), None);
    assert!(store.secret_of(&second.access_key).unwrap().is_some());
    assert!(matches!(
        store.remove_key(&first.access_key),
        Err(StoreError::NoKey(_))
    ));
    store.remove_tenant("a").unwrap();
    assert_eq!(store.secret_of(&second.access_key).unwrap(), None);
    assert!(store.keys(None).unwrap().is_empty());
}

#[test]
fn names_are_checked_unique_and_keys_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    for bad in ["", "Acme", "-x", "a/b", "a b", &"x".repeat(64), "../etc"] {
        assert!(
            matches!(
                store.create_tenant(bad, Quota::default()),
                Err(StoreError::BadName(_))
            ),
            "{bad}"
        );
    }
    store.create_tenant("acme", Quota::default()).unwrap();
    assert!(matches!(
        store.create_tenant("acme", Quota::default()),
        Err(StoreError::Exists(_))
    ));
    for _ in 0..MAX_KEYS_PER_TENANT {
        store.create_key("acme").unwrap();
    }
    assert!(matches!(
        store.create_key("acme"),
        Err(StoreError::TooManyKeys(_))
    ));
    assert!(matches!(
        store.create_key("nobody"),
        Err(StoreError::NoTenant(_))
    ));
    assert_eq!(store.secret_of(&"A".repeat(100_000)).unwrap(), None);
}

#[test]
fn random_keys_use_their_whole_alphabet_and_differ() {
    let keys: Vec<String> = (0..200)
        .map(|_| random_text(ACCESS_KEY_LEN, UPPER_ALNUM).unwrap())
        .collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
    let seen: std::collections::BTreeSet<u8> = keys.iter().flat_map(|k| k.bytes()).collect();
    assert_eq!(seen.len(), UPPER_ALNUM.len());
}

#[test]
fn imported_keys_are_checked_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.create_tenant("a", Quota::default()).unwrap();
    store.create_tenant("b", Quota::default()).unwrap();
    let key = |ak: &str, sk: &str| NewKey {
        access_key: ak.to_owned(),
        secret_key: sk.to_owned(),
    };
    store
        .import_key("a", key("AKTESTVECTOR0001", "s3cr3t/Key+For=Vectors"))
        .unwrap();
    assert_eq!(
        store.secret_of("AKTESTVECTOR0001").unwrap(),
        Some(("a".to_owned(), "s3cr3t/Key+For=Vectors".to_owned()))
    );
    assert!(matches!(
        store.import_key("b", key("AKTESTVECTOR0001", "another-secret-key")),
        Err(StoreError::KeyExists(_))
    ));
    for (ak, sk) in [
        ("short", "long enough secret"),
        ("AK/../x1234", "long enough secret"),
        ("AKGOODKEY1", "short"),
        ("AKGOODKEY1", "has a space in it"),
    ] {
        assert!(
            matches!(store.import_key("b", key(ak, sk)), Err(StoreError::BadKey)),
            "{ak} {sk}"
        );
    }
}

#[test]
fn client_certificates_count_as_keys_and_revoke_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.create_tenant("a", Quota::default()).unwrap();
    let fingerprint = "ab".repeat(32);
    let cert = store.add_client_cert("a", &fingerprint).unwrap();
    assert!(cert.access_key.starts_with("CERT"));
    assert_eq!(
        store.tenant_of_cert(&fingerprint).unwrap(),
        Some("a".to_owned())
    );
    store.create_key("a").unwrap();
    store.create_key("a").unwrap();
    assert!(matches!(
        store.create_key("a"),
        Err(StoreError::TooManyKeys(_))
    ));
    assert_eq!(store.keys(Some("a")).unwrap().len(), 3);
    store.remove_key(&cert.access_key).unwrap();
    assert_eq!(store.tenant_of_cert(&fingerprint).unwrap(), None);
    assert!(matches!(
        store.add_client_cert("nobody", &fingerprint),
        Err(StoreError::NoTenant(_))
    ));
}
