//! DNS messages for the resolver on each bridge network's gateway: the
//! question of a query, the answers it makes itself, and the check that an
//! upstream's reply answers the question that was forwarded. Everything
//! here reads what a container sends, so nothing grows with the input.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

pub(super) const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
pub(super) const CLASS_IN: u16 = 1;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_REFUSED: u8 = 5;
/// The longest name a question may hold, in the message's encoding.
const MAX_NAME: usize = 255;
/// How long containers may cache an answer; docker's too.
const TTL_SECONDS: u32 = 600;

/// The one question of a query.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// Where the question ends in the message.
    pub end: usize,
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
        // With its length bytes and the final zero, a name is 255 bytes at
        // most; checked before the label is kept.
        if at + len >= MAX_NAME + HEADER_LEN {
            return None;
        }
        let label = message.get(at..at + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        at += len;
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

/// Whether `reply` is a response whose one question is, byte for byte
/// but for letter case, the question of `query` (which ends at
/// `question_end`): an upstream's reply is relayed only then.
pub fn answers(reply: &[u8], query: &[u8], question_end: usize) -> bool {
    let (Some(asked), Some(replied)) = (
        query.get(HEADER_LEN..question_end),
        reply.get(HEADER_LEN..question_end),
    ) else {
        return false;
    };
    reply[2] & 0x80 != 0 && reply[4..6] == [0, 1] && asked.eq_ignore_ascii_case(replied)
}

/// The name servers in the host's `/etc/resolv.conf`.
pub fn host_name_servers() -> Vec<SocketAddr> {
    name_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

/// The name servers a `resolv.conf` names, at port 53.
pub fn name_servers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|address| address.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Names as the server looks them up for a client (by its address): the
/// names of its network, then those of its other networks.
pub type Lookup = Arc<dyn Fn(&str, Ipv4Addr) -> Option<Ipv4Addr> + Send + Sync>;

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

    #[test]
    fn names_are_bounded_by_their_encoding() {
        // 4 labels of 63 bytes: 256 bytes with their lengths, 1 past the bound.
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        assert_eq!(parse_query(&query(&long, TYPE_A)), None);
        let longest = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(parse_query(&query(&longest, TYPE_A)).unwrap().name, longest);
    }

    #[test]
    fn replies_match_only_the_question_asked() {
        let asked = query("example.org", TYPE_A);
        let end = parse_query(&asked).unwrap().end;
        let mut reply = asked.clone();
        reply[2] |= 0x80;
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert!(answers(&reply, &asked, end));
        reply[13] = b'E';
        assert!(
            answers(&reply, &asked, end),
            "letter case is not a mismatch"
        );
        let other = query("example.net", TYPE_A);
        let mut other_reply = other.clone();
        other_reply[2] |= 0x80;
        assert!(!answers(&other_reply, &asked, end));
        assert!(!answers(&asked, &asked, end), "a query is no reply");
        assert!(!answers(&reply[..20], &asked, end));
    }

    #[test]
    fn name_servers_come_from_resolv_conf() {
        let servers = name_servers(
            "# a comment\nnameserver 127.0.0.53\nsearch lan\nnameserver ::1\nnameserver bogus\n",
        );
        assert_eq!(
            servers,
            [
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
