use std::time::Duration;

use serde::Deserialize;

use super::*;
use crate::verify::{Verifier, VerifyError};

/// Requests the original `hyper` client signed, with its keys.
#[derive(Deserialize)]
struct Vectors {
    access_key: String,
    secret_key: String,
    region: String,
    requests: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    method: String,
    target: String,
    body: String,
    headers: std::collections::BTreeMap<String, String>,
    canonical_request: String,
    string_to_sign: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("../tests/data/hyper-sign-vectors.json")).unwrap()
}

fn credentials(vectors: &Vectors) -> Credentials {
    Credentials {
        access_key: vectors.access_key.clone(),
        secret_key: vectors.secret_key.clone(),
        region: vectors.region.clone(),
    }
}

/// The vector's request with its headers, less `Authorization` unless `signed`.
fn request<'a>(vector: &'a Vector, payload: &'a str, signed: bool) -> Request<'a> {
    let (path, query) = vector
        .target
        .split_once('?')
        .unwrap_or((&vector.target, ""));
    Request {
        method: &vector.method,
        path,
        query,
        headers: vector
            .headers
            .iter()
            .filter(|(name, _)| signed || *name != "Authorization")
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        payload_sha256: payload,
    }
}

fn date_of(vector: &Vector) -> HyperDate {
    HyperDate::parse(&vector.headers["X-Hyper-Date"]).unwrap()
}

#[test]
fn the_signer_reproduces_every_signature_of_the_original_client() {
    let vectors = vectors();
    assert_eq!(vectors.requests.len(), 5);
    for vector in &vectors.requests {
        let payload = payload_sha256(vector.body.as_bytes());
        assert_eq!(payload, vector.headers["X-Hyper-Content-Sha256"]);
        let request = request(vector, &payload, false);
        let signed = signed_header_names(&request);
        let canonical = canonical_request(&request, &signed);
        assert_eq!(canonical, vector.canonical_request, "{}", vector.target);
        let date = date_of(vector);
        assert_eq!(
            string_to_sign(&date, &vectors.region, &canonical),
            vector.string_to_sign
        );
        assert_eq!(
            authorization(&credentials(&vectors), &request, &date),
            vector.headers["Authorization"],
            "{}",
            vector.target
        );
    }
}

fn verify_at(
    vectors: &Vectors,
    request: &Request<'_>,
    now: std::time::SystemTime,
) -> Result<crate::verify::Verified, VerifyError> {
    Verifier::new(&vectors.region).verify(request, now, |key| {
        (key == vectors.access_key).then(|| vectors.secret_key.clone())
    })
}

#[test]
fn the_verifier_accepts_every_request_of_the_original_client() {
    let vectors = vectors();
    for vector in &vectors.requests {
        let payload = payload_sha256(vector.body.as_bytes());
        let verified = verify_at(
            &vectors,
            &request(vector, &payload, true),
            date_of(vector).time() + Duration::from_secs(299),
        )
        .unwrap();
        assert_eq!(verified.access_key, vectors.access_key);
        assert_eq!(verified.payload_sha256, payload);
    }
}

#[test]
fn the_verifier_refuses_what_was_changed_after_signing() {
    let vectors = vectors();
    let vector = &vectors.requests[3];
    let payload = payload_sha256(vector.body.as_bytes());
    let now = date_of(vector).time();
    let base = request(vector, &payload, true);
    let with = |name: &str, value: &str| {
        let mut request = base.clone();
        request.headers.retain(|(n, _)| n != name);
        request.headers.push((name.to_owned(), value.to_owned()));
        request
    };

    let other_body = payload_sha256(b"{\"Name\":\"evil\"}");
    let cases = [
        (with("X-Hyper-Content-Sha256", &other_body), "body hash"),
        (with("Content-Type", "text/plain"), "content type"),
        (with("Host", "127.0.0.1:18444"), "host"),
        (with("X-Hyper-Date", "20261202T070210Z"), "date"),
        (
            Request {
                path: "/v1.23/volumes/remove",
                ..base.clone()
            },
            "path",
        ),
        (
            Request {
                query: "force=1",
                ..base.clone()
            },
            "query",
        ),
        (
            Request {
                method: "PUT",
                ..base.clone()
            },
            "method",
        ),
    ];
    for (request, what) in cases {
        assert_eq!(
            verify_at(&vectors, &request, now),
            Err(VerifyError::BadSignature),
            "{what}"
        );
    }
}

#[test]
fn the_verifier_refuses_stale_dates_unknown_keys_and_other_regions() {
    let vectors = vectors();
    let vector = &vectors.requests[0];
    let payload = payload_sha256(b"");
    let request = request(vector, &payload, true);
    let signed_at = date_of(vector).time();
    for now in [
        signed_at + Duration::from_secs(301),
        signed_at - Duration::from_secs(301),
    ] {
        assert!(matches!(
            verify_at(&vectors, &request, now),
            Err(VerifyError::Stale { skew: 301, .. })
        ));
    }
    let unknown = Verifier::new(&vectors.region).verify(&request, signed_at, |_| None);
    assert_eq!(unknown, Err(VerifyError::UnknownKey));
    let wrong_secret = Verifier::new(&vectors.region)
        .verify(&request, signed_at, |_| Some("not the secret".to_owned()));
    assert_eq!(wrong_secret, Err(VerifyError::BadSignature));
    let elsewhere = Verifier::new("eu-central-1")
        .verify(&request, signed_at, |_| Some(vectors.secret_key.clone()));
    assert!(matches!(elsewhere, Err(VerifyError::WrongRegion { .. })));
}

#[test]
fn a_signature_must_cover_host_date_and_body_hash() {
    let credentials = Credentials {
        access_key: "AK".into(),
        secret_key: "SK".into(),
        region: "r".into(),
    };
    let date = HyperDate::parse("20261202T070209Z").unwrap();
    let payload = payload_sha256(b"");
    for dropped in ["host", "x-hyper-date", "x-hyper-content-sha256"] {
        let mut headers: Vec<(String, String)> = vec![
            ("Host".into(), "h".into()),
            ("X-Hyper-Date".into(), date.stamp().into()),
            ("X-Hyper-Content-Sha256".into(), payload.clone()),
        ];
        // Sign without the header, then send it anyway: the signature does
        // not vouch for it, so it is refused.
        let mut request = Request {
            method: "GET",
            path: "/info",
            query: "",
            headers: headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case(dropped))
                .cloned()
                .collect(),
            payload_sha256: &payload,
        };
        let auth = authorization(&credentials, &request, &date);
        headers.push(("Authorization".into(), auth));
        request.headers = headers;
        let verified = Verifier::new("r").verify(&request, date.time(), |_| Some("SK".into()));
        assert!(
            matches!(verified, Err(VerifyError::UnsignedHeader(h)) if h == dropped),
            "{dropped}: {verified:?}"
        );
    }
}

#[test]
fn malformed_authorization_headers_are_refused_with_a_reason() {
    use crate::verify::Authorization;
    let good = "HYPER-HMAC-SHA256 Credential=AK/20261202/r/hyper/hyper_request, \
                SignedHeaders=host;x-hyper-date, Signature="
        .to_owned()
        + &"ab".repeat(32);
    assert!(Authorization::parse(&good).is_ok());
    for bad in [
        String::new(),
        "AWS4-HMAC-SHA256 Credential=x".to_owned(),
        good.replace("Credential=AK/", "Credential="),
        good.replace("/hyper/", "/s3/"),
        good.replace("host;x-hyper-date", "x-hyper-date;host"),
        good.replace("host;x-hyper-date", "Host;x-hyper-date"),
        good.replace("Signature=ab", "Signature=zz"),
        good.clone() + ", Signature=" + &"ab".repeat(32),
        good.replace(", SignedHeaders", ", Extra=1, SignedHeaders"),
        format!("{good}{}", ";h".repeat(5000)),
        good.replace(&"ab".repeat(32), &"ab".repeat(31)),
    ] {
        assert!(
            matches!(
                Authorization::parse(&bad),
                Err(VerifyError::Malformed(_) | VerifyError::Unsigned)
            ),
            "{bad:.120}"
        );
    }
}

#[test]
fn canonical_paths_and_queries_follow_the_original_client() {
    assert_eq!(
        canonical_path("/v1.23//containers/a%20b/"),
        "v1.23/containers/a%20b"
    );
    assert_eq!(canonical_path("/x/é"), "x/%C3%A9");
    assert_eq!(canonical_path("/"), "");
    assert_eq!(canonical_query("b=2&a=1&a=0"), "a=1&a=0&b=2");
    assert_eq!(canonical_query("q=a+b&r=a%2Bb"), "q=a%20b&r=a%2Bb");
    assert_eq!(canonical_query("flag&x=%zz&y=1"), "flag=&y=1");
    assert_eq!(canonical_query(""), "");
    assert_eq!(percent_decode("%+1", false), None);
}
