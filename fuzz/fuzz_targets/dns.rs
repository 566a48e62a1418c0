//! Whatever a container sends to its network's resolver, and whatever comes
//! back as an upstream's reply, the parser and the answers made from it
//! never panic, and a name never outgrows the 255 bytes DNS allows.
#![no_main]

use std::net::Ipv4Addr;

use hull_net::dns;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(question) = dns::parse_query(data) else {
        if data.len() >= 12 {
            let _ = dns::failure(data, None, dns::RCODE_FORMERR);
        }
        return;
    };
    assert!(question.name.len() <= 255 * 3, "lossy UTF-8 at most triples");
    assert!(question.end <= data.len());
    let answer = dns::answer(data, &question, Ipv4Addr::new(10, 89, 1, 2));
    // The answer carries the question, and so answers it.
    assert!(dns::answers(&answer, data, question.end));
    let failed = dns::failure(data, Some(&question), dns::RCODE_SERVFAIL);
    assert!(dns::answers(&failed, data, question.end));
    // The same bytes read as an upstream's reply to the question.
    let _ = dns::answers(data, data, question.end);
});
