//! Hyper Func: functions whose every call runs a new container of their
//! image, with the request on its stdin and its stdout the answer.
//!
//! Each function runs at most its max concurrency of calls at once; more
//! wait in a FIFO queue of bounded length. Every call is recorded in the
//! store before it is answered, so a queued call outlives hulld: the next
//! one runs it.

mod call;
pub mod plane;
mod spec;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use hull_cloud::funcs::{CallRow, CallState, FuncRow, FuncsError};
use tokio::sync::broadcast;
use tracing::{info, warn};

pub use spec::{FuncSpec, FuncView, SpecError, MAX_CONCURRENCY, MAX_TIMEOUT_SECONDS};

use crate::daemon::Daemon;

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
}

impl Default for FuncConfig {
    fn default() -> Self {
        Self {
            max_input: 1 << 20,
            max_output: 1 << 20,
            max_queue: 100,
            result_ttl: Duration::from_secs(3600),
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
    slots: Mutex<HashMap<i64, Slot>>,
    /// The ids of calls as they finish.
    finished: broadcast::Sender<String>,
    config: OnceLock<FuncConfig>,
    /// Where calls are served, once they are.
    address: OnceLock<std::net::SocketAddr>,
    daemon: OnceLock<Weak<Daemon>>,
    /// Calls a stopped hulld left running: their containers are removed
    /// once the containers are re-attached.
    interrupted: Mutex<Vec<(i64, String)>>,
}

#[derive(Debug, Default)]
struct Slot {
    running: usize,
    queue: VecDeque<String>,
}

impl Default for Funcs {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            finished: broadcast::channel(1024).0,
            config: OnceLock::new(),
            address: OnceLock::new(),
            daemon: OnceLock::new(),
            interrupted: Mutex::default(),
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

    /// The base of call URLs (`http://ADDR`), once the plane listens.
    pub fn base_url(&self) -> Option<String> {
        self.address.get().map(|a| format!("http://{a}"))
    }

    /// Calls of function `id` running and waiting.
    pub fn load(&self, id: i64) -> (usize, usize) {
        self.lock()
            .get(&id)
            .map_or((0, 0), |s| (s.running, s.queue.len()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stored function's definition.
pub fn definition(row: &FuncRow) -> Result<FuncSpec, FuncError> {
    serde_json::from_str(&row.spec).map_err(|e| FuncError::Unreadable(row.name.clone(), e))
}

/// Starts the call plane's background work: calls a stopped hulld left
/// queued run, ones it left running are failed (their result is lost),
/// and results kept past their time are dropped.
pub fn spawn(daemon: Arc<Daemon>) {
    let _ = daemon.funcs().daemon.set(Arc::downgrade(&daemon));
    let store = daemon.tenants();
    match store.fail_running_calls("the call was running when hulld stopped") {
        Ok(failed) if failed.is_empty() => {}
        Ok(failed) => {
            warn!(
                calls = failed.len(),
                "calls running when hulld stopped are failed"
            );
            *daemon
                .funcs()
                .interrupted
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = failed;
        }
        Err(err) => {
            warn!(error = %hull_runtime::error_chain(&err), "cannot fail interrupted calls")
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
            let mut funcs = Vec::new();
            {
                let mut slots = daemon.funcs().lock();
                for (func, id) in queued {
                    slots.entry(func).or_default().queue.push_back(id);
                    funcs.push(func);
                }
            }
            funcs.dedup();
            for func in funcs {
                pump(&daemon, func);
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

/// Removes the containers of calls a stopped hulld left running (their
/// calls are failed already); to be called once containers are re-attached.
pub async fn remove_interrupted(daemon: &Arc<Daemon>) {
    let interrupted = std::mem::take(
        &mut *daemon
            .funcs()
            .interrupted
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    for (func, id) in interrupted {
        let Ok(Some(row)) = daemon.tenants().func_by_id(func) else {
            continue;
        };
        let path = format!(
            "/containers/{}?force=1",
            call::container_name(&row.name, &id)
        );
        let owner = row.tenant.as_deref();
        let removed = crate::server::crons::call(
            daemon,
            owner,
            hyper::Method::DELETE,
            &path,
            bytes::Bytes::new(),
        )
        .await;
        info!(function = %row.name, call = %id, status = %removed.0, "removed an interrupted call's container");
    }
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
    let spec = definition(func)?;
    let max_queue = funcs.config().max_queue;
    let env = serde_json::to_string(env).expect("strings serialize");
    let mut slots = funcs.lock();
    let slot = slots.entry(func.id).or_default();
    let free = slot.running < spec.max_concurrency as usize;
    if !free && slot.queue.len() >= max_queue {
        return Err(FuncError::QueueFull(func.name.clone(), slot.queue.len()));
    }
    let id = daemon.tenants().add_call(func.id, &env, body)?;
    slot.queue.push_back(id.clone());
    drop(slots);
    pump(&owner, func.id);
    Ok(id)
}

/// Starts queued calls of function `func` while it has free slots.
fn pump(daemon: &Arc<Daemon>, func: i64) {
    let row = match daemon.tenants().func_by_id(func) {
        Ok(Some(row)) => row,
        Ok(None) => {
            daemon.funcs().lock().remove(&func);
            return;
        }
        Err(err) => {
            warn!(error = %hull_runtime::error_chain(&err), "cannot read a function");
            return;
        }
    };
    let max = match definition(&row) {
        Ok(spec) => spec.max_concurrency as usize,
        Err(err) => {
            warn!(error = %err, "cannot run a function's calls");
            return;
        }
    };
    let mut slots = daemon.funcs().lock();
    let slot = slots.entry(func).or_default();
    while slot.running < max {
        let Some(id) = slot.queue.pop_front() else {
            break;
        };
        slot.running += 1;
        let (daemon, row) = (daemon.clone(), row.clone());
        tokio::spawn(async move {
            run(&daemon, &row, &id).await;
            {
                let mut slots = daemon.funcs().lock();
                if let Some(slot) = slots.get_mut(&row.id) {
                    slot.running = slot.running.saturating_sub(1);
                }
            }
            let _ = daemon.funcs().finished.send(id);
            pump(&daemon, row.id);
        });
    }
}

/// Runs call `id` of `func` and stores its outcome.
async fn run(daemon: &Arc<Daemon>, func: &FuncRow, id: &str) {
    let store = daemon.tenants();
    let row = match store.call(id) {
        Ok(Some(row)) if row.state == CallState::Queued => row,
        Ok(_) => return,
        Err(err) => {
            warn!(call = %id, error = %hull_runtime::error_chain(&err), "cannot read a queued call");
            return;
        }
    };
    if let Err(err) = store.start_call(id) {
        warn!(call = %id, error = %hull_runtime::error_chain(&err), "cannot mark a call running");
    }
    let env: Vec<String> = row
        .env
        .as_deref()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_default();
    let body = row.body.unwrap_or_default();
    let (state, result) = match definition(func) {
        Ok(spec) => {
            let max_output = daemon.funcs().config().max_output;
            let request = call::Request {
                owner: func.tenant.as_deref(),
                func: &func.name,
                id,
                spec: &spec,
                env,
                stdin: body,
                max_output,
            };
            call::run(daemon, request).await
        }
        Err(err) => (CallState::Failed, err.to_string().into_bytes()),
    };
    info!(function = %func.name, call = %id, ?state, "a call ended");
    if let Err(err) = store.finish_call(id, state, &result) {
        warn!(call = %id, error = %hull_runtime::error_chain(&err), "cannot store a call's result");
    }
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
