//! The resolver on each bridge network's gateway: it answers the names of
//! the network's containers itself and forwards every other query to the
//! host's name servers, as docker's embedded DNS does.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_SERVFAIL: u8 = 2;
/// How long containers may cache an answer; docker's too.
const TTL_SECONDS: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The one question of a query.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question ends in the message.
    end: usize,
}

/// The question of a standard query, or `None` for what is not one.
pub fn parse_query(message: &[u8]) -> Option<Question> {
    if message.len() < HEADER_LEN {
        return None;
    }
    let flags = u16::from_be_bytes([message[2], message[3]]);
    let is_response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let questions = u16::from_be_bytes([message[4], message[5]]);
    if is_response || opcode != 0 || questions != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = HEADER_LEN;
    loop {
        let len = usize::from(*message.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // Questions are not compressed; a pointer here is malformed.
        if len > 63 {
            return None;
        }
        let label = message.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += len;
        if at > 255 + HEADER_LEN {
            return None;
        }
    }
    let fixed = message.get(at..at + 4)?;
    Some(Question {
        name: labels.join("."),
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        end: at + 4,
    })
}

/// The answer to `query` (whose question is `question`): `address` for an
/// A query, and no records otherwise, since the name exists.
pub fn answer(query: &[u8], question: &Question, address: Ipv4Addr) -> Vec<u8> {
    let with_record = question.qtype == TYPE_A || question.qtype == TYPE_ANY;
    let mut reply = header(query, 0, with_record);
    reply.extend_from_slice(&query[HEADER_LEN..question.end]);
    if with_record {
        // The name is a pointer to the question's, at the header's end.
        reply.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&TTL_SECONDS.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&address.octets());
    }
    reply
}

/// An answer with only an error code, and the question if there is one.
pub fn failure(query: &[u8], question: Option<&Question>, rcode: u8) -> Vec<u8> {
    let mut reply = header(query, rcode, false);
    match question {
        Some(question) => reply.extend_from_slice(&query[HEADER_LEN..question.end]),
        None => reply[4..6].copy_from_slice(&0u16.to_be_bytes()),
    }
    reply
}

fn header(query: &[u8], rcode: u8, with_record: bool) -> Vec<u8> {
    let recursion_desired = query[2] & 0x01;
    let mut header = vec![0u8; HEADER_LEN];
    header[..2].copy_from_slice(&query[..2]);
    // A response, authoritative, recursion available.
    header[2] = 0x80 | 0x04 | recursion_desired;
    header[3] = 0x80 | (rcode & 0x0f);
    header[4..6].copy_from_slice(&1u16.to_be_bytes());
    header[6..8].copy_from_slice(&u16::from(with_record).to_be_bytes());
    header
}

/// The name servers in the host's `/etc/resolv.conf`.
pub fn host_name_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|address| address.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Names on one network, as the server looks them up.
pub type Lookup = Arc<dyn Fn(&str) -> Option<Ipv4Addr> + Send + Sync>;

/// Serves DNS on `socket` until the task is aborted.
pub async fn serve(socket: UdpSocket, lookup: Lookup, upstreams: Vec<SocketAddr>) {
    let socket = Arc::new(socket);
    let mut buffer = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(err) => {
                warn!(error = %err, "the network's DNS socket failed");
                return;
            }
        };
        let query = buffer[..len].to_vec();
        if query.len() < HEADER_LEN {
            continue;
        }
        let Some(question) = parse_query(&query) else {
            let _ = socket
                .send_to(&failure(&query, None, RCODE_FORMERR), peer)
                .await;
            continue;
        };
        if question.qclass == CLASS_IN {
            if let Some(address) = lookup(&question.name) {
                debug!(name = %question.name, %address, "answered from the network");
                let _ = socket
                    .send_to(&answer(&query, &question, address), peer)
                    .await;
                continue;
            }
        }
        let socket = socket.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let reply = match forward(&query, &upstreams).await {
                Some(reply) => reply,
                None => failure(&query, Some(&question), RCODE_SERVFAIL),
            };
            let _ = socket.send_to(&reply, peer).await;
        });
    }
}

/// The first answer an upstream gives, trying each in turn.
async fn forward(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(socket) = UdpSocket::bind(bind).await else {
            continue;
        };
        if socket.send_to(query, upstream).await.is_err() {
            continue;
        }
        let mut buffer = vec![0u8; 4096];
        let received = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let (len, from) = socket.recv_from(&mut buffer).await.ok()?;
                // Only the upstream's answer to this query.
                if from == *upstream && len >= 2 && buffer[..2] == query[..2] {
                    return Some(len);
                }
            }
        })
        .await;
        if let Ok(Some(len)) = received {
            buffer.truncate(len);
            return Some(buffer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype`, with recursion desired.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.push(0);
        message.extend_from_slice(&qtype.to_be_bytes());
        message.extend_from_slice(&CLASS_IN.to_be_bytes());
        message
    }

    #[test]
    fn queries_are_parsed() {
        let question = parse_query(&query("db.example", TYPE_A)).unwrap();
        assert_eq!(question.name, "db.example");
        assert_eq!(question.qtype, TYPE_A);
        assert_eq!(question.qclass, CLASS_IN);
        let mut response = query("db", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), None);
        assert_eq!(parse_query(&query("db", TYPE_A)[..14]), None);
        let mut pointer = query("db", TYPE_A);
        pointer[12] = 0xc0;
        assert_eq!(parse_query(&pointer), None);
    }

    #[test]
    fn answers_carry_the_address_for_a_queries_only() {
        let q = query("db", TYPE_A);
        let question = parse_query(&q).unwrap();
        let reply = answer(&q, &question, Ipv4Addr::new(10, 89, 1, 2));
        assert_eq!(&reply[..2], &[0x12, 0x34], "the query's id");
        assert_eq!(reply[2] & 0x80, 0x80, "a response");
        assert_eq!(reply[3] & 0x0f, 0, "no error");
        assert_eq!(&reply[6..8], &[0, 1], "one answer");
        assert_eq!(&reply[reply.len() - 4..], &[10, 89, 1, 2]);

        let q = query("db", 28);
        let question = parse_query(&q).unwrap();
        let reply = answer(&q, &question, Ipv4Addr::new(10, 89, 1, 2));
        assert_eq!(&reply[6..8], &[0, 0], "no AAAA record");
        assert_eq!(reply.len(), q.len());

        let failed = failure(&q, Some(&question), RCODE_SERVFAIL);
        assert_eq!(failed[3] & 0x0f, RCODE_SERVFAIL);
    }

    #[tokio::test]
    async fn the_server_answers_names_and_fails_others_without_upstreams() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let lookup: Lookup =
            Arc::new(|name: &str| (name == "db").then_some(Ipv4Addr::new(10, 0, 0, 9)));
        let server = tokio::spawn(serve(socket, lookup, Vec::new()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buffer = [0u8; 512];
        client.send_to(&query("db", TYPE_A), address).await.unwrap();
        let len = client.recv(&mut buffer).await.unwrap();
        assert_eq!(&buffer[len - 4..len], &[10, 0, 0, 9]);
        client
            .send_to(&query("elsewhere", TYPE_A), address)
            .await
            .unwrap();
        let len = client.recv(&mut buffer).await.unwrap();
        assert_eq!(buffer[3] & 0x0f, RCODE_SERVFAIL);
        assert!(len > HEADER_LEN);
        server.abort();
    }
}
