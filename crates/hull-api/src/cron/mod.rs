//! Hyper Cron's scheduler: one task that wakes at the next fire time of
//! any cron, records what it slept through, and starts each due run (as
//! its concurrency policy allows) through the API's own routes.
//!
//! The first fire time not yet handled is stored with each cron, so a
//! hulld that was down finds the times it missed on its next start: they
//! are recorded as missed, and the latest runs if it is still within the
//! cron's starting deadline (as Kubernetes' CronJob does).

pub mod notify;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hull_cloud::crons::{CronRow, Outcome};
use hull_cron::{Concurrency, CronSpec, Run, Schedule, Status};
use hyper::Method;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::daemon::Daemon;

/// The longest the scheduler sleeps without looking at the store again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The scheduler's shared state: what wakes it, and the runs going on.
#[derive(Debug, Default)]
pub struct Crons {
    wake: Notify,
    running: Mutex<HashMap<i64, Vec<Running>>>,
    notifier: notify::Notifier,
    /// The daemon, once its scheduler runs: a run outlives the request
    /// that started it (`run now`).
    daemon: OnceLock<Weak<Daemon>>,
}

#[derive(Debug, Clone)]
struct Running {
    scheduled: i64,
    container: String,
    replaced: Arc<AtomicBool>,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Crons {
    /// Tells the scheduler that crons changed.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Runs of cron `id` going on now.
    pub fn running(&self, id: i64) -> usize {
        self.lock().get(&id).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Vec<Running>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the scheduler in the background.
pub fn spawn(daemon: Arc<Daemon>) {
    let _ = daemon.crons().daemon.set(Arc::downgrade(&daemon));
    tokio::spawn(async move {
        adopt(&daemon).await;
        loop {
            let next = tick(&daemon).await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let sleep = next
                .and_then(|t| u64::try_from(t).ok())
                .map(|t| Duration::from_secs(t).saturating_sub(now))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = daemon.crons().wake.notified() => {}
            }
        }
    });
}

/// Handles every cron that is due; the earliest next fire time.
async fn tick(daemon: &Arc<Daemon>) -> Option<i64> {
    let rows = match daemon.tenants().crons(None, true) {
        Ok(rows) => rows,
        Err(err) => {
            warn!(error = %hull_runtime::error_chain(&err), "cannot read the crons");
            return None;
        }
    };
    let now = unix_now();
    let mut earliest: Option<i64> = None;
    for row in rows.into_iter().filter(|row| !row.suspended) {
        let Some((spec, schedule)) = definition(&row) else {
            continue;
        };
        let pending = match row.next_run {
            Some(pending) => pending,
            None => match schedule.next_after(now) {
                Some(next) => next,
                None => continue,
            },
        };
        let next = if pending <= now {
            let due = hull_cron::due(&schedule, pending, now, spec.starting_deadline_seconds);
            for missed in &due.missed {
                let run = Run::not_started(&row.name, *missed, Status::Missed);
                finish(daemon, &row, &spec, run);
            }
            if let Some(scheduled) = due.run {
                fire(daemon, &row, &spec, scheduled);
            }
            due.next
        } else {
            Some(pending)
        };
        if next != row.next_run {
            if let Err(err) = daemon.tenants().set_cron_next(row.id, next) {
                warn!(cron = %row.name, error = %hull_runtime::error_chain(&err), "cannot store a cron's next run");
            }
        }
        earliest = match (earliest, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    earliest
}

/// A stored cron's definition and schedule; a record that no longer
/// parses is logged and skipped rather than stopping the others.
pub(crate) fn definition(row: &CronRow) -> Option<(CronSpec, Schedule)> {
    let spec: CronSpec = match serde_json::from_str(&row.spec) {
        Ok(spec) => spec,
        Err(err) => {
            warn!(cron = %row.name, error = %err, "a stored cron's definition is unreadable");
            return None;
        }
    };
    match Schedule::parse(&spec.schedule, &spec.time_zone) {
        Ok(schedule) => Some((spec, schedule)),
        Err(err) => {
            warn!(cron = %row.name, error = %err, "a stored cron's schedule is invalid");
            None
        }
    }
}

/// Starts the run due at `scheduled`, as the cron's concurrency policy
/// allows beside the runs already going on; false if the scheduler does
/// not run.
pub(crate) fn fire(daemon: &Daemon, row: &CronRow, spec: &CronSpec, scheduled: i64) -> bool {
    let crons = daemon.crons();
    let Some(daemon) = crons.daemon.get().and_then(Weak::upgrade) else {
        return false;
    };
    let replaced = Arc::new(AtomicBool::new(false));
    let stopping = {
        let mut running = crons.lock();
        let ongoing = running.entry(row.id).or_default();
        if !ongoing.is_empty() && spec.concurrency_policy == Concurrency::Forbid {
            drop(running);
            debug!(cron = %row.name, scheduled, "skipped a run: the last one is still running");
            let run = Run::not_started(&row.name, scheduled, Status::Skipped);
            finish(&daemon, row, spec, run);
            return true;
        }
        let stopping: Vec<Running> = if spec.concurrency_policy == Concurrency::Replace {
            ongoing.clone()
        } else {
            Vec::new()
        };
        ongoing.push(Running {
            scheduled,
            container: hull_cron::record::container_name(&row.name, scheduled),
            replaced: replaced.clone(),
        });
        stopping
    };
    let (row, spec) = (row.clone(), spec.clone());
    tokio::spawn(async move {
        let owner = row.tenant.as_deref();
        for old in stopping {
            old.replaced.store(true, Ordering::SeqCst);
            let path = format!("/containers/{}/kill", old.container);
            let _ =
                crate::server::crons::call(&daemon, owner, Method::POST, &path, Bytes::new()).await;
        }
        info!(cron = %row.name, scheduled, "starting a cron run");
        attend(daemon, row, spec, scheduled, false, replaced).await;
    });
    true
}

/// Runs (or, `adopted`, waits for) the run due at `scheduled`, already
/// counted as going on, and records it.
async fn attend(
    daemon: Arc<Daemon>,
    row: CronRow,
    spec: CronSpec,
    scheduled: i64,
    adopted: bool,
    replaced: Arc<AtomicBool>,
) {
    let owner = row.tenant.as_deref();
    let record = run::run(
        &daemon, owner, &row.name, &spec, scheduled, adopted, &replaced,
    )
    .await;
    {
        let mut running = daemon.crons().lock();
        if let Some(ongoing) = running.get_mut(&row.id) {
            ongoing.retain(|r| r.scheduled != scheduled);
            if ongoing.is_empty() {
                running.remove(&row.id);
            }
        }
    }
    finish(&daemon, &row, &spec, record);
}

/// Takes back the runs a stopped hulld left: each cron's containers
/// (`<cron>-<unix time>`) still there are waited for (if they still run),
/// recorded and removed, as if this hulld had started them.
async fn adopt(daemon: &Arc<Daemon>) {
    let Ok(rows) = daemon.tenants().crons(None, true) else {
        return;
    };
    let mut owners: std::collections::BTreeMap<Option<String>, Vec<CronRow>> = Default::default();
    for row in rows {
        owners.entry(row.tenant.clone()).or_default().push(row);
    }
    for (owner, rows) in owners {
        let listed = crate::server::crons::call(
            daemon,
            owner.as_deref(),
            Method::GET,
            "/containers/json?all=1",
            Bytes::new(),
        )
        .await;
        let Ok(containers) = serde_json::from_slice::<Vec<serde_json::Value>>(&listed.1) else {
            warn!(owner = ?owner, "cannot list the containers of cron runs a stopped hulld left");
            continue;
        };
        let names = containers
            .iter()
            .flat_map(|c| c["Names"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| {
                n.as_str()
                    .and_then(|n| n.strip_prefix('/'))
                    .map(str::to_owned)
            });
        for name in names {
            let found = rows.iter().find_map(|row| {
                let stamp = name.strip_prefix(&row.name)?.strip_prefix('-')?;
                let digits = !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit());
                Some((row, stamp.parse::<i64>().ok().filter(|_| digits)?))
            });
            let Some((row, scheduled)) = found else {
                continue;
            };
            let Some((spec, _)) = definition(row) else {
                continue;
            };
            info!(cron = %row.name, scheduled, "taking back a run a stopped hulld left");
            let replaced = Arc::new(AtomicBool::new(false));
            track_running(daemon, row.id, scheduled, &name, &replaced);
            let (daemon, row) = (daemon.clone(), row.clone());
            tokio::spawn(attend(daemon, row, spec, scheduled, true, replaced));
        }
    }
}

fn track_running(
    daemon: &Daemon,
    id: i64,
    scheduled: i64,
    container: &str,
    replaced: &Arc<AtomicBool>,
) {
    daemon.crons().lock().entry(id).or_default().push(Running {
        scheduled,
        container: container.to_owned(),
        replaced: replaced.clone(),
    });
}

/// Stores a run's record and counts it, then notifies the owner's webhook
/// if the cron's policy asks for it.
fn finish(daemon: &Daemon, row: &CronRow, spec: &CronSpec, record: Run) {
    let outcome = match record.status.counts_as_success() {
        Some(true) => Outcome::Success,
        Some(false) => Outcome::Error,
        None => Outcome::Uncounted,
    };
    let json = serde_json::to_string(&record).expect("a run record serializes");
    let stored =
        daemon
            .tenants()
            .record_cron_run(row.id, record.scheduled, record.started, outcome, &json);
    if let Err(err) = stored {
        warn!(cron = %row.name, error = %hull_runtime::error_chain(&err), "cannot record a cron run");
    }
    if let Some(url) = &spec.notify_url {
        if spec.notify_policy.wants(record.status) {
            let public_only = row.tenant.is_some();
            daemon
                .crons()
                .notifier
                .post(url.clone(), public_only, json.into_bytes());
        }
    }
}
