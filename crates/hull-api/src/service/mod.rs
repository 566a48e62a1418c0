//! The services' replicas at work: a task of hulld that keeps each
//! service's `replicas` running (made and removed through the API's own
//! routes, as the service's owner would call them, so a tenant's replicas
//! pass its quotas and checks), probes them, and tells the network which
//! ones take connections. Nothing here is durable: the service records
//! are the network's, the replicas are containers with the service's
//! label, and health is probed again after a restart.

pub mod health;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use hull_net::service::{ServiceRecord, IMAGE_LABEL, LABEL};
use hull_runtime::container::health::HealthStatus;
use hull_runtime::container::Status;
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::daemon::Daemon;
use crate::server::crons::call;

/// How often the task looks at every service when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);
/// A healthy replica taken out of the balancer (scaled down, or replaced
/// by a rolling update) keeps running this long for the connections it
/// has, as a load balancer drains a server.
const DRAIN: Duration = Duration::from_secs(2);
/// After a replica could not be made, the next try waits this long.
const BACKOFF: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Replicas {
    wake: Notify,
    health: Mutex<health::Table>,
    /// By service id: when making a replica last failed, and why.
    failures: Mutex<BTreeMap<String, (Instant, String)>>,
    /// Services whose new replicas are being made: a VM boots meanwhile,
    /// while the others are probed.
    making: Mutex<std::collections::BTreeSet<String>>,
    /// The proxies of HTTP, leastconn and affinity services.
    proxies: proxy::Proxies,
    /// By service id, what wakes the task that looks after it: each
    /// service has its own, so that one whose replicas time out, or whose
    /// VMs are slow to go, never holds back another tenant's failover.
    loops: Mutex<BTreeMap<String, Arc<Notify>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replicas {
    /// Looks at the services now (one was made, scaled or removed).
    pub fn wake(&self) {
        self.wake.notify_one();
        for notify in lock(&self.loops).values() {
            notify.notify_one();
        }
    }

    /// Why making a replica of service `id` last failed, if it did.
    pub fn failure(&self, id: &str) -> Option<String> {
        lock(&self.failures).get(id).map(|(_, why)| why.clone())
    }
}

/// A replica as inspect shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replica {
    pub id: String,
    pub name: String,
    pub address: Option<Ipv4Addr>,
    pub state: String,
    pub healthy: bool,
    /// The image it was made from.
    pub image: String,
    #[serde(skip)]
    status: Status,
    #[serde(skip)]
    index: u32,
}

/// The replicas of `record`: its owner's containers with its label.
pub fn replicas(daemon: &Daemon, record: &ServiceRecord) -> Vec<Replica> {
    let network = daemon.containers().networks().get(&record.network_id).ok();
    let health = lock(&daemon.services().health);
    let prefix = format!("{}-", record.spec.name);
    let mut all: Vec<Replica> = daemon
        .containers()
        .list()
        .into_iter()
        .filter(|c| {
            c.namespace() == record.owner
                && c.config()
                    .labels
                    .get(LABEL)
                    .is_some_and(|id| *id == record.id)
        })
        .map(|c| {
            let state = c.state();
            let name = c.name();
            let image = c
                .config()
                .labels
                .get(IMAGE_LABEL)
                .cloned()
                .unwrap_or_default();
            Replica {
                image,
                address: network
                    .as_ref()
                    .and_then(|n| n.endpoints.get(&c.id))
                    .map(|e| e.address),
                healthy: health.get(&c.id).is_some_and(|h| h.healthy),
                state: state.status.as_str().to_owned(),
                status: state.status,
                index: name
                    .strip_prefix(&prefix)
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(u32::MAX),
                id: c.id.clone(),
                name,
            }
        })
        .collect();
    all.sort_by_key(|r| r.index);
    all
}

pub fn spawn(daemon: Arc<Daemon>) {
    tokio::spawn(async move {
        loop {
            tick(&daemon).await;
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = daemon.services().wake.notified() => {}
            }
        }
    });
}

/// Starts a task for each service that has none; takes away replicas and
/// health of what is gone.
async fn tick(daemon: &Arc<Daemon>) {
    let records = daemon.containers().networks().services().list();
    daemon.services().proxies.sync(&records);
    {
        let mut loops = lock(&daemon.services().loops);
        for record in &records {
            if !loops.contains_key(&record.id) {
                let notify = Arc::new(Notify::new());
                loops.insert(record.id.clone(), notify.clone());
                tokio::spawn(look_after(daemon.clone(), record.id.clone(), notify));
            }
        }
    }
    // Replicas of services that are gone (removed, or a removal that a
    // crash cut short).
    let orphans: Vec<(Option<String>, String)> = daemon
        .containers()
        .list()
        .iter()
        .filter(|c| {
            c.config()
                .labels
                .get(LABEL)
                .is_some_and(|id| !records.iter().any(|r| r.id == *id))
        })
        .filter(|c| c.state().status != Status::Removing)
        .map(|c| (c.namespace(), c.name()))
        .collect();
    for (owner, name) in orphans {
        info!(replica = %name, "removing a replica of a removed service");
        remove(daemon, owner.as_deref(), &name).await;
    }
    // Health of containers that are gone is forgotten.
    let live: Vec<String> = daemon
        .containers()
        .list()
        .iter()
        .map(|c| c.id.clone())
        .collect();
    lock(&daemon.services().health).retain(|id, _| live.contains(id));
}

/// Keeps service `id` as its record says, from the record as it is at
/// each look, until it is removed.
async fn look_after(daemon: Arc<Daemon>, id: String, notify: Arc<Notify>) {
    loop {
        let services = daemon.containers().networks().services();
        let Some(record) = services.by_id(&id) else {
            lock(&daemon.services().loops).remove(&id);
            return;
        };
        reconcile(&daemon, &record).await;
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = notify.notified() => {}
        }
    }
}

async fn reconcile(daemon: &Arc<Daemon>, record: &ServiceRecord) {
    let owner = record.owner.as_deref();
    let check = record.spec.health_check.clone();
    let making = lock(&daemon.services().making).contains(&record.id);
    let mut alive = Vec::new();
    let mut dead = Vec::new();
    for replica in replicas(daemon, record) {
        let hopeless = lock(&daemon.services().health)
            .get(&replica.id)
            .is_some_and(|h| h.hopeless(&check));
        match replica.status {
            Status::Running | Status::Restarting if !hopeless => alive.push(replica),
            Status::Removing => {}
            // Being made and started.
            Status::Created if making => {}
            _ => dead.push((replica, hopeless)),
        }
    }
    if record.rollback.is_some()
        && dead
            .iter()
            .any(|(r, hopeless)| *hopeless && r.image == record.spec.image)
    {
        roll_back(
            daemon,
            record,
            "a replica of the new image never became healthy",
        );
    }
    // The dead leave the balancer before anything else is done.
    publish(daemon, record, &alive);
    for (replica, hopeless) in dead {
        info!(service = %record.spec.name, replica = %replica.name, state = %replica.state, hopeless, "replacing a replica");
        remove(daemon, owner, &replica.name).await;
    }
    let wanted = usize::try_from(record.spec.replicas).unwrap_or(0);
    if alive.len() < wanted {
        if !making {
            lock(&daemon.services().making).insert(record.id.clone());
            let (daemon, record) = (daemon.clone(), record.clone());
            let count = wanted - alive.len();
            tokio::spawn(async move {
                make(&daemon, &record, count).await;
                lock(&daemon.services().making).remove(&record.id);
                daemon.services().wake();
            });
        }
    } else if alive.len() == wanted
        && !making
        && alive.iter().all(|r| r.healthy)
        && alive.iter().any(|r| r.image != record.spec.image)
    {
        // A rolling update: one more replica of the new image; an old one
        // goes once it is healthy.
        lock(&daemon.services().making).insert(record.id.clone());
        let (daemon, record) = (daemon.clone(), record.clone());
        tokio::spawn(async move {
            make(&daemon, &record, 1).await;
            lock(&daemon.services().making).remove(&record.id);
            daemon.services().wake();
        });
    } else if alive.len() > wanted
        && !alive.iter().any(|r| {
            r.image == record.spec.image
                && !r.healthy
                && alive.iter().any(|o| o.image != record.spec.image)
        })
    {
        // Old images go first, then unhealthy ones, then the newest; out
        // of the balancer before their VMs go.
        let mut extra = alive.clone();
        extra.sort_by_key(|r| {
            (
                r.image == record.spec.image,
                r.healthy,
                std::cmp::Reverse(r.index),
            )
        });
        extra.truncate(alive.len() - wanted);
        alive.retain(|r| !extra.iter().any(|e| e.id == r.id));
        publish(daemon, record, &alive);
        // Connections it took before it left the balancer finish first.
        if extra.iter().any(|r| r.healthy) {
            tokio::time::sleep(DRAIN).await;
        }
        for replica in &extra {
            remove(daemon, owner, &replica.name).await;
        }
    }
    probe(daemon, record, &alive).await;
    publish(daemon, record, &alive);
    if record.rollback.is_some()
        && alive.len() == wanted
        && alive
            .iter()
            .all(|r| r.healthy && r.image == record.spec.image)
    {
        let services = daemon.containers().networks().services();
        let done = services.modify(owner, &record.spec.name, |current| {
            // Unless another update began meanwhile.
            if current.spec.image == record.spec.image {
                current.rollback = None;
            }
            Ok(())
        });
        if done.is_ok_and(|current| current.rollback.is_none()) {
            info!(service = %record.spec.name, image = %record.spec.image, "rolling update done");
        }
    }
}

/// Ends a rolling update that failed: the service's image is the old one
/// again, so the new image's replicas are the ones replaced.
fn roll_back(daemon: &Daemon, record: &ServiceRecord, why: &str) {
    let services = daemon.containers().networks().services();
    let rolled = services.modify(record.owner.as_deref(), &record.spec.name, |current| {
        // Only the update this replica belongs to, and only once.
        if current.spec.image == record.spec.image {
            if let Some(image) = current.rollback.take() {
                warn!(service = %current.spec.name, from = %current.spec.image, to = %image, why, "rolling back");
                current.spec.image = image;
            }
        }
        Ok(())
    });
    if let Err(err) = rolled {
        warn!(error = %err, "cannot roll back the service");
    }
    lock(&daemon.services().failures).remove(&record.id);
}

/// Gives the balancer the replicas of `alive` that are healthy.
fn publish(daemon: &Daemon, record: &ServiceRecord, alive: &[Replica]) {
    let healthy: Vec<Ipv4Addr> = {
        let health = lock(&daemon.services().health);
        alive
            .iter()
            .filter(|r| health.get(&r.id).is_some_and(|h| h.healthy))
            .filter_map(|r| r.address)
            .collect()
    };
    daemon.services().proxies.set_backends(&record.id, &healthy);
    if let Err(err) = daemon
        .containers()
        .networks()
        .set_backends(&record.id, healthy)
    {
        warn!(service = %record.spec.name, error = %err, "cannot update the service's balancer");
    }
}

/// Probes the replicas that are due.
async fn probe(daemon: &Arc<Daemon>, record: &ServiceRecord, alive: &[Replica]) {
    let check = &record.spec.health_check;
    let now = Instant::now();
    let due: Vec<(String, Ipv4Addr)> = {
        let mut health = lock(&daemon.services().health);
        alive
            .iter()
            .filter_map(|r| Some((r.id.clone(), r.address?)))
            .filter(|(id, _)| health.entry(id.clone()).or_default().due(check, now))
            .collect()
    };
    let port = record.container_port();
    let path = check.path.as_deref();
    let outcomes = join_all(
        due.iter()
            .map(|(_, address)| health::probe(*address, port, path)),
    )
    .await;
    let mut health = lock(&daemon.services().health);
    for ((id, address), passed) in due.into_iter().zip(outcomes) {
        let passed = match own_check(daemon, &id) {
            Some(HealthStatus::Healthy) | None => passed,
            Some(HealthStatus::Unhealthy) => false,
            // Not counted either way: a slow start is no failure, but it
            // takes no traffic until its own check passes.
            Some(HealthStatus::Starting) => continue,
        };
        let entry = health.entry(id).or_default();
        if entry.record(check, passed, Instant::now()) {
            info!(service = %record.spec.name, replica = %address, healthy = entry.healthy, "replica health changed");
        }
    }
}

/// What a replica's own health check (its image's `HEALTHCHECK`, or its
/// settings') says of it, when it has one: a replica counts as healthy
/// only when both that check and the balancer's probe pass.
fn own_check(daemon: &Daemon, id: &str) -> Option<HealthStatus> {
    let container = daemon.containers().get(id).ok()?;
    container.state().health.map(|h| h.status)
}

/// Makes `count` more replicas, at once, named after the service with
/// the lowest free numbers.
async fn make(daemon: &Arc<Daemon>, record: &ServiceRecord, count: usize) {
    if let Some((when, _)) = lock(&daemon.services().failures).get(&record.id) {
        if when.elapsed() < BACKOFF {
            return;
        }
    }
    let taken: Vec<String> = daemon
        .containers()
        .list()
        .iter()
        .filter(|c| c.namespace() == record.owner)
        .map(|c| c.name())
        .collect();
    let names: Vec<String> = (1..)
        .map(|n| format!("{}-{n}", record.spec.name))
        .filter(|name| !taken.contains(name))
        .take(count)
        .collect();
    let made = join_all(names.iter().map(|name| make_one(daemon, record, name))).await;
    let failure = made.into_iter().find_map(Result::err);
    let mut failures = lock(&daemon.services().failures);
    match failure {
        Some(why) => {
            warn!(service = %record.spec.name, error = %why, "cannot make a replica");
            if record.rollback.is_some() {
                roll_back(daemon, record, &why);
            }
            failures.insert(record.id.clone(), (Instant::now(), why));
        }
        None => {
            failures.remove(&record.id);
        }
    }
}

async fn make_one(daemon: &Arc<Daemon>, record: &ServiceRecord, name: &str) -> Result<(), String> {
    let owner = record.owner.as_deref();
    let spec = &record.spec;
    let mut host = json!({ "NetworkMode": spec.network });
    if !spec.size.is_empty() {
        let size = crate::size::named(&spec.size).map_err(|e| e.to_string())?;
        host["Memory"] = json!(i64::from(size.memory_mib) << 20);
        host["NanoCpus"] = json!(i64::from(size.vcpus) * 1_000_000_000);
    }
    let mut labels =
        json!({ LABEL: record.id, IMAGE_LABEL: spec.image, "sh.hull.service.name": spec.name });
    for group in &spec.security_groups {
        labels[format!("{}{group}", hull_net::sg::LABEL_PREFIX)] = json!("yes");
    }
    let mut body = json!({
        "Image": spec.image,
        "Hostname": name,
        "Labels": labels,
        "HostConfig": host,
    });
    if !spec.cmd.is_empty() {
        body["Cmd"] = json!(spec.cmd);
    }
    let body = Bytes::from(serde_json::to_vec(&body).expect("JSON serializes"));
    let path = format!("/containers/create?name={name}");
    let (status, answer) = call(daemon, owner, Method::POST, &path, body).await;
    if status != StatusCode::CREATED {
        return Err(format!("create {name}: {}", message(&answer)));
    }
    let path = format!("/containers/{name}/start");
    let (status, answer) = call(daemon, owner, Method::POST, &path, Bytes::new()).await;
    if !status.is_success() {
        remove(daemon, owner, name).await;
        return Err(format!("start {name}: {}", message(&answer)));
    }
    info!(service = %spec.name, replica = %name, "replica started");
    Ok(())
}

/// Removes a replica, running or not.
async fn remove(daemon: &Arc<Daemon>, owner: Option<&str>, name: &str) {
    let path = format!("/containers/{name}?force=1");
    let (status, answer) = call(daemon, owner, Method::DELETE, &path, Bytes::new()).await;
    if !status.is_success() && status != StatusCode::NOT_FOUND {
        warn!(replica = %name, error = %message(&answer), "cannot remove a replica");
    }
}

fn message(answer: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer[..answer.len().min(512)]).into_owned())
}
