//! Registry authentication: `WWW-Authenticate` challenges, credentials and
//! where they come from (docker's `X-Registry-Auth` header and its
//! `config.json` `auths` format, which `hull login` writes).

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Errors of reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the registry credentials are not valid base64")]
    Base64(#[source] base64::DecodeError),
    #[error("the registry credentials are not valid JSON")]
    Json(#[source] serde_json::Error),
    #[error("the credentials for {registry} are not in the form 'user:password'")]
    Form { registry: String },
}

/// A user name and password (or identity token) for one registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// The registry these are for, as docker's `X-Registry-Auth` names it.
    #[serde(
        default,
        rename = "serveraddress",
        skip_serializing_if = "String::is_empty"
    )]
    pub server_address: String,
}

impl Credentials {
    pub fn new(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
            server_address: String::new(),
        }
    }

    /// Parses `user:password`, as in `HULL_REGISTRY_AUTH`.
    pub fn parse_pair(registry: &str, pair: &str) -> Result<Credentials, CredentialsError> {
        match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials::new(user, password)),
            _ => Err(CredentialsError::Form {
                registry: registry.to_owned(),
            }),
        }
    }

    /// The value of docker's `X-Registry-Auth` header: base64url of this as JSON.
    pub fn to_header(&self) -> String {
        URL_SAFE.encode(serde_json::to_vec(self).expect("credentials serialize"))
    }

    /// Reads an `X-Registry-Auth` header; docker sends `{}` (encoded) for anonymous pulls.
    pub fn from_header(value: &str) -> Result<Option<Credentials>, CredentialsError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        // Docker clients vary in padding and alphabet; accept either.
        let bytes = URL_SAFE
            .decode(value)
            .or_else(|_| STANDARD.decode(value))
            .or_else(|_| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim_end_matches('='))
            })
            .map_err(CredentialsError::Base64)?;
        let credentials: Credentials =
            serde_json::from_slice(&bytes).map_err(CredentialsError::Json)?;
        Ok((!credentials.username.is_empty()).then_some(credentials))
    }
}

/// Docker's `config.json` (and Hull's `auth.json`): `{"auths": {"host": {"auth": base64("user:pass")}}}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuthFile {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
}

/// One registry's entry in an [`AuthFile`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuthEntry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth: String,
}

impl AuthFile {
    pub fn parse(bytes: &[u8]) -> Result<AuthFile, CredentialsError> {
        serde_json::from_slice(bytes).map_err(CredentialsError::Json)
    }

    /// The credentials stored for `domain` (docker stores Docker Hub's under its v1 URL).
    pub fn credentials(&self, domain: &str) -> Result<Option<Credentials>, CredentialsError> {
        let hub = domain == crate::reference::DEFAULT_DOMAIN;
        let entry = self.auths.iter().find(|(key, _)| {
            let key = key
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let key = key.split('/').next().unwrap_or(key);
            key == domain || (hub && (key == "index.docker.io" || key == super::DOCKER_HUB_HOST))
        });
        let Some((_, entry)) = entry else {
            return Ok(None);
        };
        let pair = STANDARD
            .decode(entry.auth.trim())
            .map_err(CredentialsError::Base64)?;
        let mut credentials = Credentials::parse_pair(domain, &String::from_utf8_lossy(&pair))?;
        credentials.server_address = domain.to_owned();
        Ok(Some(credentials))
    }

    /// Forgets the credentials of `domain`; false if there were none.
    pub fn remove(&mut self, domain: &str) -> bool {
        self.auths.remove(domain).is_some()
    }

    /// Stores credentials for `domain`, as `hull login` does.
    pub fn set(&mut self, domain: &str, credentials: &Credentials) {
        let pair = format!("{}:{}", credentials.username, credentials.password);
        self.auths.insert(
            domain.to_owned(),
            AuthEntry {
                auth: STANDARD.encode(pair),
            },
        );
    }
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses the header's value; `None` for schemes Hull does not speak.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        let params = parse_params(rest);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Some(Challenge::Basic)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Challenge::Bearer {
                realm: get("realm")?,
                service: get("service"),
                scope: get("scope"),
            })
        } else {
            None
        }
    }
}

/// `key=value` and `key="quoted, \"value\""` pairs separated by commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() && chars.peek().is_none() {
            return params;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_owned();
        }
        params.push((key, value));
    }
}

/// The token endpoint's answer; registries use either name.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<String> {
        self.token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_give_realm_service_and_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }
        );
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let c = Challenge::parse(
            r#"bearer realm="http://a/t", scope="repository:a:pull,push", service=reg"#,
        )
        .unwrap();
        let Challenge::Bearer { scope, service, .. } = c else {
            panic!("not bearer")
        };
        assert_eq!(scope.as_deref(), Some("repository:a:pull,push"));
        assert_eq!(service.as_deref(), Some("reg"));
        assert_eq!(
            parse_params(r#"a="x\"y""#),
            vec![("a".into(), "x\"y".into())]
        );
    }

    #[test]
    fn basic_and_unknown_schemes() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        assert_eq!(Challenge::parse("Bearer service=x"), None);
    }

    #[test]
    fn registry_auth_header_round_trips() {
        let mut c = Credentials::new("user", "p@ss:word");
        c.server_address = "127.0.0.1:5000".into();
        assert_eq!(Credentials::from_header(&c.to_header()).unwrap(), Some(c));
        // `{}`, what docker sends without credentials.
        assert_eq!(Credentials::from_header("e30=").unwrap(), None);
        assert!(Credentials::from_header("!!").is_err());
    }

    #[test]
    fn auth_files_find_credentials_by_registry() {
        let mut file = AuthFile::default();
        file.set("127.0.0.1:5000", &Credentials::new("u", "p:q"));
        let file = AuthFile::parse(&serde_json::to_vec(&file).unwrap()).unwrap();
        let c = file.credentials("127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:q"));
        assert!(file.credentials("other:5000").unwrap().is_none());

        let hub = AuthFile::parse(br#"{"auths":{"https://index.docker.io/v1/":{"auth":"YTpi"}}}"#)
            .unwrap();
        assert_eq!(hub.credentials("docker.io").unwrap().unwrap().username, "a");
    }

    #[test]
    fn tokens_come_under_either_name() {
        let t: TokenResponse = serde_json::from_str(r#"{"access_token":"x"}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("x"));
        let t: TokenResponse = serde_json::from_str(r#"{"token":"y","access_token":""}"#).unwrap();
        assert_eq!(t.into_token().as_deref(), Some("y"));
    }

    proptest::proptest! {
        #[test]
        fn challenge_parsing_never_panics(s in "\\PC{0,80}") {
            let _ = Challenge::parse(&s);
        }
    }
}
