use super::*;

fn usage(dir: &Path) -> Usage {
    Usage::open(&dir.join("usage.db")).unwrap()
}

fn run(tenant: Option<&str>, container: &str, start_ms: i64) -> NewRun {
    NewRun {
        tenant: tenant.map(str::to_owned),
        kind: RunKind::Container,
        container_id: container.to_owned(),
        container_name: format!("name-{container}"),
        size: Size {
            name: "S2".into(),
            vcpus: 1,
            memory_mib: 128,
        },
        start_ms,
    }
}

#[test]
fn a_run_is_billed_by_the_second_rounded_up_with_a_ten_second_minimum() {
    assert_eq!(billed_seconds(0, 0), 10);
    assert_eq!(billed_seconds(0, 3_000), 10);
    assert_eq!(billed_seconds(0, 10_000), 10);
    assert_eq!(billed_seconds(0, 10_001), 11);
    assert_eq!(billed_seconds(0, 61_500), 62);
    assert_eq!(billed_seconds(5_000, 0), 10, "an end before the start");
}

#[test]
fn runs_open_close_once_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let usage = usage(dir.path());
        let id = usage.start(&run(Some("acme"), "c1", 1_000_000)).unwrap();
        assert_eq!(usage.open_run_of("c1").unwrap(), Some(id));
        assert!(usage.end(id, 1_042_300, EndedBy::Witness).unwrap());
        // The first end seen wins: hulld's later `die` changes nothing.
        assert!(!usage.end(id, 1_050_000, EndedBy::Daemon).unwrap());
        id
    };
    let usage = usage(dir.path());
    let runs = usage.report(Owner::Everyone, 0, 2_000_000).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, id);
    assert_eq!(runs[0].end, Some(1_042_300));
    assert_eq!(runs[0].seconds, 43);
    assert_eq!(runs[0].ended_by.as_deref(), Some("witness"));
    assert_eq!(runs[0].size.memory_mib, 128);
    assert_eq!(usage.open_run_of("c1").unwrap(), None);
}

#[test]
fn a_running_run_is_billed_so_far_and_a_short_one_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let usage = usage(dir.path());
    let short = usage.start(&run(None, "a", 0)).unwrap();
    usage.end(short, 2_000, EndedBy::Daemon).unwrap();
    usage.start(&run(None, "b", 0)).unwrap();
    let runs = usage.report(Owner::Everyone, 0, 30_500).unwrap();
    assert_eq!(runs[0].seconds, 10);
    assert_eq!(runs[1].end, None);
    assert_eq!(runs[1].seconds, 31);
    let totals = usage.totals(30_500).unwrap();
    assert_eq!(totals, [(None, "S2".to_owned(), 41)]);
}

#[test]
fn reconcile_closes_runs_whose_vm_is_gone_at_their_last_beat() {
    let dir = tempfile::tempdir().unwrap();
    let usage = usage(dir.path());
    let gone = usage.start(&run(Some("acme"), "gone", 1_000)).unwrap();
    let alive = usage.start(&run(Some("acme"), "alive", 1_000)).unwrap();
    let witnessed = usage.start(&run(Some("acme"), "seen", 1_000)).unwrap();
    usage.beat(None, 61_000).unwrap();
    usage.end(witnessed, 70_000, EndedBy::Witness).unwrap();
    // A beat after the end changes no closed run.
    usage.beat(None, 91_000).unwrap();
    let closed = usage.reconcile(|container| container == "alive").unwrap();
    assert_eq!(closed, [gone]);
    let runs = usage.report(Owner::Everyone, 0, 200_000).unwrap();
    let by_id = |id| runs.iter().find(|r| r.id == id).unwrap().clone();
    assert_eq!(by_id(gone).end, Some(91_000));
    assert_eq!(by_id(gone).ended_by.as_deref(), Some("last-seen"));
    assert_eq!(by_id(alive).end, None);
    assert_eq!(by_id(witnessed).end, Some(70_000));
}

#[test]
fn a_new_start_closes_a_forgotten_open_run_of_the_same_container() {
    let dir = tempfile::tempdir().unwrap();
    let usage = usage(dir.path());
    let first = usage.start(&run(None, "c", 1_000)).unwrap();
    usage.beat(Some(first), 20_000).unwrap();
    let second = usage.start(&run(None, "c", 50_000)).unwrap();
    let runs = usage.report(Owner::Everyone, 0, 60_000).unwrap();
    assert_eq!(runs[0].end, Some(20_000));
    assert_eq!(usage.open_run_of("c").unwrap(), Some(second));
}

#[test]
fn reports_hold_only_the_owner_s_runs_since_the_time_asked() {
    let dir = tempfile::tempdir().unwrap();
    let usage = usage(dir.path());
    let old = usage.start(&run(Some("acme"), "old", 0)).unwrap();
    usage.end(old, 5_000, EndedBy::Daemon).unwrap();
    usage.start(&run(Some("acme"), "new", 100_000)).unwrap();
    usage.start(&run(Some("beta"), "theirs", 100_000)).unwrap();
    usage.start(&run(None, "operator", 100_000)).unwrap();
    let names = |owner, since| -> Vec<String> {
        usage
            .report(owner, since, 200_000)
            .unwrap()
            .into_iter()
            .map(|r| r.container_id)
            .collect()
    };
    assert_eq!(names(Owner::Tenant("acme"), 0), ["old", "new"]);
    assert_eq!(names(Owner::Tenant("acme"), 6_000), ["new"]);
    assert_eq!(names(Owner::Tenant("beta"), 0), ["theirs"]);
    assert_eq!(names(Owner::Operator, 0), ["operator"]);
    assert_eq!(names(Owner::Everyone, 0).len(), 4);
    // A tenant's name that happens to be an SQL pattern matches nothing.
    assert!(names(Owner::Tenant("%"), 0).is_empty());
}

#[test]
fn since_is_seconds_since_the_epoch_and_never_in_the_future() {
    let now = 1_700_000_000_000;
    assert_eq!(parse_since("", now).unwrap(), 0);
    assert_eq!(parse_since("1700000000", now).unwrap(), now);
    assert_eq!(
        parse_since("1600000000.25", now).unwrap(),
        1_600_000_000_250
    );
    for bad in [
        "soon",
        "-1",
        "1e9",
        " 1",
        "1.",
        ".5",
        "1.2.3",
        "99999999999999999999",
        "1700000000.1234567891",
        "１２",
    ] {
        assert!(
            matches!(parse_since(bad, now), Err(UsageError::BadSince(_))),
            "{bad}"
        );
    }
    for future in ["1800000000", "999999999999"] {
        assert!(
            matches!(parse_since(future, now), Err(UsageError::FutureSince(_))),
            "{future}"
        );
    }
}

#[test]
fn runs_recorded_before_kinds_existed_read_as_containers_and_pods_as_pods() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    {
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE runs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT,
                container_id TEXT NOT NULL, container_name TEXT NOT NULL,
                size TEXT NOT NULL, vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL,
                start_ms INTEGER NOT NULL, end_ms INTEGER, seen_ms INTEGER NOT NULL,
                ended_by TEXT);
             INSERT INTO runs (tenant, container_id, container_name, size, vcpus, memory_mib,
                               start_ms, end_ms, seen_ms, ended_by)
             VALUES ('acme', 'old', 'web', 'S2', 1, 128, 1000, 5000, 5000, 'hulld');",
        )
        .unwrap();
    }
    let usage = Usage::open(&path).unwrap();
    // Opening it again finds the column in place.
    let usage_again = Usage::open(&path).unwrap();
    drop(usage_again);
    let mut pod = run(Some("acme"), "pod1", 2000);
    pod.kind = RunKind::Pod;
    usage.start(&pod).unwrap();
    let report = usage.report(Owner::Tenant("acme"), 0, 3000).unwrap();
    let kinds: Vec<(&str, &str)> = report
        .iter()
        .map(|r| (r.container_id.as_str(), r.kind.as_str()))
        .collect();
    assert_eq!(kinds, [("old", "container"), ("pod1", "pod")]);
}
