//! What `service create` asks for, checked before anything is made.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ServiceError;

/// Replicas of one service.
pub const MAX_REPLICAS: u32 = 32;
/// Words of a replica's command.
const MAX_CMD: usize = 256;
/// Bytes of an image reference or a size.
const MAX_FIELD: usize = 512;

/// How a service picks the replica of a new connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    #[default]
    Roundrobin,
    /// By the client's address: a client keeps its replica.
    Source,
    /// To the replica with the fewest open connections (HTTP: requests in
    /// flight); needs the proxy.
    Leastconn,
}

/// What a service balances: TCP connections, or HTTP/1 requests (each
/// request of a kept-alive connection on its own, through the proxy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
        }
    }
}

impl FromStr for Protocol {
    type Err = ServiceError;

    fn from_str(text: &str) -> Result<Self, ServiceError> {
        match text {
            "tcp" => Ok(Self::Tcp),
            "http" => Ok(Self::Http),
            other => Err(ServiceError::Protocol(other.chars().take(64).collect())),
        }
    }
}

impl FromStr for Algorithm {
    type Err = ServiceError;

    fn from_str(text: &str) -> Result<Self, ServiceError> {
        match text {
            "roundrobin" => Ok(Self::Roundrobin),
            "source" => Ok(Self::Source),
            "leastconn" => Ok(Self::Leastconn),
            other => Err(ServiceError::Algorithm(other.chars().take(64).collect())),
        }
    }
}

/// Bytes of a health check's path.
const MAX_PATH: usize = 256;

/// The host's probe of each replica: a TCP connection to its container
/// port (with `path`, an HTTP GET of it answered 2xx or 3xx) every
/// `interval_ms`; `fall` failures in a row take a replica out, `rise`
/// successes in a row put it (back) in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub interval_ms: u64,
    pub fall: u32,
    pub rise: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval_ms: 3000,
            fall: 3,
            rise: 2,
            path: None,
        }
    }
}

impl FromStr for HealthCheck {
    type Err = ServiceError;

    /// `interval=3s,fall=3,rise=2,path=/healthz`, any of them, in any order.
    fn from_str(text: &str) -> Result<Self, ServiceError> {
        let bad = || ServiceError::HealthCheck(text.chars().take(128).collect());
        let mut check = Self::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match key {
                "interval" => {
                    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
                        (ms, 1)
                    } else if let Some(s) = value.strip_suffix('s') {
                        (s, 1000)
                    } else {
                        (value, 1000)
                    };
                    check.interval_ms = number
                        .parse::<u64>()
                        .ok()
                        .and_then(|n| n.checked_mul(scale))
                        .ok_or_else(bad)?;
                }
                "fall" => check.fall = value.parse().map_err(|_| bad())?,
                "rise" => check.rise = value.parse().map_err(|_| bad())?,
                "path" => check.path = Some(value.to_owned()),
                _ => return Err(bad()),
            }
        }
        check.validate().map(|()| check)
    }
}

impl HealthCheck {
    pub fn validate(&self) -> Result<(), ServiceError> {
        let ok = (200..=60_000).contains(&self.interval_ms)
            && (1..=10).contains(&self.fall)
            && (1..=10).contains(&self.rise)
            && self.path.as_deref().is_none_or(|path| {
                // Written into the request line as it is.
                path.starts_with('/')
                    && path.len() <= MAX_PATH
                    && path.bytes().all(|b| b.is_ascii_graphic())
            });
        if ok {
            Ok(())
        } else {
            Err(ServiceError::HealthCheck(format!(
                "interval={}ms,fall={},rise={}{}",
                self.interval_ms,
                self.fall,
                self.rise,
                self.path
                    .as_deref()
                    .map(|p| format!(",path={}", p.chars().take(64).collect::<String>()))
                    .unwrap_or_default()
            )))
        }
    }
}

/// A service as `service create` gives it. Numbers are read wide so that
/// an out-of-range one gets this module's message, not a decoder's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    /// Empty: the owner's default network (a tenant's own).
    #[serde(default)]
    pub network: String,
    pub replicas: u64,
    pub service_port: u64,
    pub container_port: u64,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// A client's connections (requests) keep going to one replica while
    /// it is healthy.
    #[serde(default)]
    pub session_affinity: bool,
    #[serde(default)]
    pub health_check: HealthCheck,
    pub image: String,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub size: String,
    /// The security groups its replicas are in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

/// Groups one service's replicas are in.
pub const MAX_GROUPS: usize = 8;

/// A service's name: a DNS label, as its replicas' names grow from it.
pub fn check_name(name: &str) -> Result<(), ServiceError> {
    let ok = (1..=48).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::InvalidName(name.chars().take(64).collect()))
    }
}

/// A replica count for create and scale.
pub fn check_replicas(replicas: u64) -> Result<u32, ServiceError> {
    u32::try_from(replicas)
        .ok()
        .filter(|r| (1..=MAX_REPLICAS).contains(r))
        .ok_or(ServiceError::Replicas(replicas))
}

fn check_port(what: &'static str, value: u64) -> Result<u16, ServiceError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(ServiceError::Port { what, value })
}

impl ServiceSpec {
    /// Whether hulld's proxy carries the service, rather than nftables:
    /// HTTP requests, counts of open connections and affinity that holds
    /// while a replica is healthy are more than a DNAT rule can do.
    pub fn proxied(&self) -> bool {
        self.protocol == Protocol::Http
            || self.algorithm == Algorithm::Leastconn
            || self.session_affinity
    }

    /// The spec's ports, once every field is checked.
    pub fn validate(&self) -> Result<(u16, u16), ServiceError> {
        check_name(&self.name)?;
        check_replicas(self.replicas)?;
        let service_port = check_port("service", self.service_port)?;
        let container_port = check_port("container", self.container_port)?;
        self.health_check.validate()?;
        if self.security_groups.len() > MAX_GROUPS {
            return Err(ServiceError::Invalid(format!(
                "a service's replicas are in at most {MAX_GROUPS} security groups"
            )));
        }
        if let Some(bad) = self
            .security_groups
            .iter()
            .find(|g| !crate::sg::model::valid_name(g))
        {
            return Err(ServiceError::Invalid(format!(
                "invalid security group name {:?}",
                bad.chars().take(64).collect::<String>()
            )));
        }
        if self.image.trim().is_empty() || self.image.len() > MAX_FIELD {
            return Err(ServiceError::Invalid(
                "give the replicas' image, at most 512 bytes".into(),
            ));
        }
        if self.size.len() > MAX_FIELD || self.network.len() > MAX_FIELD {
            return Err(ServiceError::Invalid(
                "a size or network is at most 512 bytes".into(),
            ));
        }
        if self.cmd.len() > MAX_CMD || self.cmd.iter().any(|w| w.len() > 64 * 1024) {
            return Err(ServiceError::Invalid(format!(
                "a replica's command is at most {MAX_CMD} words of 64 KiB"
            )));
        }
        Ok((service_port, container_port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".into(),
            network: String::new(),
            replicas: 3,
            service_port: 80,
            container_port: 8080,
            protocol: Protocol::Tcp,
            algorithm: Algorithm::Roundrobin,
            session_affinity: false,
            health_check: HealthCheck::default(),
            image: "busybox".into(),
            cmd: Vec::new(),
            size: String::new(),
            security_groups: Vec::new(),
        }
    }

    #[test]
    fn good_specs_pass_and_bad_ones_say_why() {
        assert_eq!(spec().validate().unwrap(), (80, 8080));
        let cases: Vec<(ServiceSpec, &str)> = vec![
            (
                ServiceSpec {
                    replicas: 0,
                    ..spec()
                },
                "replicas",
            ),
            (
                ServiceSpec {
                    replicas: 33,
                    ..spec()
                },
                "replicas",
            ),
            (
                ServiceSpec {
                    replicas: u64::MAX,
                    ..spec()
                },
                "replicas",
            ),
            (
                ServiceSpec {
                    service_port: 0,
                    ..spec()
                },
                "service port",
            ),
            (
                ServiceSpec {
                    container_port: 65536,
                    ..spec()
                },
                "container port",
            ),
            (
                ServiceSpec {
                    name: "Web".into(),
                    ..spec()
                },
                "service name",
            ),
            (
                ServiceSpec {
                    name: "a/b".into(),
                    ..spec()
                },
                "service name",
            ),
            (
                ServiceSpec {
                    name: "-a".into(),
                    ..spec()
                },
                "service name",
            ),
            (
                ServiceSpec {
                    name: "x".repeat(49),
                    ..spec()
                },
                "service name",
            ),
            (
                ServiceSpec {
                    image: " ".into(),
                    ..spec()
                },
                "image",
            ),
        ];
        for (bad, word) in cases {
            let message = bad.validate().unwrap_err().to_string();
            assert!(message.contains(word), "{message}");
            assert!(message.len() < 300);
        }
    }

    #[test]
    fn health_checks_and_algorithms_parse() {
        let check: HealthCheck = "interval=500ms,fall=2,rise=1".parse().unwrap();
        assert_eq!((check.interval_ms, check.fall, check.rise), (500, 2, 1));
        let check: HealthCheck = "rise=3".parse().unwrap();
        assert_eq!((check.interval_ms, check.fall, check.rise), (3000, 3, 3));
        let check: HealthCheck = "path=/healthz,fall=1".parse().unwrap();
        assert_eq!(check.path.as_deref(), Some("/healthz"));
        for bad in [
            "path=healthz",
            "path=/a b",
            "path=/a\r\nHost:x",
            "interval=0s",
            "fall=0",
            "rise=11",
            "x=1",
            "interval",
            "interval=99999999999999999999s",
        ] {
            assert!(bad.parse::<HealthCheck>().is_err(), "{bad}");
        }
        assert_eq!("source".parse::<Algorithm>().unwrap(), Algorithm::Source);
        assert_eq!(
            "leastconn".parse::<Algorithm>().unwrap(),
            Algorithm::Leastconn
        );
        assert!("random".parse::<Algorithm>().is_err());
        assert_eq!("http".parse::<Protocol>().unwrap(), Protocol::Http);
        assert!("udp".parse::<Protocol>().is_err());
        let mut proxied = spec();
        assert!(!proxied.proxied());
        proxied.algorithm = Algorithm::Leastconn;
        assert!(proxied.proxied());
        proxied.algorithm = Algorithm::Source;
        proxied.protocol = Protocol::Http;
        assert!(proxied.proxied());
    }
}
