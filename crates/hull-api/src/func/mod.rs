//! Hyper Func: functions whose every call runs a new container of their
//! image, with the request on its stdin and its stdout the answer.
//!
//! Each function runs at most its max concurrency of calls at once; more
//! wait in a FIFO queue of bounded length. Every call is recorded in the
//! store before it is answered, so a queued call outlives hulld: the next
//! one runs it.

mod call;
pub mod events;
pub mod plane;
mod queue;
mod spec;
mod spool;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use hull_cloud::func_events::{Detail, Event, EventRow, FuncStatus};
use hull_cloud::funcs::{CallRow, CallState, FuncRow, FuncsError};
use hull_runtime::container::{Container, OutputChunk};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

pub use spec::{FuncSpec, FuncView, SpecError, MAX_CONCURRENCY, MAX_TIMEOUT_SECONDS};

use crate::daemon::Daemon;
use queue::{Owner, Queues};

/// How often results kept unfetched past their time are dropped.
const EXPIRY_SWEEP: Duration = Duration::from_secs(30);
/// How long an expired call still answers 410 before it is forgotten.
const EXPIRED_KEPT: u64 = 24 * 3600;

/// The call plane's bounds.
#[derive(Debug, Clone, Copy)]
pub struct FuncConfig {
    /// The most bytes of a call's request body (its stdin).
    pub max_input: usize,
    /// The most bytes of a call's stdout; more answers 509.
    pub max_output: usize,
    /// Calls of one function that may wait for a slot; more answer 429.
    pub max_queue: usize,
    /// How long a result is kept unfetched; then it answers 410.
    pub result_ttl: Duration,
    /// The bytes the calls of one owner's functions may hold (queued
    /// requests, results not fetched yet); a call past it answers 507.
    pub max_held_bytes: u64,
    /// Calls of one owner's functions running at once; more wait.
    pub max_running_per_owner: usize,
    /// Call plane connections one owner's functions may hold at once.
    pub max_connections_per_owner: usize,
    /// Call plane connections one address may hold before a request on
    /// them names a function.
    pub max_unauthenticated_per_address: usize,
}

/// Hyper.sh's quota of concurrent calls per tenant.
pub const DEFAULT_MAX_RUNNING_PER_OWNER: usize = 10;
/// Room for the default per-owner running calls' results at the default
/// 1 MiB each several times over, and for thousands of small calls.
pub const DEFAULT_MAX_HELD_BYTES: u64 = 64 << 20;
/// A busy owner's sync calls and output waits (its running calls and
/// some queued), while eight such owners still leave the plane's 512
/// connections free ones.
pub const DEFAULT_MAX_CONNECTIONS_PER_OWNER: usize = 64;
/// A client's burst of parallel calls, or a NAT of several, passes.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 32;

impl Default for FuncConfig {
    fn default() -> Self {
        Self {
            max_input: 1 << 20,
            max_output: 1 << 20,
            max_queue: 100,
            result_ttl: Duration::from_secs(3600),
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            max_running_per_owner: DEFAULT_MAX_RUNNING_PER_OWNER,
            max_connections_per_owner: DEFAULT_MAX_CONNECTIONS_PER_OWNER,
            max_unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FuncError {
    #[error(transparent)]
    Store(#[from] FuncsError),
    #[error("function {0} has {1} calls waiting already: try again later")]
    QueueFull(String, usize),
    #[error("the stored definition of function {0} is unreadable: {1}")]
    Unreadable(String, serde_json::Error),
    #[error("functions are not running on this hulld")]
    NotRunning,
}

/// The call plane's shared state.
#[derive(Debug)]
pub struct Funcs {
    queues: Mutex<Queues>,
    /// The ids of calls as they finish.
    finished: broadcast::Sender<String>,
    config: OnceLock<FuncConfig>,
    /// Where calls are served, once they are.
    address: OnceLock<plane::Endpoint>,
    daemon: OnceLock<Weak<Daemon>>,
    /// Calls a stopped hulld left running, taken back once their
    /// containers are re-attached.
    interrupted: Mutex<Vec<Interrupted>>,
    /// Calls' events as they are recorded, for `func logs --follow`.
    events: broadcast::Sender<EventRow>,
    /// When this hulld took over: a call whose container ended before
    /// ended while no hulld read its output.
    started: std::time::SystemTime,
}

/// A call a stopped hulld left running.
struct Interrupted {
    func: FuncRow,
    id: String,
    /// Its container, with its output subscribed to before the re-attach;
    /// `None` if it was never made.
    container: Option<(Arc<Container>, mpsc::Receiver<OutputChunk>)>,
}

impl Default for Funcs {
    fn default() -> Self {
        Self {
            queues: Mutex::default(),
            finished: broadcast::channel(1024).0,
            config: OnceLock::new(),
            address: OnceLock::new(),
            daemon: OnceLock::new(),
            interrupted: Mutex::default(),
            events: broadcast::channel(1024).0,
            started: std::time::SystemTime::now(),
        }
    }
}

impl Funcs {
    /// Sets the bounds; the first setting holds.
    pub fn configure(&self, config: FuncConfig) {
        let _ = self.config.set(config);
    }

    pub fn config(&self) -> FuncConfig {
        self.config.get().copied().unwrap_or_default()
    }

    /// The base of call URLs (`https://HOST:PORT`, `http://` on
    /// loopback), once the plane listens.
    pub fn base_url(&self) -> Option<String> {
        self.address.get().map(plane::Endpoint::base_url)
    }

    /// Calls of function `id` running and waiting.
    pub fn load(&self, id: i64) -> (usize, usize) {
        self.lock().load(id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stored function's definition.
pub fn definition(row: &FuncRow) -> Result<FuncSpec, FuncError> {
    serde_json::from_str(&row.spec).map_err(|e| FuncError::Unreadable(row.name.clone(), e))
}

/// Starts the call plane's background work: calls a stopped hulld left
/// queued run, ones it left running are held to be taken back once their
/// containers are re-attached, and results kept past their time are
/// dropped. To be called before containers are re-attached.
pub fn spawn(daemon: Arc<Daemon>) {
    let _ = daemon.funcs().daemon.set(Arc::downgrade(&daemon));
    let store = daemon.tenants();
    match store.running_calls() {
        Ok(running) => adopt_running(&daemon, running),
        Err(err) => {
            warn!(error = %hull_runtime::error_chain(&err), "cannot read the calls left running")
        }
    }
    match store.queued_calls() {
        Ok(queued) => {
            if !queued.is_empty() {
                info!(
                    calls = queued.len(),
                    "running the calls a stopped hulld left queued"
                );
            }
            let mut owners = Vec::new();
            {
                let mut queues = daemon.funcs().lock();
                for (func, owner, id) in queued {
                    queues.push(func, &owner, id);
                    if !owners.contains(&owner) {
                        owners.push(owner);
                    }
                }
            }
            for owner in owners {
                pump(&daemon, &owner);
            }
        }
        Err(err) => warn!(error = %hull_runtime::error_chain(&err), "cannot read queued calls"),
    }
    let sweeping = daemon.clone();
    tokio::spawn(async move {
        loop {
            expire(&sweeping);
            tokio::time::sleep(EXPIRY_SWEEP).await;
        }
    });
}

impl std::fmt::Debug for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupted")
            .field("func", &self.func.name)
            .field("id", &self.id)
            .field("container", &self.container.as_ref().map(|(c, _)| &c.id))
            .finish()
    }
}

/// Counts the calls a stopped hulld left running as running and, for each
/// whose container exists, subscribes to its output before the container
/// is re-attached, so that nothing it writes from then on is missed.
fn adopt_running(daemon: &Arc<Daemon>, running: Vec<(i64, Option<String>, String)>) {
    let ids: Vec<String> = running.iter().map(|(_, _, id)| id.clone()).collect();
    spool::sweep(daemon.root(), &ids);
    let mut interrupted = Vec::new();
    for (func, owner, id) in running {
        let Ok(Some(row)) = daemon.tenants().func_by_id(func) else {
            continue;
        };
        let container = call::container_of(daemon, owner.as_deref(), &row.name, &id).map(|c| {
            let output = c.attach_output(true, true);
            (c, output)
        });
        daemon.funcs().lock().adopt(func, &owner);
        interrupted.push(Interrupted {
            func: row,
            id,
            container,
        });
    }
    if !interrupted.is_empty() {
        info!(
            calls = interrupted.len(),
            "taking back the calls a stopped hulld left running"
        );
    }
    *daemon
        .funcs()
        .interrupted
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = interrupted;
}

/// Takes back the calls a stopped hulld left running: each finishes (or
/// runs, if its container never started) and keeps its result. To be
/// called once containers are re-attached.
pub async fn resume_interrupted(daemon: &Arc<Daemon>) {
    let interrupted = std::mem::take(
        &mut *daemon
            .funcs()
            .interrupted
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    for call in interrupted {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            let Interrupted {
                func,
                id,
                container,
            } = call;
            let (state, result) = match (definition(&func), request_of(&daemon, &id)) {
                (Ok(spec), Some((env, stdin))) => {
                    let request = call::Request {
                        owner: func.tenant.as_deref(),
                        func: &func.name,
                        id: &id,
                        spec: &spec,
                        env,
                        stdin,
                        max_output: daemon.funcs().config().max_output,
                    };
                    let started = daemon.funcs().started;
                    match container {
                        Some((container, output)) => {
                            call::resume(&daemon, request, container, output, started).await
                        }
                        None => call::run(&daemon, request).await,
                    }
                }
                (Err(err), _) => (CallState::Failed, err.to_string().into_bytes()),
                // Removed meanwhile, with its function.
                (_, None) => (CallState::Failed, Vec::new()),
            };
            info!(function = %func.name, call = %id, ?state, "a call taken back ended");
            conclude(&daemon, &func, &id, state, &result);
        });
    }
}

/// The stored environment and stdin of call `id`, if it is still kept.
fn request_of(daemon: &Daemon, id: &str) -> Option<(Vec<String>, Vec<u8>)> {
    let row = daemon.tenants().call(id).ok().flatten()?;
    let env = row
        .env
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_default();
    Some((env, row.body.unwrap_or_default()))
}

/// Stores a call's outcome, records its last event, frees its slot and
/// starts what waited for it.
fn conclude(daemon: &Arc<Daemon>, func: &FuncRow, id: &str, state: CallState, result: &[u8]) {
    if let Err(err) = daemon.tenants().finish_call(id, state, result) {
        warn!(call = %id, error = %hull_runtime::error_chain(&err), "cannot store a call's result");
    }
    events::record_end(daemon, func.id, id, state, result);
    daemon.funcs().lock().ended(func.id, &func.tenant);
    let _ = daemon.funcs().finished.send(id.to_owned());
    pump(daemon, &func.tenant);
}

/// Removes `owner`'s function `name` with its calls: queued ones are
/// dropped, running ones' VMs stopped. Returns once they are gone.
pub(crate) async fn remove(
    daemon: &Daemon,
    owner: Option<&str>,
    name: &str,
) -> Result<(), FuncError> {
    let (row, running) = daemon.tenants().remove_func(owner, name)?;
    let Some(daemon) = daemon.funcs().daemon.get().and_then(Weak::upgrade) else {
        return Ok(());
    };
    let removals = running.iter().map(|id| {
        let container = call::container_name(&row.name, id);
        let daemon = daemon.clone();
        async move { call::remove(&daemon, owner, &container).await }
    });
    futures_util::future::join_all(removals).await;
    if !running.is_empty() {
        info!(function = %row.name, calls = running.len(), "stopped the running calls of a removed function");
    }
    Ok(())
}

/// Function `func`'s calls counted.
pub(crate) fn status(daemon: &Daemon, func: &FuncRow) -> Result<FuncStatus, FuncError> {
    Ok(daemon.tenants().func_status(func.id)?)
}

/// Drops results kept unfetched past their time.
pub(crate) fn expire(daemon: &Daemon) {
    let now = crate::cron::unix_now().max(0) as u64;
    let ttl = daemon.funcs().config().result_ttl.as_secs();
    let expired = daemon
        .tenants()
        .expire_calls(now.saturating_sub(ttl), now.saturating_sub(EXPIRED_KEPT));
    if let Err(err) = expired {
        warn!(error = %hull_runtime::error_chain(&err), "cannot expire call results");
    }
}

/// Records a call of `func` with its environment and stdin, and starts it
/// or queues it; its id.
pub(crate) fn submit(
    daemon: &Daemon,
    func: &FuncRow,
    env: &[String],
    body: &[u8],
) -> Result<String, FuncError> {
    let funcs = daemon.funcs();
    let Some(owner) = funcs.daemon.get().and_then(Weak::upgrade) else {
        return Err(FuncError::NotRunning);
    };
    // Unreadable, it could never run: refused before it is kept.
    definition(func)?;
    let config = funcs.config();
    let env = serde_json::to_string(env).expect("strings serialize");
    let mut queues = funcs.lock();
    // Also when the function has slots free: its calls may wait for its
    // owner's, and that wait is bounded too.
    let (_, waiting) = queues.load(func.id);
    if waiting >= config.max_queue {
        return Err(FuncError::QueueFull(func.name.clone(), waiting));
    }
    let id = daemon
        .tenants()
        .add_call(func, &env, body, config.max_held_bytes)?;
    queues.push(func.id, &func.tenant, id.clone());
    drop(queues);
    let detail = Detail {
        stdin: body,
        ..Detail::default()
    };
    events::record(daemon, func.id, &id, Event::Call, detail);
    events::record(daemon, func.id, &id, Event::Queued, Detail::default());
    pump(&owner, &func.tenant);
    Ok(id)
}

/// Starts waiting calls of `owner`'s functions while they, and it, have
/// free slots.
fn pump(daemon: &Arc<Daemon>, owner: &Owner) {
    // Each waiting function's definition, read outside the queues' lock.
    let waiting = daemon.funcs().lock().waiting_funcs(owner);
    let mut rows = std::collections::HashMap::new();
    for func in waiting {
        match daemon.tenants().func_by_id(func) {
            Ok(Some(row)) => match definition(&row) {
                Ok(spec) => {
                    rows.insert(func, (row, spec.max_concurrency as usize));
                }
                Err(err) => warn!(error = %err, "cannot run a function's calls"),
            },
            // Gone: its waiting calls went with it.
            Ok(None) => {}
            Err(err) => {
                warn!(error = %hull_runtime::error_chain(&err), "cannot read a function");
                return;
            }
        }
    }
    let max_owner = daemon.funcs().config().max_running_per_owner;
    let started = daemon.funcs().lock().start(owner, max_owner, |func| {
        rows.get(&func).map(|(_, max)| *max)
    });
    for (func, id) in started {
        let row = rows[&func].0.clone();
        let daemon = daemon.clone();
        tokio::spawn(async move {
            if let Some((state, result)) = run(&daemon, &row, &id).await {
                conclude(&daemon, &row, &id, state, &result);
            } else {
                daemon.funcs().lock().ended(row.id, &row.tenant);
                pump(&daemon, &row.tenant);
            }
        });
    }
}

/// Runs call `id` of `func`: its outcome and result, or `None` if the
/// call is gone or not queued.
async fn run(daemon: &Arc<Daemon>, func: &FuncRow, id: &str) -> Option<(CallState, Vec<u8>)> {
    let store = daemon.tenants();
    match store.call(id) {
        Ok(Some(row)) if row.state == CallState::Queued => {}
        Ok(_) => return None,
        Err(err) => {
            warn!(call = %id, error = %hull_runtime::error_chain(&err), "cannot read a queued call");
            return None;
        }
    }
    if let Err(err) = store.start_call(id) {
        warn!(call = %id, error = %hull_runtime::error_chain(&err), "cannot mark a call running");
    }
    events::record(daemon, func.id, id, Event::Running, Detail::default());
    let (env, stdin) = request_of(daemon, id)?;
    let outcome = match definition(func) {
        Ok(spec) => {
            let request = call::Request {
                owner: func.tenant.as_deref(),
                func: &func.name,
                id,
                spec: &spec,
                env,
                stdin,
                max_output: daemon.funcs().config().max_output,
            };
            call::run(daemon, request).await
        }
        Err(err) => (CallState::Failed, err.to_string().into_bytes()),
    };
    info!(function = %func.name, call = %id, state = ?outcome.0, "a call ended");
    Some(outcome)
}

/// Waits until call `id` of `func` is done (or gone), then takes it: a
/// result is fetched once. With `wait` false, answers at once.
pub(crate) async fn take(
    daemon: &Daemon,
    func: &FuncRow,
    id: &str,
    wait: bool,
) -> Result<Option<CallRow>, FuncError> {
    let mut finished = daemon.funcs().finished.subscribe();
    loop {
        let store = daemon.tenants();
        let row = store.take_call(func.id, id)?;
        match row {
            Some(row) if wait && !row.state.is_done() => {}
            other => return Ok(other),
        }
        // Lagging behind other calls' ends: look again.
        loop {
            match finished.recv().await {
                Ok(done) if done != id => continue,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Err(FuncError::NotRunning),
            }
        }
    }
}
