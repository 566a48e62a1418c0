//! The resolver on each bridge network's gateway: it answers the names of
//! the network's containers itself and forwards every other query to the
//! host's name servers, as docker's embedded DNS does. All forwarded
//! queries share one upstream socket; each gets an id of the resolver's
//! own, so that a reply reaches only the client whose question it answers,
//! and the queries in flight are bounded, in all and per client. Only
//! the network's own addresses are answered: a query with any other source
//! would have its answer (or its forwarded reply) sent to whoever that
//! source names.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::dns::{self, Lookup, Question, CLASS_IN, HEADER_LEN};
use crate::store::Subnet;

/// A query is at most this long; longer ones are not DNS over UDP.
const MAX_QUERY: usize = 4096;

/// How many forwarded queries may wait for an upstream at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub in_flight: usize,
    /// From one client address, so that one container cannot take all.
    pub per_client: usize,
    /// How long each upstream has to answer before the next is asked.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            in_flight: 256,
            per_client: 64,
            timeout: Duration::from_secs(2),
        }
    }
}

/// What the resolver did, for logs and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub forwarded: AtomicU64,
    /// Queries dropped because too many were in flight.
    pub dropped: AtomicU64,
    /// Queries dropped because their source is not on the network.
    pub strangers: AtomicU64,
}

/// A forwarded query waiting for its upstream.
struct Pending {
    client: SocketAddr,
    client_id: [u8; 2],
    /// The client's query, with the resolver's id in it.
    query: Vec<u8>,
    question_end: usize,
    /// Which upstream was asked.
    upstream: usize,
    deadline: Instant,
}

/// Serves DNS on `socket` to the addresses of `clients` until the task is
/// aborted; with no `upstreams`, names not on the network are refused.
pub async fn serve(socket: UdpSocket, clients: Subnet, lookup: Lookup, upstreams: Vec<SocketAddr>) {
    let limits = Limits::default();
    serve_with(socket, clients, lookup, upstreams, limits, Arc::default()).await
}

pub async fn serve_with(
    socket: UdpSocket,
    clients: Subnet,
    lookup: Lookup,
    upstreams: Vec<SocketAddr>,
    limits: Limits,
    counters: Arc<Counters>,
) {
    let mut forwarder = Forwarder {
        socket: None,
        upstreams,
        network: clients,
        pending: HashMap::new(),
        clients: HashMap::new(),
        limits,
        counters,
        random: Vec::new(),
    };
    if !forwarder.upstreams.is_empty() {
        forwarder.socket = upstream_socket().await;
    }
    let mut query = vec![0u8; MAX_QUERY];
    // Replies may be as large as a datagram can be.
    let mut reply = vec![0u8; 65_535];
    loop {
        let deadline = forwarder.next_deadline();
        tokio::select! {
            received = socket.recv_from(&mut query) => match received {
                Ok((len, peer)) => forwarder.query(&socket, &lookup, &query[..len], peer).await,
                Err(err) => {
                    warn!(error = %err, "the network's DNS socket failed");
                    return;
                }
            },
            received = recv(forwarder.socket.as_ref(), &mut reply) => {
                if let Ok((len, from)) = received {
                    forwarder.reply(&socket, &mut reply[..len], from).await;
                }
            },
            () = sleep_until(deadline) => forwarder.expire(&socket).await,
        }
    }
}

async fn recv(
    socket: Option<&UdpSocket>,
    buffer: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buffer).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One socket for every upstream: IPv6 with IPv4-mapped addresses where the
/// host has IPv6, IPv4 otherwise.
async fn upstream_socket() -> Option<UdpSocket> {
    let v6 = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).await;
    match v6 {
        Ok(socket) => Some(socket),
        Err(_) => match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
            Ok(socket) => Some(socket),
            Err(err) => {
                warn!(error = %err, "the network's resolver cannot open a socket to the host's name servers; it answers only the network's names");
                None
            }
        },
    }
}

struct Forwarder {
    socket: Option<UdpSocket>,
    upstreams: Vec<SocketAddr>,
    /// The addresses whose queries are answered.
    network: Subnet,
    /// By the resolver's id.
    pending: HashMap<u16, Pending>,
    /// Queries in flight by client address.
    clients: HashMap<IpAddr, usize>,
    limits: Limits,
    counters: Arc<Counters>,
    /// Unused random bytes for ids.
    random: Vec<u8>,
}

impl Forwarder {
    async fn query(&mut self, socket: &UdpSocket, lookup: &Lookup, query: &[u8], peer: SocketAddr) {
        if !self.on_network(peer) {
            // Dropped unanswered, as the firewall drops it before: a reply
            // to a forged source is a reflection at whoever it names.
            let strangers = self.counters.strangers.fetch_add(1, Ordering::Relaxed) + 1;
            if strangers.is_power_of_two() {
                warn!(client = %peer, strangers, "dropping DNS queries from outside the network");
            }
            return;
        }
        if query.len() < HEADER_LEN {
            return;
        }
        let Some(question) = dns::parse_query(query) else {
            let _ = socket
                .send_to(&dns::failure(query, None, dns::RCODE_FORMERR), peer)
                .await;
            return;
        };
        if question.qclass == CLASS_IN {
            let client = match peer.ip() {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            };
            if let Some(address) = lookup(&question.name, client) {
                debug!(name = %question.name, %address, "answered from the network");
                let _ = socket
                    .send_to(&dns::answer(query, &question, address), peer)
                    .await;
                return;
            }
        }
        if self.socket.is_none() {
            let _ = socket
                .send_to(
                    &dns::failure(query, Some(&question), dns::RCODE_REFUSED),
                    peer,
                )
                .await;
            return;
        }
        let from_client = self.clients.get(&peer.ip()).copied().unwrap_or(0);
        if self.pending.len() >= self.limits.in_flight || from_client >= self.limits.per_client {
            // Dropped, not answered: a flood gets no flood back, and the
            // client's own retry comes when the load has passed.
            let dropped = self.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(client = %peer, dropped, "too many DNS queries in flight; dropping");
            }
            return;
        }
        self.forward(peer, query, &question, 0).await;
    }

    /// Sends the query to upstream `upstream` under a fresh id.
    async fn forward(
        &mut self,
        client: SocketAddr,
        query: &[u8],
        question: &Question,
        upstream: usize,
    ) {
        let id = self.free_id();
        let mut ours = query.to_vec();
        let client_id = [ours[0], ours[1]];
        ours[..2].copy_from_slice(&id.to_be_bytes());
        let to = self.destination(upstream);
        if let Some(socket) = &self.socket {
            // A failed send is retried by the timeout, at the next upstream.
            let _ = socket.send_to(&ours, to).await;
        }
        self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
        *self.clients.entry(client.ip()).or_default() += 1;
        self.pending.insert(
            id,
            Pending {
                client,
                client_id,
                query: ours,
                question_end: question.end,
                upstream,
                deadline: Instant::now() + self.limits.timeout,
            },
        );
    }

    /// An upstream's reply, relayed to its client under the client's id if
    /// it is the reply of the upstream asked, to the question asked.
    async fn reply(&mut self, socket: &UdpSocket, reply: &mut [u8], from: SocketAddr) {
        if reply.len() < HEADER_LEN {
            return;
        }
        let id = u16::from_be_bytes([reply[0], reply[1]]);
        let Some(pending) = self.pending.get(&id) else {
            return;
        };
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        if from != self.upstreams[pending.upstream]
            || !dns::answers(reply, &pending.query, pending.question_end)
        {
            return;
        }
        let pending = self.finish(id);
        reply[..2].copy_from_slice(&pending.client_id);
        let _ = socket.send_to(reply, pending.client).await;
    }

    /// Queries whose upstream did not answer in time go to the next one,
    /// or fail once every upstream was asked.
    async fn expire(&mut self, socket: &UdpSocket) {
        let now = Instant::now();
        let expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let mut pending = self.finish(id);
            pending.query[..2].copy_from_slice(&pending.client_id);
            let Some(question) = dns::parse_query(&pending.query) else {
                continue;
            };
            let next = pending.upstream + 1;
            if next < self.upstreams.len() {
                self.forward(pending.client, &pending.query, &question, next)
                    .await;
            } else {
                let failed = dns::failure(&pending.query, Some(&question), dns::RCODE_SERVFAIL);
                let _ = socket.send_to(&failed, pending.client).await;
            }
        }
    }

    fn finish(&mut self, id: u16) -> Pending {
        let pending = self.pending.remove(&id).expect("a pending query");
        if let Some(count) = self.clients.get_mut(&pending.client.ip()) {
            *count -= 1;
            if *count == 0 {
                self.clients.remove(&pending.client.ip());
            }
        }
        pending
    }

    fn on_network(&self, peer: SocketAddr) -> bool {
        match peer.ip().to_canonical() {
            IpAddr::V4(address) => self.network.contains(address),
            IpAddr::V6(_) => false,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    /// An unpredictable id that no query in flight has.
    fn free_id(&mut self) -> u16 {
        loop {
            if self.random.len() < 2 {
                self.random = crate::records::random_bytes::<256>().to_vec();
            }
            let id = u16::from_be_bytes([self.random[0], self.random[1]]);
            self.random.drain(..2);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Upstream `index` as the upstream socket addresses it.
    fn destination(&self, index: usize) -> SocketAddr {
        let upstream = self.upstreams[index];
        match (
            upstream,
            self.socket.as_ref().and_then(|s| s.local_addr().ok()),
        ) {
            (SocketAddr::V4(v4), Some(SocketAddr::V6(_))) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => upstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type A, with recursion desired.
    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut message = id.to_be_bytes().to_vec();
        message.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.extend_from_slice(&[0, 0, 1, 0, 1]);
        message
    }

    fn rcode(reply: &[u8]) -> u8 {
        reply[3] & 0x0f
    }

    struct Server {
        address: SocketAddr,
        counters: Arc<Counters>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn start(upstreams: Vec<SocketAddr>, limits: Limits) -> Server {
        start_for("127.0.0.0/8".parse().unwrap(), upstreams, limits).await
    }

    async fn start_for(clients: Subnet, upstreams: Vec<SocketAddr>, limits: Limits) -> Server {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let lookup: Lookup =
            Arc::new(|name: &str, _| (name == "db").then_some(Ipv4Addr::new(10, 0, 0, 9)));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(serve_with(
            socket,
            clients,
            lookup,
            upstreams,
            limits,
            counters.clone(),
        ));
        Server {
            address,
            counters,
            task,
        }
    }

    async fn ask(client: &UdpSocket, server: SocketAddr, message: &[u8]) -> Vec<u8> {
        client.send_to(message, server).await.unwrap();
        let mut buffer = vec![0u8; 512];
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .expect("an answer")
            .unwrap();
        buffer.truncate(len);
        buffer
    }

    #[tokio::test]
    async fn names_are_answered_and_others_refused_without_upstreams() {
        let server = start(Vec::new(), Limits::default()).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reply = ask(&client, server.address, &query(7, "db")).await;
        assert_eq!(&reply[reply.len() - 4..], &[10, 0, 0, 9]);
        let reply = ask(&client, server.address, &query(8, "elsewhere")).await;
        assert_eq!(rcode(&reply), dns::RCODE_REFUSED);
        assert_eq!(&reply[..2], &8u16.to_be_bytes());
        assert_eq!(server.counters.forwarded.load(Ordering::Relaxed), 0);
        server.task.abort();
    }

    /// An upstream that records what it is asked and answers each query
    /// with its id and question, or holds its answers until released.
    async fn upstream() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        (socket, address)
    }

    async fn upstream_receives(upstream: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buffer = vec![0u8; 512];
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buffer))
                .await
                .expect("a forwarded query")
                .unwrap();
        buffer.truncate(len);
        (buffer, from)
    }

    fn reply_to(query: &[u8], last_octet: u8) -> Vec<u8> {
        let mut reply = query.to_vec();
        reply[2] |= 0x80;
        reply[7] = 1;
        reply.extend_from_slice(&[
            0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, last_octet,
        ]);
        reply
    }

    #[tokio::test]
    async fn forwarded_queries_share_one_socket_under_ids_of_their_own() {
        let (upstream, upstream_address) = upstream().await;
        let server = start(vec![upstream_address], Limits::default()).await;
        let (a, b) = (
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        );
        // Both clients use the same id for different names.
        a.send_to(&query(1, "a.example"), server.address)
            .await
            .unwrap();
        let (to_a, from_a) = upstream_receives(&upstream).await;
        b.send_to(&query(1, "b.example"), server.address)
            .await
            .unwrap();
        let (to_b, from_b) = upstream_receives(&upstream).await;
        assert_eq!(from_a, from_b, "one upstream socket");
        assert_ne!(to_a[..2], to_b[..2], "ids of the resolver's own");

        // A reply with b's id but a's question reaches nobody.
        let mut crossed = reply_to(&to_a, 66);
        crossed[..2].copy_from_slice(&to_b[..2]);
        upstream.send_to(&crossed, from_b).await.unwrap();
        // The true replies, b's first, each reach their own client.
        upstream.send_to(&reply_to(&to_b, 2), from_b).await.unwrap();
        upstream.send_to(&reply_to(&to_a, 1), from_a).await.unwrap();
        let mut buffer = [0u8; 512];
        let len = b.recv(&mut buffer).await.unwrap();
        assert_eq!(&buffer[..2], &1u16.to_be_bytes(), "b's own id");
        assert_eq!(&buffer[len - 4..len], &[192, 0, 2, 2]);
        let len = a.recv(&mut buffer).await.unwrap();
        assert_eq!(&buffer[len - 4..len], &[192, 0, 2, 1]);
        server.task.abort();
    }

    #[tokio::test]
    async fn queries_past_the_bound_are_dropped_and_counted() {
        let (upstream, upstream_address) = upstream().await;
        let limits = Limits {
            in_flight: 4,
            per_client: 3,
            timeout: Duration::from_secs(30),
        };
        let server = start(vec![upstream_address], limits).await;
        let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for id in 0..10 {
            flood
                .send_to(&query(id, "flood.example"), server.address)
                .await
                .unwrap();
        }
        for _ in 0..3 {
            upstream_receives(&upstream).await;
        }
        // Another client still gets its one place, and the last place.
        let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        other
            .send_to(&query(1, "other.example"), server.address)
            .await
            .unwrap();
        let (forwarded, from) = upstream_receives(&upstream).await;
        assert!(forwarded.ends_with(b"\x05other\x07example\x00\x00\x01\x00\x01"));
        other
            .send_to(&query(2, "more.example"), server.address)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(server.counters.forwarded.load(Ordering::Relaxed), 4);
        assert_eq!(server.counters.dropped.load(Ordering::Relaxed), 8);
        // A place freed by an answer is taken again.
        upstream
            .send_to(&reply_to(&forwarded, 3), from)
            .await
            .unwrap();
        let mut buffer = [0u8; 512];
        other.recv(&mut buffer).await.unwrap();
        other
            .send_to(&query(3, "again.example"), server.address)
            .await
            .unwrap();
        upstream_receives(&upstream).await;
        server.task.abort();
    }

    #[tokio::test]
    async fn a_silent_upstream_passes_the_query_on_then_fails_it() {
        let (silent, silent_address) = upstream().await;
        let (second, second_address) = upstream().await;
        let limits = Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let server = start(vec![silent_address, second_address], limits).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(&query(9, "slow.example"), server.address)
            .await
            .unwrap();
        upstream_receives(&silent).await;
        upstream_receives(&second).await;
        let mut buffer = [0u8; 512];
        let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rcode(&buffer[..len]), dns::RCODE_SERVFAIL);
        assert_eq!(&buffer[..2], &9u16.to_be_bytes());
        server.task.abort();
    }

    #[tokio::test]
    async fn queries_from_outside_the_network_get_no_answer() {
        let (upstream, upstream_address) = upstream().await;
        let network = "127.0.0.0/29".parse().unwrap();
        let server = start_for(network, vec![upstream_address], Limits::default()).await;
        let stranger = UdpSocket::bind("127.0.0.9:0").await.unwrap();
        for message in [query(1, "db"), query(2, "far.example"), vec![0; 3]] {
            stranger.send_to(&message, server.address).await.unwrap();
        }
        // A neighbour on the network is answered, after the stranger's
        // queries: had they been answered, their replies came first.
        let neighbour = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let reply = ask(&neighbour, server.address, &query(3, "db")).await;
        assert_eq!(&reply[reply.len() - 4..], &[10, 0, 0, 9]);
        let mut buffer = [0u8; 512];
        let silence =
            tokio::time::timeout(Duration::from_millis(300), stranger.recv(&mut buffer)).await;
        assert!(silence.is_err(), "a stranger was answered");
        assert_eq!(server.counters.strangers.load(Ordering::Relaxed), 3);
        assert_eq!(server.counters.forwarded.load(Ordering::Relaxed), 0);
        let mut nothing = [0u8; 512];
        let asked =
            tokio::time::timeout(Duration::from_millis(100), upstream.recv(&mut nothing)).await;
        assert!(asked.is_err(), "a stranger's query was forwarded");
        server.task.abort();
    }
}
