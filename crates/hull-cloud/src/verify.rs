//! Checking a HYPER-HMAC-SHA256 signature on the server.
//!
//! Everything a stranger sends is bounded before it is used, and every
//! refusal says which rule it broke without revealing whether a key exists
//! beyond "unknown or revoked".

use std::time::{Duration, SystemTime};

use ring::hmac;

use crate::date::HyperDate;
use crate::sign::{self, Request, ALGORITHM, CONTENT_SHA256_HEADER, DATE_HEADER};

/// How far a request's date may be from the server's clock, either way.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);
/// The longest `Authorization` header considered.
const MAX_AUTHORIZATION: usize = 4096;
/// The most headers one signature may name.
const MAX_SIGNED_HEADERS: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error(
        "the request is not signed: send an Authorization header of the HYPER-HMAC-SHA256 scheme"
    )]
    Unsigned,
    #[error("the Authorization header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the request has no {0} header")]
    MissingHeader(&'static str),
    #[error("the signature does not cover the {0} header")]
    UnsignedHeader(&'static str),
    #[error(transparent)]
    Date(#[from] crate::date::DateError),
    #[error("the request's date {date} is {skew} s away from the server's clock; at most {} s is accepted", MAX_SKEW.as_secs())]
    Stale { date: String, skew: u64 },
    #[error("the credential's day {credential} is not the day of the request's date {date}")]
    DayMismatch { credential: String, date: String },
    #[error("the credential is scoped to region {given:?}; this endpoint is region {expected:?}")]
    WrongRegion { given: String, expected: String },
    #[error("the access key is unknown or revoked")]
    UnknownKey,
    #[error("the signature does not match the request")]
    BadSignature,
    #[error("the body does not match its X-Hyper-Content-Sha256")]
    BodyMismatch,
}

/// A parsed `Authorization: HYPER-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub day: String,
    pub region: String,
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
}

impl Authorization {
    pub fn parse(header: &str) -> Result<Self, VerifyError> {
        if header.len() > MAX_AUTHORIZATION {
            return Err(VerifyError::Malformed("it is too long"));
        }
        let rest = header
            .strip_prefix(ALGORITHM)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(VerifyError::Malformed(
                "it does not start with HYPER-HMAC-SHA256",
            ))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for field in rest.split(',') {
            let (name, value) = field
                .trim()
                .split_once('=')
                .ok_or(VerifyError::Malformed("a field has no '='"))?;
            let slot = match name {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return Err(VerifyError::Malformed("it has an unknown field")),
            };
            if slot.replace(value).is_some() {
                return Err(VerifyError::Malformed("a field is repeated"));
            }
        }
        let credential = credential.ok_or(VerifyError::Malformed("Credential is missing"))?;
        let signed = signed.ok_or(VerifyError::Malformed("SignedHeaders is missing"))?;
        let signature = signature.ok_or(VerifyError::Malformed("Signature is missing"))?;

        let parts: Vec<&str> = credential.split('/').collect();
        let [access_key, day, region, "hyper", "hyper_request"] = parts[..] else {
            return Err(VerifyError::Malformed(
                "Credential is not <key>/<day>/<region>/hyper/hyper_request",
            ));
        };
        if access_key.is_empty() || day.len() != 8 || region.is_empty() {
            return Err(VerifyError::Malformed("Credential has an empty part"));
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_owned).collect();
        if signed_headers.len() > MAX_SIGNED_HEADERS {
            return Err(VerifyError::Malformed("it signs too many headers"));
        }
        let sorted = signed_headers.windows(2).all(|w| w[0] < w[1]);
        let lowercase = signed_headers
            .iter()
            .all(|h| !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()));
        if !sorted || !lowercase {
            return Err(VerifyError::Malformed(
                "SignedHeaders is not a sorted list of lowercase names",
            ));
        }
        let signature = hex::decode(signature)
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or(VerifyError::Malformed("Signature is not 64 hex digits"))?;
        Ok(Self {
            access_key: access_key.to_owned(),
            day: day.to_owned(),
            region: region.to_owned(),
            signed_headers,
            signature,
        })
    }
}

/// What a verified request proved: who signed it, and the body hash it
/// vouched for (the caller checks the body against it as it arrives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key: String,
    pub payload_sha256: String,
}

/// Checks signatures scoped to one region.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub region: String,
}

impl Verifier {
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
        }
    }

    /// Verifies `request` at `now` (its `payload_sha256` is ignored: the
    /// signature covers the hash the request claims); `secret_of` gives a
    /// live key's secret.
    pub fn verify(
        &self,
        request: &Request<'_>,
        now: SystemTime,
        secret_of: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Verified, VerifyError> {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        };
        let authorization =
            Authorization::parse(header("authorization").ok_or(VerifyError::Unsigned)?)?;
        for required in ["host", DATE_HEADER, CONTENT_SHA256_HEADER] {
            if !authorization.signed_headers.iter().any(|h| h == required) {
                return Err(VerifyError::UnsignedHeader(required));
            }
        }
        let date = HyperDate::parse(
            header(DATE_HEADER).ok_or(VerifyError::MissingHeader("X-Hyper-Date"))?,
        )?;
        let claimed = header(CONTENT_SHA256_HEADER)
            .ok_or(VerifyError::MissingHeader("X-Hyper-Content-Sha256"))?;
        if claimed.len() != 64 || !claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(VerifyError::Malformed(
                "X-Hyper-Content-Sha256 is not 64 hex digits",
            ));
        }
        let skew = match now.duration_since(date.time()) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > MAX_SKEW {
            return Err(VerifyError::Stale {
                date: date.stamp().to_owned(),
                skew: skew.as_secs(),
            });
        }
        if authorization.day != date.day() {
            return Err(VerifyError::DayMismatch {
                credential: authorization.day,
                date: date.stamp().to_owned(),
            });
        }
        if authorization.region != self.region {
            return Err(VerifyError::WrongRegion {
                given: authorization.region,
                expected: self.region.clone(),
            });
        }
        let secret = secret_of(&authorization.access_key).ok_or(VerifyError::UnknownKey)?;
        // The signature vouches for the claimed body hash; the caller holds
        // the body to it as the body arrives.
        let request = Request {
            payload_sha256: claimed,
            ..request.clone()
        };
        let canonical = sign::canonical_request(&request, &authorization.signed_headers);
        let to_sign = sign::string_to_sign(&date, &self.region, &canonical);
        let key = sign::signing_key(&secret, date.day(), &self.region);
        hmac::verify(&key, to_sign.as_bytes(), &authorization.signature)
            .map_err(|_| VerifyError::BadSignature)?;
        Ok(Verified {
            access_key: authorization.access_key,
            payload_sha256: claimed.to_owned(),
        })
    }
}
