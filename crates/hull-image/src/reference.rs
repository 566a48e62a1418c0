//! Docker image references: parsing, normalization (`busybox` →
//! `docker.io/library/busybox:latest`) and docker's short display form.
//!
//! Follows the grammar of distribution/reference: `[domain/]path[:tag][@digest]`.

use std::fmt;

use crate::digest::{is_sha256_hex, Digest, DigestError};

/// The registry that names without a domain belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The namespace of single-component names on the default registry.
pub const OFFICIAL_NAMESPACE: &str = "library";
/// The tag of a reference that names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Errors of reference parsing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: empty reference")]
    Empty,
    #[error("invalid reference format '{0}': repository name must be lowercase")]
    Uppercase(String),
    #[error("invalid reference format '{0}'")]
    Malformed(String),
    #[error("invalid reference format '{0}': repository name is longer than 255 characters")]
    NameTooLong(String),
    #[error("invalid reference format '{0}': invalid tag")]
    Tag(String),
    #[error("invalid repository name '{0}': cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("invalid reference format '{reference}': bad digest")]
    Digest {
        reference: String,
        #[source]
        source: DigestError,
    },
}

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `s` and normalizes its name (default domain, `library/` namespace).
    /// The tag stays absent when `s` names none; see [`Reference::with_default_tag`].
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let malformed = || ReferenceError::Malformed(s.to_owned());
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = d.parse().map_err(|source| ReferenceError::Digest {
                    reference: s.to_owned(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::Tag(s.to_owned()));
            }
        }
        if name.is_empty() {
            return Err(malformed());
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(domain) {
            return Err(malformed());
        }
        if path.split('/').any(|c| !valid_path_component(c)) {
            if path.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(ReferenceError::Uppercase(s.to_owned()));
            }
            return Err(malformed());
        }
        let (domain, path) = normalize(domain, path);
        // Like docker, the limit holds for the normalized name, so that
        // every accepted reference prints to one that parses again.
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(ReferenceError::NameTooLong(s.to_owned()));
        }
        if domain == DEFAULT_DOMAIN && is_sha256_hex(path.trim_start_matches("library/")) {
            return Err(ReferenceError::HexName(s.to_owned()));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// This reference with tag `latest` when it names neither tag nor digest, like docker.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_owned());
        }
        self
    }

    /// The registry domain, e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full repository name, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Docker's short repository name: `busybox`, `user/app`, `127.0.0.1:5000/x/y`.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            // Docker would print `0.a/b` for `docker.io/0.a/b`, which reads back as
            // a registry `0.a`: keep the domain where dropping it changes the meaning.
            _ if split_domain(&self.path).0 != DEFAULT_DOMAIN => self.name(),
            _ => self.path.clone(),
        }
    }

    /// Docker's short form of the whole reference, e.g. `busybox:latest`.
    pub fn familiar(&self) -> String {
        self.format(&self.familiar_name())
    }

    fn format(&self, name: &str) -> String {
        let mut s = name.to_owned();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(&digest.to_string());
        }
        s
    }
}

impl fmt::Display for Reference {
    /// The normalized form, e.g. `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format(&self.name()))
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

/// Normalizes a tag reference as the store keeps it: `busybox` → `docker.io/library/busybox:latest`.
pub fn normalize_tag(s: &str) -> Result<String, ReferenceError> {
    Ok(Reference::parse(s)?.with_default_tag().to_string())
}

/// Docker's short display form of a (normalized or not) reference;
/// returns the input unchanged if it does not parse.
pub fn familiar(s: &str) -> String {
    Reference::parse(s).map_or_else(|_| s.to_owned(), |r| r.familiar())
}

/// Splits a reference into docker's `REPOSITORY` and `TAG` columns:
/// `docker.io/library/busybox:latest` → (`busybox`, `latest`).
pub fn familiar_repository_and_tag(s: &str) -> (String, String) {
    match Reference::parse(s) {
        Ok(r) => {
            let tag = r.tag().unwrap_or("<none>").to_owned();
            (r.familiar_name(), tag)
        }
        Err(_) => (s.to_owned(), "<none>".to_owned()),
    }
}

/// Docker's rule: the first component is a domain if it has a `.` or `:`, is
/// `localhost`, or has an uppercase letter (which no path component may have).
fn split_domain(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    }
}

fn normalize(domain: &str, path: &str) -> (String, String) {
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{path}")
    } else {
        path.to_owned()
    };
    (domain.to_owned(), path)
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() || b == b'_' => {}
        _ => return false,
    }
    tag.len() <= MAX_TAG_LEN && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `domain-component ('.' domain-component)* [':' port]`.
fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok = match port {
        Some(p) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    };
    let host_ok = host.split('.').all(|c| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    });
    port_ok && host_ok
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `.`, `_`, `__` or `-+`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn the_length_limit_applies_to_the_normalized_name() {
        // 250 characters fit as typed, but not once `docker.io/library/` is added.
        let short = "a".repeat(250);
        assert!(matches!(
            Reference::parse(&short),
            Err(ReferenceError::NameTooLong(_))
        ));
        let fits = format!("docker.io/library/{}", "a".repeat(255 - 18));
        let parsed = Reference::parse(&fits).unwrap();
        assert!(Reference::parse(&parsed.to_string()).is_ok());
    }

    #[test]
    fn short_names_normalize_to_docker_hub_library() {
        for s in [
            "busybox",
            "busybox:latest",
            "library/busybox",
            "docker.io/busybox",
            "docker.io/library/busybox:latest",
            "index.docker.io/library/busybox",
        ] {
            assert_eq!(
                normalize_tag(s).unwrap(),
                "docker.io/library/busybox:latest",
                "{s}"
            );
        }
    }

    #[test]
    fn registries_with_ports_keep_their_domain() {
        let r = Reference::parse("127.0.0.1:5000/x/y:t").unwrap();
        assert_eq!(r.domain(), "127.0.0.1:5000");
        assert_eq!(r.path(), "x/y");
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.familiar(), "127.0.0.1:5000/x/y:t");
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(r.domain(), "localhost");
        assert_eq!(r.path(), "app");
    }

    #[test]
    fn familiar_form_keeps_the_domain_when_the_path_looks_like_one() {
        let r = Reference::parse("docker.io/0.a/a").unwrap();
        assert_eq!(r.familiar(), "docker.io/0.a/a");
    }

    #[test]
    fn user_repositories_keep_their_namespace() {
        let r = Reference::parse("user/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
        assert_eq!(r.familiar(), "user/app:1.0");
    }

    #[test]
    fn digests_are_parsed_and_suppress_the_default_tag() {
        let r = Reference::parse(&format!("busybox@sha256:{HEX}"))
            .unwrap()
            .with_default_tag();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().hex(), HEX);
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        assert!(matches!(
            Reference::parse("busybox@sha256:abc"),
            Err(ReferenceError::Digest { .. })
        ));
    }

    #[test]
    fn invalid_references_are_rejected() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            Reference::parse("Busybox"),
            Err(ReferenceError::Uppercase(_))
        ));
        assert!(Reference::parse("busybox:").is_err());
        assert!(Reference::parse("busybox:-x").is_err());
        assert!(Reference::parse("a//b").is_err());
        assert!(Reference::parse("-a").is_err());
        assert!(Reference::parse("a b").is_err());
        assert!(Reference::parse("a___b").is_err());
        assert!(matches!(
            Reference::parse(HEX),
            Err(ReferenceError::HexName(_))
        ));
    }

    #[test]
    fn separators_follow_the_grammar() {
        for ok in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d"] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in ["a..b", "a_.b", "a.", "_a", ""] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn repository_and_tag_columns() {
        assert_eq!(
            familiar_repository_and_tag("docker.io/library/busybox:latest"),
            ("busybox".to_owned(), "latest".to_owned())
        );
        assert_eq!(familiar("docker.io/library/busybox:1"), "busybox:1");
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}"
    }

    fn reference() -> impl Strategy<Value = String> {
        (
            prop::option::of(prop_oneof![
                Just("docker.io".to_owned()),
                Just("localhost".to_owned()),
                "[a-z]{1,6}\\.[a-z]{2,3}(:[0-9]{1,5})?",
                "127\\.0\\.0\\.1:[0-9]{1,5}",
            ]),
            prop::collection::vec(component(), 1..4),
            prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            prop::option::of("[0-9a-f]{64}"),
        )
            .prop_map(|(domain, mut path, tag, digest)| {
                if domain.is_none() {
                    // Without a domain, a first component with a dot is a registry name.
                    path[0] = path[0].replace('.', "-");
                }
                let mut s = domain.map(|d| d + "/").unwrap_or_default() + &path.join("/");
                if let Some(t) = tag {
                    s = s + ":" + &t;
                }
                if let Some(d) = digest {
                    s = s + "@sha256:" + &d;
                }
                s
            })
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,80}") {
            let _ = Reference::parse(&s);
        }

        #[test]
        fn valid_references_parse(s in reference()) {
            prop_assume!(!is_sha256_hex(&s));
            let r = Reference::parse(&s);
            prop_assert!(r.is_ok(), "{s}: {r:?}");
        }

        #[test]
        fn normalization_is_idempotent(s in reference()) {
            if let Ok(r) = Reference::parse(&s) {
                let again = Reference::parse(&r.to_string()).unwrap();
                prop_assert_eq!(&again, &r);
            }
        }

        #[test]
        fn familiar_form_round_trips(s in reference()) {
            if let Ok(r) = Reference::parse(&s) {
                let back = Reference::parse(&r.familiar()).unwrap();
                prop_assert_eq!(back, r);
            }
        }
    }
}
