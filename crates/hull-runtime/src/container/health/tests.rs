use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::monitor::{monitor, Prober};
use super::*;

const SECOND: i64 = 1_000_000_000;

fn check(test: &[&str]) -> HealthConfig {
    HealthConfig {
        test: test.iter().map(|s| (*s).to_owned()).collect(),
        ..HealthConfig::default()
    }
}

fn result(exit_code: i64) -> ProbeResult {
    ProbeResult {
        start: SystemTime::UNIX_EPOCH,
        end: SystemTime::UNIX_EPOCH,
        exit_code,
        output: String::new(),
    }
}

#[test]
fn settings_are_checked_as_dockers_create_checks_them() {
    assert!(validate(&check(&["CMD", "true"])).is_ok());
    assert!(validate(&check(&["NONE"])).is_ok());
    assert!(validate(&check(&[])).is_ok(), "the image's");
    for bad in [&["CMD"][..], &["CMD-SHELL"], &["SHELL", "true"]] {
        assert!(validate(&check(bad)).is_err(), "{bad:?}");
    }
    let short = HealthConfig {
        interval: 999_999,
        ..check(&["CMD", "true"])
    };
    assert!(matches!(
        validate(&short),
        Err(HealthError::TooShort("Interval"))
    ));
    let negative = HealthConfig {
        retries: -1,
        ..check(&["CMD", "true"])
    };
    assert!(validate(&negative).is_err());
}

#[test]
fn the_containers_settings_override_the_images_field_by_field() {
    let image = HealthConfig {
        interval: 5 * SECOND,
        retries: 7,
        ..check(&["CMD-SHELL", "test -f /ok"])
    };
    let container = HealthConfig {
        interval: SECOND,
        ..HealthConfig::default()
    };
    let merged = merge(Some(container), Some(&image)).unwrap();
    assert_eq!(merged.test, image.test);
    assert_eq!((merged.interval, merged.retries), (SECOND, 7));
    let disabled = merge(Some(check(&["NONE"])), Some(&image)).unwrap();
    assert_eq!(Schedule::of(&disabled), None);
    assert_eq!(merge(None, Some(&image)), Some(image));
    assert_eq!(merge(None, None), None);
}

#[test]
fn schedules_take_dockers_defaults_and_shell_form() {
    let schedule = Schedule::of(&check(&["CMD-SHELL", "test -f /ok"])).unwrap();
    assert_eq!(schedule.command, ["/bin/sh", "-c", "test -f /ok"]);
    assert_eq!(schedule.interval, Duration::from_secs(30));
    assert_eq!(schedule.timeout, Duration::from_secs(30));
    assert_eq!(schedule.start_period, Duration::ZERO);
    assert_eq!(schedule.retries, 3);
    let exec = Schedule::of(&check(&["CMD", "cat", "/ok"])).unwrap();
    assert_eq!(exec.command, ["cat", "/ok"]);
    assert_eq!(Schedule::of(&check(&[])), None);
    let starting = Schedule {
        start_period: Duration::from_secs(10),
        start_interval: Duration::from_secs(1),
        ..exec
    };
    let early = Duration::from_secs(3);
    assert_eq!(
        starting.next_wait(early, HealthStatus::Starting),
        Duration::from_secs(1)
    );
    assert_eq!(
        starting.next_wait(early, HealthStatus::Healthy),
        starting.interval
    );
    let late = Duration::from_secs(10);
    assert_eq!(
        starting.next_wait(late, HealthStatus::Starting),
        starting.interval
    );
}

#[test]
fn failures_in_a_row_make_a_container_unhealthy_and_one_success_healthy() {
    let mut health = Health::default();
    assert_eq!(
        health.record(result(1), true, 2),
        None,
        "within the start period"
    );
    assert_eq!(health.failing_streak, 0);
    assert_eq!(health.record(result(1), false, 2), None);
    assert_eq!(
        health.record(result(-1), false, 2),
        Some(HealthStatus::Unhealthy)
    );
    assert_eq!(health.failing_streak, 2);
    assert_eq!(
        health.record(result(0), false, 2),
        Some(HealthStatus::Healthy)
    );
    assert_eq!(health.failing_streak, 0);
    // Once healthy, the start period no longer forgives.
    assert_eq!(
        health.record(result(1), true, 1),
        Some(HealthStatus::Unhealthy)
    );
    for _ in 0..10 {
        health.record(result(3), false, 1);
    }
    assert_eq!(health.log.len(), LOG_ENTRIES);
    assert_eq!(health.failing_streak, 11);
    health.restart();
    assert_eq!(
        (health.status, health.failing_streak),
        (HealthStatus::Starting, 0)
    );
    assert_eq!(health.log.len(), LOG_ENTRIES, "a restart keeps the log");
}

#[test]
fn a_probes_output_is_kept_to_its_bound() {
    let mut output = BoundedOutput::default();
    for _ in 0..1000 {
        output.push(&[b'x'; 1000]);
    }
    assert_eq!(output.text().len(), MAX_OUTPUT);
    let mut invalid = BoundedOutput::default();
    invalid.push(&[0xff; 2 * MAX_OUTPUT]);
    let text = invalid.text();
    assert!(text.len() <= MAX_OUTPUT && text.starts_with('\u{fffd}'));
}

/// A prober answering from a script, recording when each probe started and
/// how many ran at once.
#[derive(Clone, Default)]
struct Scripted {
    /// Exit codes in turn; `None` hangs.
    codes: Arc<Mutex<Vec<Option<i64>>>>,
    starts: Arc<Mutex<Vec<Duration>>>,
    running: Arc<Mutex<u32>>,
    most_at_once: Arc<Mutex<u32>>,
    kills: Arc<Mutex<u32>>,
    epoch: Option<Instant>,
}

struct Running(Arc<Mutex<u32>>);

impl Drop for Running {
    fn drop(&mut self) {
        *self.0.lock().unwrap() -= 1;
    }
}

impl Prober for Scripted {
    async fn probe(&mut self) -> (i64, String) {
        let epoch = self.epoch.expect("an epoch");
        self.starts.lock().unwrap().push(epoch.elapsed());
        {
            let mut running = self.running.lock().unwrap();
            *running += 1;
            let mut most = self.most_at_once.lock().unwrap();
            *most = (*most).max(*running);
        }
        let _running = Running(self.running.clone());
        let next = {
            let mut codes = self.codes.lock().unwrap();
            if codes.is_empty() {
                Some(0)
            } else {
                codes.remove(0)
            }
        };
        match next {
            Some(code) => (code, format!("exit {code}")),
            None => std::future::pending().await,
        }
    }

    async fn kill(&mut self) {
        *self.kills.lock().unwrap() += 1;
    }
}

type Reports = Arc<Mutex<Vec<(ProbeResult, HealthStatus)>>>;

/// Runs a monitor on a paused clock for `run_for`; returns what it reported.
async fn run_monitor(schedule: Schedule, prober: &mut Scripted, run_for: Duration) -> Reports {
    let epoch = Instant::now();
    prober.epoch = Some(epoch);
    let reports: Reports = Arc::default();
    let kept = reports.clone();
    let retries = schedule.retries;
    let mut health = Health::default();
    let report = move |result: ProbeResult, in_start_period: bool| {
        health.record(result.clone(), in_start_period, retries);
        kept.lock().unwrap().push((result, health.status));
        health.status
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(monitor(
        schedule,
        epoch,
        HealthStatus::Starting,
        prober.clone(),
        stop.clone(),
        report,
    ));
    tokio::time::sleep(run_for).await;
    stop.cancel();
    task.await.unwrap();
    reports
}

fn every_second(retries: u32) -> Schedule {
    Schedule {
        command: vec!["true".into()],
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        start_period: Duration::ZERO,
        start_interval: Duration::from_secs(5),
        retries,
    }
}

fn statuses(reports: &Reports) -> Vec<HealthStatus> {
    reports.lock().unwrap().iter().map(|(_, s)| *s).collect()
}

#[tokio::test(start_paused = true)]
async fn probes_run_on_the_interval_and_their_results_set_the_health() {
    let mut prober = Scripted::default();
    *prober.codes.lock().unwrap() = vec![Some(1), Some(1), Some(0), Some(1)];
    let reports = run_monitor(every_second(2), &mut prober, Duration::from_millis(4500)).await;
    use HealthStatus::*;
    assert_eq!(statuses(&reports), [Starting, Unhealthy, Healthy, Healthy]);
    let starts: Vec<u64> = prober
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_secs())
        .collect();
    assert_eq!(starts, [1, 2, 3, 4]);
    assert_eq!(reports.lock().unwrap()[3].0.output, "exit 1");
}

#[tokio::test(start_paused = true)]
async fn a_probe_past_its_timeout_is_killed_and_fails_and_none_overlap() {
    let mut prober = Scripted::default();
    *prober.codes.lock().unwrap() = vec![None, None, Some(0)];
    let reports = run_monitor(every_second(1), &mut prober, Duration::from_millis(4700)).await;
    use HealthStatus::*;
    assert_eq!(statuses(&reports), [Unhealthy, Unhealthy, Healthy]);
    let first = &reports.lock().unwrap()[0].0;
    assert_eq!(first.exit_code, -1);
    assert_eq!(first.output, "Health check exceeded timeout (500ms)");
    assert_eq!(*prober.kills.lock().unwrap(), 2);
    assert_eq!(*prober.most_at_once.lock().unwrap(), 1);
    // Each wait starts once the last probe ended: 1 s, then 0.5 s cut + 1 s.
    let starts: Vec<u128> = prober
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(starts, [1000, 2500, 4000]);
}

#[tokio::test(start_paused = true)]
async fn the_start_period_forgives_failures_and_probes_at_the_start_interval() {
    let mut prober = Scripted::default();
    *prober.codes.lock().unwrap() = vec![Some(1); 6];
    let schedule = Schedule {
        start_period: Duration::from_millis(3500),
        start_interval: Duration::from_secs(1),
        interval: Duration::from_secs(10),
        ..every_second(1)
    };
    let reports = run_monitor(schedule, &mut prober, Duration::from_secs(13)).await;
    use HealthStatus::*;
    // At 1, 2, 3 s (forgiven); the wait set within the period is the start
    // interval, so the next comes at 4 s, after it (counted), and the one
    // after that a full interval later, at 14 s.
    assert_eq!(
        statuses(&reports),
        [Starting, Starting, Starting, Unhealthy]
    );
    let starts: Vec<u64> = prober
        .starts
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.as_secs())
        .collect();
    assert_eq!(starts, [1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn probing_stops_with_the_run() {
    let mut prober = Scripted::default();
    *prober.codes.lock().unwrap() = vec![None];
    let schedule = Schedule {
        timeout: Duration::from_secs(30),
        ..every_second(1)
    };
    // Stopped during the first probe, which hangs: nothing is reported.
    let reports = run_monitor(schedule, &mut prober, Duration::from_secs(5)).await;
    assert!(reports.lock().unwrap().is_empty());
    assert_eq!(prober.starts.lock().unwrap().len(), 1);
    assert_eq!(*prober.running.lock().unwrap(), 0, "the probe was dropped");
}
