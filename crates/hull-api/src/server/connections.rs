//! Who holds the tenant listener's connections, and how many.
//!
//! The listener takes a bounded number of connections in all. Within that,
//! a connection is first a stranger's, counted against its peer's address
//! until its first request authenticates (a TLS handshake and one request
//! head, each under a deadline); from then on it is that tenant's, counted
//! against the tenant, and carries that tenant's requests only. So neither
//! one address nor one tenant can hold the connections the others need.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// Connections served at once, all peers and tenants together.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections one tenant holds at once: room for a busy client's held
/// streams (`logs -f`, `events`, attach) and keep-alive connections,
/// while sixteen such tenants still leave the listener free connections.
pub const DEFAULT_MAX_PER_TENANT: usize = 64;
/// Connections one address (an IPv6 /64) holds before they authenticate:
/// a client's burst of parallel requests, or a NAT of several, passes;
/// one address cannot fill the listener with handshakes it never ends.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS: usize = 32;

/// The tenant listener's bounds on connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// All connections at once; more wait in the kernel's backlog.
    pub total: usize,
    /// One tenant's authenticated connections; a request on one past it
    /// is answered 429 and its connection closed.
    pub per_tenant: usize,
    /// One address's connections that have not authenticated yet; one
    /// past it is closed as soon as it is accepted.
    pub unauthenticated_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            total: DEFAULT_MAX_CONNECTIONS,
            per_tenant: DEFAULT_MAX_PER_TENANT,
            unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
        }
    }
}

/// Why a connection may not carry a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("too many connections: this tenant already holds {limit}, the most one tenant may hold at once on this host; close some (finished `logs -f`, `events` or attach streams, idle keep-alive connections) or retry when one ends")]
    TenantFull { limit: usize },
    #[error("this connection carries another tenant's requests: open a connection of its own for each tenant's key")]
    OtherTenant,
}

impl ConnectionError {
    /// The limit it met, as the metrics name it.
    pub fn limit(&self) -> &'static str {
        match self {
            ConnectionError::TenantFull { .. } => "tenant",
            ConnectionError::OtherTenant => "other_tenant",
        }
    }
}

/// The tenant listener's connections, counted per address and per tenant.
pub struct Connections {
    limits: ConnectionLimits,
    addresses: Counter<IpAddr>,
    tenants: Counter<String>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            addresses: Counter::default(),
            tenants: Counter::default(),
        }
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// The slot of a connection just accepted from `peer`, counted against
    /// its address until it authenticates; `None` if that address already
    /// holds its limit of strangers' connections.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Connection> {
        let held = self
            .addresses
            .take(address_key(peer), self.limits.unauthenticated_per_address)?;
        Some(Connection {
            connections: self.clone(),
            holder: Mutex::new(Holder::Stranger { _slot: held }),
        })
    }
}

/// One connection's slot: its address's while it is a stranger's, then,
/// from its first authenticated request on, its tenant's for good.
pub struct Connection {
    connections: Arc<Connections>,
    holder: Mutex<Holder>,
}

enum Holder {
    Stranger { _slot: Held<IpAddr> },
    Tenant(Held<String>),
}

impl Connection {
    /// Lets `tenant`'s request through: the first one makes the connection
    /// the tenant's, if the tenant has a connection to spare; later ones
    /// must be that tenant's.
    pub fn claim(&self, tenant: &str) -> Result<(), ConnectionError> {
        let mut holder = self
            .holder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &*holder {
            Holder::Tenant(held) if held.key == tenant => Ok(()),
            Holder::Tenant(_) => Err(ConnectionError::OtherTenant),
            Holder::Stranger { .. } => {
                let limit = self.connections.limits.per_tenant;
                let held = self
                    .connections
                    .tenants
                    .take(tenant.to_owned(), limit)
                    .ok_or(ConnectionError::TenantFull { limit })?;
                // The address's slot goes back as the tenant's is taken.
                *holder = Holder::Tenant(held);
                Ok(())
            }
        }
    }

    /// Whether a request on it has authenticated yet.
    pub fn authenticated(&self) -> bool {
        matches!(
            *self
                .holder
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Holder::Tenant(_)
        )
    }
}

/// A connection's stream with its slots, which go back when the stream is
/// dropped: also when an upgrade (attach, exec) has taken the stream over
/// from hyper, whose connection (and its service) ends at the upgrade.
pub struct Counted<S> {
    stream: S,
    _connection: Arc<Connection>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Counted<S> {
    /// `stream`, holding `connection`'s slot and `permit`, its place among
    /// all connections.
    pub fn new(stream: S, connection: Arc<Connection>, permit: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            _connection: connection,
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The address a peer's connections are counted under: an IPv6 peer's
/// /64, since one host commonly holds a whole /64; an IPv4 peer's own,
/// also when it comes as an IPv4-mapped IPv6 address.
fn address_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Counts held per key, each up to a limit given at each take. A key's
/// entry goes with its last holder, so keys seen once (addresses) do not
/// pile up.
struct Counter<K: Eq + Hash + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> Default for Counter<K> {
    fn default() -> Self {
        Self {
            counts: Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> Counter<K> {
    /// One more for `key`, while the result is held; `None` at `limit`.
    fn take(&self, key: K, limit: usize) -> Option<Held<K>> {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(key.clone()).or_default();
        if *count >= limit {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(Held {
            counts: self.counts.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn count(&self, key: &K) -> Option<usize> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .copied()
    }
}

/// One of a key's counts, given back when dropped.
struct Held<K: Eq + Hash> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn connections(per_tenant: usize, per_address: usize) -> Arc<Connections> {
        Arc::new(Connections::new(ConnectionLimits {
            total: 100,
            per_tenant,
            unauthenticated_per_address: per_address,
        }))
    }

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn an_address_holds_a_bounded_number_of_strangers_connections() {
        let connections = connections(10, 2);
        let first = connections.admit(HOME).expect("a first");
        let second = connections.admit(HOME).expect("a second");
        assert!(connections.admit(HOME).is_none(), "past the bound");
        assert!(connections.admit(AWAY).is_some(), "another address's own");
        drop(first);
        let third = connections.admit(HOME).expect("a slot comes back");
        drop((second, third));
        assert_eq!(connections.addresses.count(&HOME), None, "forgotten");
    }

    #[test]
    fn an_authenticated_connection_moves_from_its_address_to_its_tenant() {
        let connections = connections(2, 1);
        let first = connections.admit(HOME).unwrap();
        assert!(connections.admit(HOME).is_none());
        assert!(!first.authenticated());
        first.claim("acme").unwrap();
        assert!(first.authenticated());
        // The address may bring its next stranger.
        let second = connections.admit(HOME).expect("the address's slot is free");
        second.claim("acme").unwrap();
        let third = connections.admit(HOME).unwrap();
        assert_eq!(
            third.claim("acme"),
            Err(ConnectionError::TenantFull { limit: 2 })
        );
        assert!(
            !third.authenticated(),
            "a refused claim leaves it a stranger"
        );
        assert!(
            connections.admit(AWAY).unwrap().claim("beta").is_ok(),
            "another tenant is not held back"
        );
        drop(first);
        third.claim("acme").expect("the tenant's slot comes back");
        drop((second, third));
        assert_eq!(connections.tenants.count(&"acme".to_owned()), None);
        assert_eq!(connections.addresses.count(&HOME), None);
    }

    #[test]
    fn a_connection_carries_one_tenants_requests_only() {
        let connections = connections(5, 5);
        let connection = connections.admit(HOME).unwrap();
        connection.claim("acme").unwrap();
        connection.claim("acme").expect("its own tenant again");
        assert_eq!(connection.claim("beta"), Err(ConnectionError::OtherTenant));
        assert_eq!(connections.tenants.count(&"beta".to_owned()), None);
        assert_eq!(connections.tenants.count(&"acme".to_owned()), Some(1));
    }

    #[test]
    fn an_ipv6_peer_is_counted_by_its_64_and_a_mapped_ipv4_one_by_its_own() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(one), address_key(same));
        assert_ne!(address_key(one), address_key(other));
        assert_eq!(
            address_key(one),
            IpAddr::V6("2001:db8:1:2::".parse::<Ipv6Addr>().unwrap())
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(address_key(mapped), HOME);
        let connections = connections(5, 1);
        let _held = connections.admit(one).unwrap();
        assert!(connections.admit(same).is_none(), "the same /64");
        assert!(connections.admit(other).is_some());
    }

    #[test]
    fn a_limit_of_zero_admits_nothing_and_keeps_nothing() {
        let connections = connections(0, 0);
        assert!(connections.admit(HOME).is_none());
        assert_eq!(connections.addresses.count(&HOME), None);
    }
}
