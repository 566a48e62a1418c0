//! hulld's proxy for the services nftables cannot carry: HTTP (each
//! request to a healthy replica, [`http`]) and TCP by the fewest open
//! connections or with affinity ([`tcp`]). A proxied service's address is
//! the host's (held on its network's bridge, see `hull_net::service`), so
//! the proxy listens on it at the service port; its rules open that port
//! to the bridge instead of translating it. Plain TCP round robin and
//! source hashing stay in nftables: a DNAT in the kernel costs a
//! connection nothing after its first packet, where a proxy copies every
//! byte through hulld, and keeps working while hulld restarts.
//! `scripts/bench-service.sh` measures both against a replica reached
//! straight, one client making a connection per request to busybox httpd
//! replicas: nftables adds about 7% to the median latency, the proxy
//! (a debug build) about 24%, some 0.2 and 0.8 ms. With eight clients
//! the three replicas behind either serve 1.2 to 1.3 times what one does
//! alone: at these rates the replicas, not the balancer, set the pace.
//!
//! Everything a client can grow is bounded ([`Limits`]): connections in
//! all and per source address, request header bytes and count, the time
//! to send a request's headers (kept-alive connections included) and
//! the idle time of a spliced connection.

pub mod http;
pub mod pool;
pub mod tcp;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hull_net::service::{Protocol, ServiceRecord};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use pool::{Lease, Pool};

/// What one service's proxy lets its clients hold.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open client connections in all.
    pub connections: usize,
    /// Open client connections from one address.
    pub per_source: usize,
    /// Bytes of a request's line and headers.
    pub header_bytes: usize,
    /// Headers of a request (or of a replica's response).
    pub headers: usize,
    /// To send a request's headers, and between requests of a kept-alive
    /// connection.
    pub header_timeout: Duration,
    /// A spliced TCP connection with no byte either way is closed.
    pub idle: Duration,
    /// To connect to a replica.
    pub connect_timeout: Duration,
    /// For a replica's response headers.
    pub response_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections: 4096,
            per_source: 64,
            header_bytes: 16 * 1024,
            headers: 64,
            header_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// What a connection is forwarded to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The service's name, for messages.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub pool: Arc<Pool>,
    pub limits: Arc<Limits>,
}

/// Admits a client's connection while it stays open.
struct Admission {
    total: Arc<Semaphore>,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_source: usize,
}

/// One admitted connection: its place given back when dropped.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    source: IpAddr,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut sources = lock(&self.sources);
        if let Some(count) = sources.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Admission {
    fn new(limits: &Limits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.connections)),
            sources: Arc::default(),
            per_source: limits.per_source,
        }
    }

    fn admit(&self, source: IpAddr) -> Option<Admitted> {
        let permit = self.total.clone().try_acquire_owned().ok()?;
        let mut sources = lock(&self.sources);
        let count = sources.entry(source).or_default();
        if *count >= self.per_source {
            return None;
        }
        *count += 1;
        Some(Admitted {
            _permit: permit,
            source,
            sources: self.sources.clone(),
        })
    }
}

/// Accepts on `listener` until dropped: the task that runs it owns every
/// connection's task, so stopping it closes them all.
pub async fn serve(listener: TcpListener, target: Target) {
    let admission = Admission::new(&target.limits);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of descriptors, most likely: let some close.
                warn!(service = %target.name, error = %err, "the proxy cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let Some(admitted) = admission.admit(peer.ip()) else {
            debug!(service = %target.name, client = %peer, "over the proxy's connection limits");
            drop(stream);
            continue;
        };
        let target = target.clone();
        connections.spawn(async move {
            let _admitted = admitted;
            handle(stream, peer, &target).await;
        });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, target: &Target) {
    let _ = stream.set_nodelay(true);
    match target.protocol {
        Protocol::Http => http::serve(stream, peer, target).await,
        Protocol::Tcp => tcp::serve(stream, peer, target).await,
    }
}

/// A proxy at work for one service.
struct Running {
    /// What it was started for: another spec is another proxy.
    key: (Ipv4Addr, u16, String),
    pool: Arc<Pool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The proxies of every proxied service, by service id.
#[derive(Default)]
pub struct Proxies {
    running: Mutex<BTreeMap<String, Running>>,
    /// Services whose listener could not bind: said once, not each tick.
    unbound: Mutex<std::collections::BTreeSet<String>>,
}

fn key(record: &ServiceRecord) -> (Ipv4Addr, u16, String) {
    let spec = &record.spec;
    (
        record.vip,
        record.service_port(),
        format!(
            "{}/{:?}/{}/{}",
            spec.protocol.as_str(),
            spec.algorithm,
            spec.session_affinity,
            spec.container_port
        ),
    )
}

impl Proxies {
    /// Starts the proxies `records` want and stops the rest. A listener
    /// that cannot bind yet (its address not on the bridge) is tried
    /// again at the next call.
    pub fn sync(&self, records: &[ServiceRecord]) {
        let mut running = lock(&self.running);
        lock(&self.unbound).retain(|id| records.iter().any(|r| r.id == *id));
        running.retain(|id, proxy| {
            records
                .iter()
                .any(|r| r.id == *id && r.spec.proxied() && key(r) == proxy.key)
        });
        for record in records.iter().filter(|r| r.spec.proxied()) {
            if running.contains_key(&record.id) {
                continue;
            }
            let address = SocketAddr::from((record.vip, record.service_port()));
            let listener = match bind(address) {
                Ok(listener) => listener,
                Err(err) => {
                    if lock(&self.unbound).insert(record.id.clone()) {
                        warn!(service = %record.spec.name, %address, error = %err, "the service's proxy cannot listen yet");
                    }
                    continue;
                }
            };
            lock(&self.unbound).remove(&record.id);
            let pool = Arc::new(Pool::new(
                record.spec.algorithm,
                record.spec.session_affinity,
            ));
            let target = Target {
                name: record.spec.name.clone(),
                protocol: record.spec.protocol,
                port: record.container_port(),
                pool: pool.clone(),
                limits: Arc::new(Limits::default()),
            };
            info!(service = %record.spec.name, %address, protocol = record.spec.protocol.as_str(), "service proxy listening");
            let task = tokio::spawn(serve(listener, target));
            running.insert(
                record.id.clone(),
                Running {
                    key: key(record),
                    pool,
                    task,
                },
            );
        }
    }

    /// The healthy replicas of service `id`, if it is proxied.
    pub fn set_backends(&self, id: &str, backends: &[Ipv4Addr]) {
        if let Some(proxy) = lock(&self.running).get(id) {
            proxy.pool.set(backends.to_vec());
        }
    }
}

/// A listener that a restarted hulld can bind again at once.
fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    #[test]
    fn admission_bounds_sources_and_the_total() {
        let limits = Limits {
            connections: 3,
            per_source: 2,
            ..Limits::default()
        };
        let admission = Admission::new(&limits);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert!(admission.admit(a).is_none(), "a third from one source");
        let _other = admission.admit(b).unwrap();
        assert!(admission.admit(b).is_none(), "a fourth in all");
        drop(first);
        assert!(admission.admit(a).is_some());
        drop(_other);
        assert!(!lock(&admission.sources).contains_key(&b));
    }
}
