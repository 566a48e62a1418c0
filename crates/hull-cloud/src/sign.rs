//! HYPER-HMAC-SHA256: how Hyper.sh's clients signed every API request.
//!
//! An AWS SigV4-shaped scheme: a canonical form of the request (method,
//! path, query, the signed headers and the body's SHA-256) is hashed into a
//! string to sign, which is signed with a key derived from `"HYPER" + secret`
//! through the day, the region, `hyper` and `hyper_request`. The canonical
//! forms follow the original client exactly, so that its signatures verify
//! here and ours verify wherever its did.

use std::fmt::Write as _;

use ring::{digest, hmac};

use crate::date::HyperDate;

/// The scheme's name, first in the `Authorization` header.
pub const ALGORITHM: &str = "HYPER-HMAC-SHA256";
/// The header carrying the request's time, `YYYYMMDDTHHMMSSZ`.
pub const DATE_HEADER: &str = "x-hyper-date";
/// The header carrying the hex SHA-256 of the request's body.
pub const CONTENT_SHA256_HEADER: &str = "x-hyper-content-sha256";
const SERVICE: &str = "hyper";
const TERMINATOR: &str = "hyper_request";

/// The parts of a request a signature covers. `headers` holds every header
/// the request carries (names in any case); the signer picks the ones the
/// scheme signs.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, percent-encoded (`/v1.23/containers/json`).
    pub path: &'a str,
    /// The query as sent, without the `?`.
    pub query: &'a str,
    pub headers: Vec<(String, String)>,
    /// Hex SHA-256 of the body, as sent in `X-Hyper-Content-Sha256`.
    pub payload_sha256: &'a str,
}

/// An access key, its secret and the region the signatures are scoped to.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// Hex SHA-256 of `body`: the value of `X-Hyper-Content-Sha256`.
pub fn payload_sha256(body: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, body))
}

/// Whether the scheme signs a header of this (lowercase) name.
pub fn is_signed_header(name: &str) -> bool {
    matches!(name, "host" | "content-type" | "content-md5") || name.starts_with("x-hyper-")
}

/// The sorted, lowercase names of the headers of `request` that are signed.
pub fn signed_header_names(request: &Request<'_>) -> Vec<String> {
    let mut names: Vec<String> = request
        .headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .filter(|name| is_signed_header(name))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The canonical request over the headers named in `signed` (lowercase, sorted).
pub fn canonical_request(request: &Request<'_>, signed: &[String]) -> String {
    let mut out = String::new();
    out.push_str(request.method);
    out.push('\n');
    out.push_str(&canonical_path(request.path));
    out.push('\n');
    out.push_str(&canonical_query(request.query));
    out.push('\n');
    for name in signed {
        let value = header_value(request, name);
        let _ = writeln!(out, "{name}:{value}");
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(request.payload_sha256);
    out
}

/// The value a signed header contributes: every occurrence trimmed and
/// joined by commas; `host` without a default port.
fn header_value(request: &Request<'_>, name: &str) -> String {
    let values: Vec<&str> = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect();
    let value = values.join(",");
    if name == "host" {
        for port in [":80", ":443"] {
            if let Some(host) = value.strip_suffix(port) {
                return host.to_owned();
            }
        }
    }
    value
}

/// The credential scope: `<YYYYMMDD>/<region>/hyper/hyper_request`.
pub fn scope(day: &str, region: &str) -> String {
    format!("{day}/{region}/{SERVICE}/{TERMINATOR}")
}

/// The string to sign for a canonical request made at `date`.
pub fn string_to_sign(date: &HyperDate, region: &str, canonical: &str) -> String {
    let hash = hex::encode(digest::digest(&digest::SHA256, canonical.as_bytes()));
    format!(
        "{ALGORITHM}\n{}\n{}\n{hash}",
        date.stamp(),
        scope(date.day(), region)
    )
}

/// The key that signs a day's requests in `region`.
pub fn signing_key(secret: &str, day: &str, region: &str) -> hmac::Key {
    let mut key = format!("HYPER{secret}").into_bytes();
    for part in [day, region, SERVICE, TERMINATOR] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes());
        key = tag.as_ref().to_vec();
    }
    hmac::Key::new(hmac::HMAC_SHA256, &key)
}

/// The `Authorization` header value for `request` made at `date`.
pub fn authorization(credentials: &Credentials, request: &Request<'_>, date: &HyperDate) -> String {
    let signed = signed_header_names(request);
    let canonical = canonical_request(request, &signed);
    let to_sign = string_to_sign(date, &credentials.region, &canonical);
    let key = signing_key(&credentials.secret_key, date.day(), &credentials.region);
    let signature = hex::encode(hmac::sign(&key, to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        credentials.access_key,
        scope(date.day(), &credentials.region),
        signed.join(";"),
    )
}

/// The path without its leading slash and empty segments, each segment
/// decoded and encoded again with only the unreserved characters left bare.
fn canonical_path(path: &str) -> String {
    let decoded = percent_decode(path, false).unwrap_or_else(|| path.as_bytes().to_vec());
    decoded
        .split(|b| *b == b'/')
        .filter(|segment| !segment.is_empty())
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// The query's pairs decoded as a form, sorted by name (values keep their
/// order), encoded with spaces as `%20`. Pairs that do not decode are
/// dropped, as the original client's URL parser drops them.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space in a form); `None` when an
/// escape is malformed.
fn percent_decode(text: &str, form: bool) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if form => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "sign_props.rs"]
mod props;
