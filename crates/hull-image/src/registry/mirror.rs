//! Registry mirrors, as docker's `registry-mirrors`: registries that serve
//! copies of Docker Hub's repositories under the same names, tried in order
//! before Docker Hub itself for images of the default domain (`busybox`,
//! `library/busybox`, `docker.io/…`). Images of other registries never go
//! through a mirror.

/// Errors of reading a mirror's address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MirrorError {
    #[error("invalid registry mirror '{0}': it must be http(s)://host[:port]")]
    Form(String),
    #[error("invalid registry mirror '{0}': a mirror cannot have a path, query or fragment")]
    Path(String),
}

/// One mirror: where its API is and the name it goes by (for credentials
/// and messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// `scheme://host[:port]`, without a trailing slash.
    pub base: String,
    /// `host[:port]`.
    pub domain: String,
}

impl Mirror {
    /// Reads `http://host[:port]`, `https://host[:port]`, or a bare
    /// `host[:port]`, which is spoken to in plain HTTP on loopback and in
    /// HTTPS elsewhere, like any other registry.
    pub fn parse(text: &str) -> Result<Mirror, MirrorError> {
        let form = || MirrorError::Form(text.to_owned());
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme), rest),
            Some(_) => return Err(form()),
            None => (None, text),
        };
        let (domain, tail) = rest
            .find(['/', '?', '#'])
            .map_or((rest, ""), |at| rest.split_at(at));
        if !tail.is_empty() && tail != "/" {
            return Err(MirrorError::Path(text.to_owned()));
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
        if domain.is_empty() || !domain.chars().all(valid) {
            return Err(form());
        }
        let scheme = scheme.unwrap_or(if super::is_loopback(domain) {
            "http"
        } else {
            "https"
        });
        Ok(Mirror {
            base: format!("{scheme}://{domain}"),
            domain: domain.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_urls_or_bare_hosts() {
        let m = Mirror::parse("http://127.0.0.1:5000/").unwrap();
        assert_eq!(m.base, "http://127.0.0.1:5000");
        assert_eq!(m.domain, "127.0.0.1:5000");
        assert_eq!(
            Mirror::parse("mirror.example:443").unwrap().base,
            "https://mirror.example:443"
        );
        assert_eq!(
            Mirror::parse("localhost:5000").unwrap().base,
            "http://localhost:5000"
        );
        assert_eq!(
            Mirror::parse("https://[::1]:5000").unwrap().domain,
            "[::1]:5000"
        );
    }

    #[test]
    fn mirrors_with_paths_or_other_schemes_are_refused() {
        assert!(matches!(
            Mirror::parse("https://mirror.example/v2/"),
            Err(MirrorError::Path(_))
        ));
        for bad in ["ftp://mirror.example", "", "http://", "http://a b"] {
            assert!(
                matches!(Mirror::parse(bad), Err(MirrorError::Form(_))),
                "{bad}"
            );
        }
    }
}
