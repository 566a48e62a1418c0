use super::*;

fn options(name: &str) -> NetworkOptions {
    NetworkOptions {
        name: name.into(),
        ..Default::default()
    }
}

#[test]
fn a_record_write_cut_short_is_dropped_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    let record = store.create(options("n"), &[]).unwrap();
    let stale = dir.path().join(format!("{}.json.tmp", record.id));
    fs::write(&stale, b"{\"half\":").unwrap();
    let reopened = NetworkStore::open(dir.path()).unwrap();
    assert!(!stale.exists());
    assert_eq!(reopened.get("n").unwrap(), record);
}

#[test]
fn networks_get_free_subnets_and_addresses_that_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    let taken = ["10.89.0.0/24".parse().unwrap()];
    let backend = store.create(options("backend"), &taken).unwrap();
    assert_eq!(backend.subnet.to_string(), "10.89.1.0/24");
    assert_eq!(backend.gateway, Ipv4Addr::new(10, 89, 1, 1));
    assert!(backend.bridge().len() <= 15);
    let front = store.create(options("front"), &taken).unwrap();
    assert_eq!(front.subnet.to_string(), "10.89.2.0/24");
    assert!(matches!(
        store.create(options("front"), &taken),
        Err(NetworkError::Exists(_))
    ));
    assert!(matches!(
        store.create(options("bridge"), &taken),
        Err(NetworkError::Reserved(_))
    ));
    let (_, db) = store
        .connect("backend", "c1", "/db", vec!["database".into()], None)
        .unwrap();
    assert_eq!(db.address, Ipv4Addr::new(10, 89, 1, 2));
    assert_eq!(db.mac, "02:42:0a:59:01:02");
    let (_, web) = store.connect("backend", "c2", "web", vec![], None).unwrap();
    assert_eq!(web.address, Ipv4Addr::new(10, 89, 1, 3));
    assert!(matches!(
        store.connect("backend", "c3", "x", vec![], Some(web.address)),
        Err(NetworkError::AddressInUse { .. })
    ));

    // A new store reads what the first wrote.
    let store = NetworkStore::open(dir.path()).unwrap();
    let backend = store.get("backend").unwrap();
    assert_eq!(backend.resolve("db."), Some(db.address));
    assert_eq!(backend.resolve("DATABASE"), Some(db.address));
    assert_eq!(backend.resolve("nobody"), None);
    assert!(matches!(
        store.remove("backend"),
        Err(NetworkError::InUse { .. })
    ));
    assert!(store.disconnect("backend", "c1").unwrap());
    assert!(!store.disconnect("backend", "c1").unwrap());
    // The released address is handed out again.
    let (_, again) = store.connect("backend", "c4", "y", vec![], None).unwrap();
    assert_eq!(again.address, db.address);
    store.disconnect("backend", "c2").unwrap();
    store.disconnect("backend", "c4").unwrap();
    store.remove("backend").unwrap();
    assert!(store.get("backend").is_err());
    assert_eq!(store.list().len(), 1);
}

#[test]
fn given_subnets_and_gateways_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    let mut custom = options("custom");
    custom.subnet = Some("192.168.50.0/24".parse().unwrap());
    custom.gateway = Some("192.168.50.254".parse().unwrap());
    let record = store.create(custom, &[]).unwrap();
    assert_eq!(record.gateway, Ipv4Addr::new(192, 168, 50, 254));
    let mut overlapping = options("other");
    overlapping.subnet = Some("192.168.0.0/16".parse().unwrap());
    assert!(matches!(
        store.create(overlapping, &[]),
        Err(NetworkError::Overlap { .. })
    ));
    let mut outside = options("outside");
    outside.subnet = Some("192.168.60.0/24".parse().unwrap());
    outside.gateway = Some("192.168.61.1".parse().unwrap());
    assert!(matches!(
        store.create(outside, &[]),
        Err(NetworkError::Gateway { .. })
    ));
    assert!(matches!(
        store.create(options("-bad"), &[]),
        Err(NetworkError::InvalidName(_))
    ));
}

#[test]
fn a_reserved_name_is_made_once_however_many_ask_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    let wanted = || NetworkOptions {
        name: "tenant:acme".into(),
        isolated: true,
        pool: SubnetPool {
            range: "10.128.0.0/10".parse().unwrap(),
            size: 24,
        },
        ..Default::default()
    };
    let made: Vec<(NetworkRecord, bool)> = std::thread::scope(|scope| {
        let askers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| store.ensure(wanted(), &[]).unwrap()))
            .collect();
        askers.into_iter().map(|a| a.join().unwrap()).collect()
    });
    assert_eq!(made.iter().filter(|(_, created)| *created).count(), 1);
    assert!(made.iter().all(|(n, _)| n.id == made[0].0.id));
    assert_eq!(store.list().len(), 1);
    let record = store.get("tenant:acme").unwrap();
    assert!(record.isolated);
    assert_eq!(record.subnet.to_string(), "10.128.0.0/24");
    // Another owner's gets a subnet of its own; the records persist.
    let mut other = wanted();
    other.name = "tenant:beta".into();
    let (beta, _) = store.ensure(other, &[]).unwrap();
    assert_eq!(beta.subnet.to_string(), "10.128.1.0/24");
    let reopened = NetworkStore::open(dir.path()).unwrap();
    assert_eq!(reopened.get("tenant:acme").unwrap(), record);
}

#[test]
fn reserved_names_are_made_only_by_ensure() {
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    // No name create takes has the separator, so none clashes.
    assert!(matches!(
        store.create(options("tenant:acme"), &[]),
        Err(NetworkError::InvalidName(_))
    ));
    store.create(options("tenant-acme"), &[]).unwrap();
    store.create(options("acme"), &[]).unwrap();
    for bad in [
        "acme",
        "tenant:",
        ":acme",
        "tenant:a:b",
        "tenant:-x",
        "x y:z",
        "t:é",
    ] {
        assert!(
            matches!(
                store.ensure(options(bad), &[]),
                Err(NetworkError::InvalidReservedName(_))
            ),
            "{bad}"
        );
    }
    let (made, created) = store.ensure(options("tenant:acme"), &[]).unwrap();
    assert!(created);
    assert_ne!(made.id, store.get("acme").unwrap().id);
    assert_eq!(store.get("tenant:acme").unwrap().id, made.id);
}

#[test]
fn a_client_resolves_the_names_of_its_own_networks_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = NetworkStore::open(dir.path()).unwrap();
    let a = store.create(options("a"), &[]).unwrap();
    let taken = [a.subnet];
    let b = store.create(options("b"), &taken).unwrap();
    let taken = [a.subnet, b.subnet];
    store.create(options("c"), &taken).unwrap();
    // `both` is on a, and on b besides; `db` on b only; `hidden` on c.
    let (_, both) = store.connect("a", "both", "both", vec![], None).unwrap();
    store
        .connect_as("b", "both", "both", vec!["both-b".into()], None, true)
        .unwrap();
    store.connect("b", "db", "db", vec![], None).unwrap();
    let (_, lone) = store.connect("a", "lone", "lone", vec![], None).unwrap();
    store
        .connect("c", "hidden", "hidden", vec![], None)
        .unwrap();
    let db = store.get("b").unwrap().endpoints["db"].address;

    // Through its first network's resolver, `both` finds b's names.
    assert_eq!(store.resolve_for(&a.id, "db", both.address), Some(db));
    // A client on a alone does not, nor does anyone find c's.
    assert_eq!(store.resolve_for(&a.id, "db", lone.address), None);
    assert_eq!(store.resolve_for(&a.id, "hidden", both.address), None);
    // An address on no endpoint of the network is nobody's.
    let stranger = std::net::Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(store.resolve_for(&a.id, "db", stranger), None);
    // b's own clients see `both` by its alias there.
    let both_b = store.get("b").unwrap().endpoints["both"].clone();
    assert!(both_b.secondary);
    assert_eq!(store.resolve_for(&b.id, "both-b", db), Some(both_b.address));
    assert!(store.get("a").unwrap().primary_endpoint("both").is_some());
    assert!(store.get("b").unwrap().primary_endpoint("both").is_none());
}
