//! HYPER-HMAC-SHA256 signatures on whatever a stranger sends: the
//! `Authorization` and `X-Hyper-Date` parsers and the verifier never panic;
//! an accepted date and header format back to themselves; a request signed
//! with a known key verifies, and after any one change verifies only if the
//! string it signed (canonical request and date) is unchanged; a request
//! made up from fuzzed parts is never accepted unless the signer would have
//! produced its signature over the same parts.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use hull_cloud::date::HyperDate;
use hull_cloud::sign::{self, Credentials, Request, ALGORITHM};
use hull_cloud::verify::{Authorization, Verifier};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const ACCESS_KEY: &str = "AKFUZZ0000000000";
const SECRET: &str = "fuzz-secret-key";
const REGION: &str = "us-west-1";
/// 2026-12-02T07:02:09Z, to which an input adds up to ~136 years.
const BASE: u64 = 1_796_194_929;

#[derive(Arbitrary, Debug)]
struct Input {
    authorization: String,
    date: String,
    method: String,
    path: String,
    query: String,
    headers: Vec<(Name, String)>,
    body: Vec<u8>,
    seconds: u32,
    mutation: Mutation,
}

/// Header names: the ones the scheme cares about meet often; any other too.
#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Raw(String),
}

const NAMES: &[&str] = &[
    "Host",
    "host",
    "Content-Type",
    "content-md5",
    "X-Hyper-Date",
    "x-hyper-content-sha256",
    "X-Hyper-Extra",
    "Authorization",
    "Accept",
    "User-Agent",
];

impl Name {
    fn text(&self) -> String {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].to_owned(),
            Name::Raw(name) => name.clone(),
        }
    }
}

/// One change to a signed request.
#[derive(Arbitrary, Debug)]
enum Mutation {
    Method(String),
    Path(String),
    Query(String),
    Body(Vec<u8>),
    SetValue(u8, String),
    Rename(u8, Name),
    Add(Name, String),
    Remove(u8),
    Swap(u8, u8),
    /// Seconds added to the date (within ±10 minutes, so that some stay fresh).
    Date(i16),
    WrongSecret(String),
    WrongRegion(String),
}

/// What HTTP allows in a header name; the signer lists signed names
/// between `;` and `,`, so only these make a header it can sign.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn credentials() -> Credentials {
    Credentials {
        access_key: ACCESS_KEY.to_owned(),
        secret_key: SECRET.to_owned(),
        region: REGION.to_owned(),
    }
}

fn parsers(input: &Input) {
    if let Ok(auth) = Authorization::parse(&input.authorization) {
        assert_eq!(auth.signature.len(), 32);
        assert_eq!(auth.day.len(), 8);
        assert!(auth.signed_headers.windows(2).all(|w| w[0] < w[1]));
        // Written back in the scheme's own form, it parses to itself.
        let written = format!(
            "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
            auth.access_key,
            sign::scope(&auth.day, &auth.region),
            auth.signed_headers.join(";"),
            hex::encode(&auth.signature),
        );
        assert_eq!(Authorization::parse(&written).as_ref(), Ok(&auth));
    }
    if let Ok(date) = HyperDate::parse(&input.date) {
        assert_eq!(HyperDate::from_time(date.time()).stamp(), date.stamp());
        assert_eq!(date.stamp(), input.date);
        assert_eq!(date.day(), &input.date[..8]);
    }
}

/// The fuzzed request as sent, with the fuzzed `Authorization` and date: the
/// verifier accepts it only if the signer makes the same signature over the
/// headers it names, which a fuzzer cannot do without the secret.
fn forged(input: &Input) {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(name, value)| (name.text(), value.clone()))
        .collect();
    let payload = sign::payload_sha256(&input.body);
    headers.push(("Authorization".to_owned(), input.authorization.clone()));
    headers.push(("X-Hyper-Date".to_owned(), input.date.clone()));
    headers.push(("X-Hyper-Content-Sha256".to_owned(), payload.clone()));
    let request = Request {
        method: &input.method,
        path: &input.path,
        query: &input.query,
        headers,
        payload_sha256: &payload,
    };
    let now = HyperDate::parse(&input.date)
        .map(|d| d.time())
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(BASE));
    // Every key is live, so that the verifier gets as far as the signature.
    let Ok(verified) = Verifier::new(REGION).verify(&request, now, |_| Some(SECRET.to_owned()))
    else {
        return;
    };
    let auth = Authorization::parse(header(&request.headers, "authorization").unwrap()).unwrap();
    let date = HyperDate::parse(header(&request.headers, "x-hyper-date").unwrap()).unwrap();
    let signed = Request {
        headers: request
            .headers
            .iter()
            .filter(|(n, _)| auth.signed_headers.contains(&n.to_ascii_lowercase()))
            .cloned()
            .collect(),
        payload_sha256: &verified.payload_sha256,
        ..request.clone()
    };
    let credentials = Credentials {
        access_key: auth.access_key.clone(),
        ..credentials()
    };
    let expected = Authorization::parse(&sign::authorization(&credentials, &signed, &date));
    assert_eq!(
        expected.map(|a| a.signature).as_ref(),
        Ok(&auth.signature),
        "accepted a signature the signer did not make"
    );
}

/// Signs the fuzzed request, checks that it verifies, changes one part and
/// checks that it verifies again only if what was signed is unchanged.
fn signed_then_changed(input: &Input) {
    let date =
        HyperDate::from_time(UNIX_EPOCH + Duration::from_secs(BASE + u64::from(input.seconds)));
    // The signer's own headers replace any the input brings.
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(name, value)| (name.text(), value.clone()))
        .filter(|(name, _)| {
            !["authorization", "x-hyper-date", "x-hyper-content-sha256"]
                .iter()
                .any(|own| name.eq_ignore_ascii_case(own))
        })
        .collect();
    if header(&headers, "host").is_none() {
        headers.push(("Host".to_owned(), "hull.example:443".to_owned()));
    }
    let payload = sign::payload_sha256(&input.body);
    headers.push(("X-Hyper-Date".to_owned(), date.stamp().to_owned()));
    headers.push(("X-Hyper-Content-Sha256".to_owned(), payload.clone()));
    let mut request = Request {
        method: &input.method,
        path: &input.path,
        query: &input.query,
        headers,
        payload_sha256: &payload,
    };
    let names = sign::signed_header_names(&request);
    let authorization = sign::authorization(&credentials(), &request, &date);
    // The scheme lists signed names between `;` and `,`, and the verifier
    // reads at most 32 names in at most 4096 bytes: within those bounds,
    // what is signed verifies.
    let signable =
        names.len() <= 32 && names.iter().all(|n| is_token(n)) && authorization.len() <= 4096;
    request
        .headers
        .insert(0, ("Authorization".to_owned(), authorization));
    let now = date.time();
    let secret_of = |key: &str| (key == ACCESS_KEY).then(|| SECRET.to_owned());
    let verifier = Verifier::new(REGION);
    if let Err(error) = verifier.verify(&request, now, secret_of) {
        assert!(!signable, "a signed request was refused: {error}");
        return;
    }
    let before = sign::canonical_request(&request, &names);

    let mut changed = request.clone();
    let count = changed.headers.len();
    let mut verifier = verifier;
    let mut secret = SECRET.to_owned();
    let mut touches_headers = false;
    match &input.mutation {
        Mutation::Method(method) => changed.method = method.as_str(),
        Mutation::Path(path) => changed.path = path.as_str(),
        Mutation::Query(query) => changed.query = query.as_str(),
        Mutation::Body(body) => {
            let body_payload = sign::payload_sha256(body);
            for (name, value) in &mut changed.headers {
                if name.eq_ignore_ascii_case("x-hyper-content-sha256") {
                    value.clone_from(&body_payload);
                }
            }
        }
        Mutation::SetValue(i, value) => {
            touches_headers = true;
            changed.headers[*i as usize % count].1 = value.clone();
        }
        Mutation::Rename(i, name) => {
            touches_headers = true;
            changed.headers[*i as usize % count].0 = name.text();
        }
        Mutation::Add(name, value) => {
            touches_headers = true;
            changed.headers.push((name.text(), value.clone()));
        }
        Mutation::Remove(i) => {
            touches_headers = true;
            changed.headers.remove(*i as usize % count);
        }
        Mutation::Swap(i, j) => {
            touches_headers = true;
            changed
                .headers
                .swap(*i as usize % count, *j as usize % count);
        }
        Mutation::Date(shift) => {
            let shift = i64::from(*shift % 600);
            let seconds = (BASE + u64::from(input.seconds)).saturating_add_signed(shift);
            let new_date = HyperDate::from_time(UNIX_EPOCH + Duration::from_secs(seconds));
            for (name, value) in &mut changed.headers {
                if name.eq_ignore_ascii_case("x-hyper-date") {
                    *value = new_date.stamp().to_owned();
                }
            }
        }
        Mutation::WrongSecret(other) => secret.clone_from(other),
        Mutation::WrongRegion(other) => verifier = Verifier::new(other.clone()),
    }
    let result = verifier.verify(&changed, now, |key| {
        (key == ACCESS_KEY).then(|| secret.clone())
    });

    // What the verifier signs over: the claimed body hash, the date it reads.
    let claimed = header(&changed.headers, "x-hyper-content-sha256").unwrap_or("");
    let after = sign::canonical_request(
        &Request {
            payload_sha256: claimed,
            ..changed.clone()
        },
        &names,
    );
    let same_date = header(&changed.headers, "x-hyper-date") == Some(date.stamp());
    let same_key = secret == SECRET && verifier.region == REGION;
    let unchanged = after == before && same_date && same_key;
    if result.is_ok() {
        assert!(
            unchanged,
            "accepted after a change to what was signed: {:?}",
            input.mutation
        );
    } else if unchanged && !touches_headers {
        panic!("refused after a change that kept what was signed: {result:?}");
    }
}

fuzz_target!(|input: Input| {
    parsers(&input);
    forged(&input);
    signed_then_changed(&input);
});
