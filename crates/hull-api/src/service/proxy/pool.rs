//! Which replica takes a proxied service's next connection or request:
//! the healthy replicas the service task reports, each with a count of
//! what it has open, chosen round robin, by the client's address, or by
//! the fewest open; with affinity, a client keeps the replica it was given
//! while that replica stays healthy. Nothing here touches the network.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hull_net::service::Algorithm;

/// Clients remembered for affinity: past it the table starts again, so a
/// client that cycles through source addresses cannot grow it.
const MAX_AFFINITY: usize = 16 * 1024;

#[derive(Debug)]
struct Backend {
    address: Ipv4Addr,
    /// Connections (TCP) or requests in flight (HTTP).
    open: Arc<AtomicUsize>,
}

/// One service's replicas as its proxy sees them.
#[derive(Debug)]
pub struct Pool {
    algorithm: Algorithm,
    affinity: bool,
    backends: Mutex<Vec<Backend>>,
    next: AtomicUsize,
    sticky: Mutex<HashMap<IpAddr, Ipv4Addr>>,
}

/// A replica chosen for one connection or request: counted open until
/// dropped.
#[derive(Debug)]
pub struct Lease {
    pub address: Ipv4Addr,
    open: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new(algorithm: Algorithm, affinity: bool) -> Self {
        Self {
            algorithm,
            affinity,
            backends: Mutex::default(),
            next: AtomicUsize::new(0),
            sticky: Mutex::default(),
        }
    }

    /// The healthy replicas now. A replica that stays keeps its count;
    /// one that left is forgotten by the clients that stuck to it.
    pub fn set(&self, mut addresses: Vec<Ipv4Addr>) {
        addresses.sort();
        addresses.dedup();
        let mut backends = lock(&self.backends);
        if backends
            .iter()
            .map(|b| b.address)
            .eq(addresses.iter().copied())
        {
            return;
        }
        let old = std::mem::take(&mut *backends);
        *backends = addresses
            .iter()
            .map(|&address| Backend {
                address,
                open: old
                    .iter()
                    .find(|b| b.address == address)
                    .map_or_else(Arc::default, |b| b.open.clone()),
            })
            .collect();
        lock(&self.sticky).retain(|_, a| addresses.contains(a));
    }

    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        lock(&self.backends).iter().map(|b| b.address).collect()
    }

    /// What each replica has open, by address.
    pub fn open(&self) -> Vec<(Ipv4Addr, usize)> {
        lock(&self.backends)
            .iter()
            .map(|b| (b.address, b.open.load(Ordering::Acquire)))
            .collect()
    }

    /// The replica for `client`'s next connection or request; `None`
    /// while none is healthy.
    pub fn pick(&self, client: IpAddr) -> Option<Lease> {
        let backends = lock(&self.backends);
        if backends.is_empty() {
            return None;
        }
        let stuck = self
            .affinity
            .then(|| lock(&self.sticky).get(&client).copied())
            .flatten()
            .and_then(|a| backends.iter().position(|b| b.address == a));
        let index = stuck.unwrap_or_else(|| self.choose(&backends, client));
        let backend = &backends[index];
        if self.affinity && stuck.is_none() {
            let mut sticky = lock(&self.sticky);
            if sticky.len() >= MAX_AFFINITY {
                sticky.clear();
            }
            sticky.insert(client, backend.address);
        }
        backend.open.fetch_add(1, Ordering::AcqRel);
        Some(Lease {
            address: backend.address,
            open: backend.open.clone(),
        })
    }

    fn choose(&self, backends: &[Backend], client: IpAddr) -> usize {
        let count = backends.len();
        match self.algorithm {
            Algorithm::Roundrobin => self.next.fetch_add(1, Ordering::Relaxed) % count,
            Algorithm::Source => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                client.hash(&mut hasher);
                usize::try_from(hasher.finish() % count as u64).unwrap_or(0)
            }
            // Ties go round, so that idle replicas share the load.
            Algorithm::Leastconn => {
                let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
                (0..count)
                    .map(|i| (start + i) % count)
                    .min_by_key(|&i| backends[i].open.load(Ordering::Acquire))
                    .unwrap_or(start)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect()
    }

    fn client(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 168, 0, n))
    }

    #[test]
    fn round_robin_goes_round_and_nothing_healthy_picks_nothing() {
        let pool = Pool::new(Algorithm::Roundrobin, false);
        assert!(pool.pick(client(1)).is_none());
        pool.set(addresses(3));
        let picked: Vec<Ipv4Addr> = (0..6)
            .map(|_| pool.pick(client(1)).unwrap().address)
            .collect();
        for address in addresses(3) {
            assert_eq!(picked.iter().filter(|a| **a == address).count(), 2);
        }
    }

    #[test]
    fn leastconn_prefers_the_idle_and_counts_until_the_lease_goes() {
        let pool = Pool::new(Algorithm::Leastconn, false);
        pool.set(addresses(2));
        let held = pool.pick(client(1)).unwrap();
        for _ in 0..5 {
            let other = pool.pick(client(2)).unwrap();
            assert_ne!(other.address, held.address);
        }
        let busy = held.address;
        let second = pool.pick(client(3)).unwrap();
        assert_ne!(second.address, busy);
        // Both hold one now: ties go round.
        let next: Vec<Ipv4Addr> = (0..4)
            .map(|_| pool.pick(client(4)).unwrap().address)
            .collect();
        assert!(next.contains(&addresses(2)[0]) && next.contains(&addresses(2)[1]));
        drop(held);
        assert!(pool.open().iter().any(|(a, open)| *a == busy && *open == 0));
        // A replica that stays healthy keeps its count through a change.
        pool.set(addresses(3));
        assert!(pool
            .open()
            .iter()
            .any(|(a, open)| *a == second.address && *open == 1));
    }

    #[test]
    fn affinity_holds_while_healthy_and_moves_when_not() {
        let pool = Pool::new(Algorithm::Roundrobin, true);
        pool.set(addresses(3));
        let first = pool.pick(client(1)).unwrap().address;
        for _ in 0..10 {
            assert_eq!(pool.pick(client(1)).unwrap().address, first);
        }
        let others: Vec<Ipv4Addr> = addresses(3).into_iter().filter(|a| *a != first).collect();
        pool.set(others.clone());
        let moved = pool.pick(client(1)).unwrap().address;
        assert!(others.contains(&moved));
        // Back healthy, the client stays where it moved.
        pool.set(addresses(3));
        assert_eq!(pool.pick(client(1)).unwrap().address, moved);
        // Many clients do not grow the table past its bound.
        for i in 0..(MAX_AFFINITY + 10) {
            let octets = u32::try_from(i).unwrap().to_be_bytes();
            pool.pick(IpAddr::V4(Ipv4Addr::from(octets)));
        }
        assert!(lock(&pool.sticky).len() <= MAX_AFFINITY);
    }

    #[test]
    fn source_keeps_a_client_on_one_replica() {
        let pool = Pool::new(Algorithm::Source, false);
        pool.set(addresses(3));
        let first = pool.pick(client(7)).unwrap().address;
        assert!((0..10).all(|_| pool.pick(client(7)).unwrap().address == first));
    }
}
