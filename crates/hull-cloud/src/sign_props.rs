//! Properties of the signer and verifier over generated requests.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::verify::{Authorization, Verifier};

/// `text` percent-encoded as a form would send it: every byte escaped, or
/// only what must be (spaces as `+`), so that one name has several spellings.
fn form_encode(text: &str, minimal: bool) -> String {
    let mut out = String::new();
    for &b in text.as_bytes() {
        match b {
            b' ' if minimal => out.push('+'),
            b if minimal && b.is_ascii_alphanumeric() => out.push(char::from(b)),
            b => {
                let _ = write!(out, "%{b:02x}");
            }
        }
    }
    out
}

fn query_of(pairs: &[(String, String)], minimal: bool) -> String {
    pairs
        .iter()
        .map(|(name, value)| {
            format!(
                "{}={}",
                form_encode(name, minimal),
                form_encode(value, minimal)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

type Pairs = Vec<(String, String)>;

/// Pairs with distinct names (as decoded), and the same pairs shuffled.
fn pairs_and_shuffled() -> impl Strategy<Value = (Pairs, Pairs)> {
    prop::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..8).prop_flat_map(
        |pairs: BTreeMap<String, String>| {
            let pairs: Vec<_> = pairs.into_iter().collect();
            (Just(pairs.clone()), Just(pairs).prop_shuffle())
        },
    )
}

/// Header names as HTTP allows them, often ones the scheme signs.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}",
        "(X|x)-(H|h)yper-[a-z0-9-]{1,8}",
        Just("Content-Type".to_owned()),
        Just("content-md5".to_owned()),
        Just("Host".to_owned()),
    ]
}

fn authorization_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,120}",
        "[ -~]{0,120}",
        // Deeper: the scheme's prefix, then fields made of its own pieces.
        prop::collection::vec(
            prop_oneof![
                Just("Credential=".to_owned()),
                Just("SignedHeaders=".to_owned()),
                Just("Signature=".to_owned()),
                Just("/hyper/hyper_request".to_owned()),
                Just(", ".to_owned()),
                Just(";".to_owned()),
                Just("/".to_owned()),
                "[a-f0-9]{0,64}",
                "\\PC{0,10}",
            ],
            0..16
        )
        .prop_map(|parts| format!("{ALGORITHM} {}", parts.concat())),
    ]
}

proptest! {
    #[test]
    fn the_canonical_query_ignores_the_order_of_distinct_names(
        (pairs, shuffled) in pairs_and_shuffled(),
        minimal in any::<bool>(),
        shuffled_minimal in any::<bool>(),
    ) {
        prop_assert_eq!(
            canonical_query(&query_of(&pairs, minimal)),
            canonical_query(&query_of(&shuffled, shuffled_minimal))
        );
    }

    #[test]
    fn parsing_an_authorization_header_never_panics(text in authorization_text()) {
        if let Ok(parsed) = Authorization::parse(&text) {
            prop_assert_eq!(parsed.signature.len(), 32);
        }
    }

    #[test]
    fn a_signed_request_verifies_at_its_own_date(
        method in "[A-Z]{1,7}",
        path in "\\PC{0,30}",
        query in "\\PC{0,30}",
        headers in prop::collection::vec((header_name(), "\\PC{0,20}"), 0..10),
        body in prop::collection::vec(any::<u8>(), 0..64),
        seconds in any::<u32>(),
    ) {
        let date = HyperDate::from_time(UNIX_EPOCH + Duration::from_secs(u64::from(seconds)));
        let mut headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(name, _)| {
                !["authorization", DATE_HEADER, CONTENT_SHA256_HEADER]
                    .iter()
                    .any(|own| name.eq_ignore_ascii_case(own))
            })
            .collect();
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
            headers.push(("Host".to_owned(), "hull.example".to_owned()));
        }
        let payload = payload_sha256(&body);
        headers.push(("X-Hyper-Date".to_owned(), date.stamp().to_owned()));
        headers.push(("X-Hyper-Content-Sha256".to_owned(), payload.clone()));
        let mut request = Request {
            method: &method,
            path: &path,
            query: &query,
            headers,
            payload_sha256: &payload,
        };
        let credentials = Credentials {
            access_key: "AKPROP".to_owned(),
            secret_key: "prop-secret".to_owned(),
            region: "us-west-1".to_owned(),
        };
        let header = authorization(&credentials, &request, &date);
        request.headers.push(("Authorization".to_owned(), header));
        let verified = Verifier::new("us-west-1").verify(&request, date.time(), |key| {
            (key == "AKPROP").then(|| "prop-secret".to_owned())
        });
        prop_assert_eq!(
            verified.map(|v| (v.access_key, v.payload_sha256)),
            Ok(("AKPROP".to_owned(), payload.clone()))
        );
    }
}
