//! A security group as Hyper.sh's users wrote it (`name`, `description`,
//! `rules`), read from YAML (or JSON, which is YAML too) and checked before
//! anything is stored or ruled.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{SgError, MAX_RULES, MAX_SPEC_BYTES};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub direction: Direction,
    /// `tcp`, `udp`, `icmp`, or empty for every protocol.
    #[serde(default)]
    pub protocol: String,
    /// 0 or absent: every port.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port_range_min: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port_range_max: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_name: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// An IPv4 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub address: Ipv4Addr,
    pub length: u8,
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.length)
    }
}

impl Prefix {
    /// `10.0.0.0/8`, or one address (`/32`).
    pub fn parse(text: &str) -> Option<Self> {
        let (address, length) = match text.split_once('/') {
            Some((address, length)) => (address, length.parse::<u8>().ok()?),
            None => (text, 32),
        };
        let address: Ipv4Addr = address.parse().ok()?;
        if length > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
        Some(Self {
            address: Ipv4Addr::from(u32::from(address) & mask),
            length,
        })
    }

    pub fn is_everything(&self) -> bool {
        self.length == 0
    }
}

/// Whether `name` can name a group: `[a-zA-Z0-9][a-zA-Z0-9_.-]`, at most 64.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 64
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl SecurityGroup {
    /// The group a request's body describes, checked.
    pub fn parse(body: &[u8]) -> Result<Self, SgError> {
        if body.len() > MAX_SPEC_BYTES {
            return Err(SgError::TooLarge(body.len()));
        }
        let group: Self =
            serde_norway::from_slice(body).map_err(|e| SgError::Parse(e.to_string()))?;
        group.check()?;
        Ok(group)
    }

    /// Refuses what cannot be ruled: a bad name, too many rules, a port
    /// range out of order or on a protocol without ports, a bad prefix, a
    /// rule naming both a prefix and a group.
    pub fn check(&self) -> Result<(), SgError> {
        if !valid_name(&self.name) {
            return Err(SgError::InvalidName(self.name.clone()));
        }
        if self.rules.len() > MAX_RULES {
            return Err(SgError::TooManyRules(self.rules.len()));
        }
        if self.description.len() > 1024 {
            return Err(SgError::Invalid(
                "the description is longer than 1024 bytes".into(),
            ));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            rule.check()
                .map_err(|why| SgError::Invalid(format!("rule {}: {why}", index + 1)))?;
        }
        Ok(())
    }

    /// The groups this one's rules name, itself included if it names itself.
    pub fn remote_groups(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .filter_map(|r| r.remote_group_name.as_deref())
    }
}

impl Rule {
    fn check(&self) -> Result<(), String> {
        let ports = self.port_range_min != 0 || self.port_range_max != 0;
        match self.protocol.as_str() {
            "tcp" | "udp" => {}
            "icmp" | "" if ports => {
                return Err(format!(
                    "port ranges need protocol tcp or udp, not {:?}",
                    self.protocol
                ))
            }
            "icmp" | "" => {}
            other => {
                return Err(format!(
                    "protocol {other:?} is not one of tcp, udp, icmp or \"\""
                ))
            }
        }
        let (min, max) = self.ports();
        if max > 65535 || min > max || (ports && min == 0) {
            return Err(format!(
                "port range {}-{} is not within 1-65535 and in order",
                self.port_range_min, self.port_range_max
            ));
        }
        match (&self.remote_ip_prefix, &self.remote_group_name) {
            (Some(_), Some(_)) => {
                Err("give remote_ip_prefix or remote_group_name, not both".into())
            }
            (Some(prefix), None) if Prefix::parse(prefix).is_none() => Err(format!(
                "remote_ip_prefix {prefix:?} is not an IPv4 prefix like 10.0.0.0/8"
            )),
            (None, Some(group)) if !valid_name(group) => {
                Err(format!("remote_group_name {group:?} is not a group name"))
            }
            _ => Ok(()),
        }
    }

    /// The rule's port range; `(0, 0)` for every port. A lone minimum is
    /// one port.
    pub fn ports(&self) -> (u32, u32) {
        match (self.port_range_min, self.port_range_max) {
            (0, 0) => (0, 0),
            (min, 0) => (min, min),
            (0, max) => (0, max),
            (min, max) => (min, max),
        }
    }

    pub fn prefix(&self) -> Option<Prefix> {
        self.remote_ip_prefix.as_deref().and_then(Prefix::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "
name: web
description: the web servers
rules:
  - direction: ingress
    protocol: tcp
    port_range_min: 80
    port_range_max: 80
    remote_ip_prefix: 0.0.0.0/0
  - direction: ingress
    protocol: icmp
    remote_group_name: web
  - direction: egress
    protocol: ''
";

    #[test]
    fn hyper_shs_yaml_reads() {
        let group = SecurityGroup::parse(WEB.as_bytes()).unwrap();
        assert_eq!(group.name, "web");
        assert_eq!(group.rules.len(), 3);
        assert_eq!(group.rules[0].ports(), (80, 80));
        assert_eq!(group.rules[1].remote_group_name.as_deref(), Some("web"));
        assert_eq!(group.rules[2].direction, Direction::Egress);
        assert_eq!(group.remote_groups().collect::<Vec<_>>(), ["web"]);
        // JSON is YAML too, and what is stored reads back.
        let json = serde_json::to_vec(&group).unwrap();
        assert_eq!(SecurityGroup::parse(&json).unwrap(), group);
    }

    #[test]
    fn prefixes_lose_their_host_bits() {
        let p = Prefix::parse("10.1.2.3/8").unwrap();
        assert_eq!(p.to_string(), "10.0.0.0/8");
        assert_eq!(
            Prefix::parse("10.1.2.3").unwrap().to_string(),
            "10.1.2.3/32"
        );
        assert!(Prefix::parse("0.0.0.0/0").unwrap().is_everything());
        for bad in ["10.0.0.0/33", "::1/128", "x", "10.0.0/8", ""] {
            assert!(Prefix::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hostile_groups_are_refused() {
        let rule = |extra: &str| format!("name: g\nrules:\n  - direction: ingress\n{extra}");
        for bad in [
            "name: ''\n".to_owned(),
            "name: ../etc\n".to_owned(),
            format!("name: {}\n", "a".repeat(65)),
            "name: g\nowner: acme\n".to_owned(),
            rule("    protocol: sctp\n"),
            rule("    protocol: tcp\n    port_range_min: 90\n    port_range_max: 80\n"),
            rule("    protocol: tcp\n    port_range_min: 70000\n    port_range_max: 70000\n"),
            rule("    protocol: icmp\n    port_range_min: 8\n"),
            rule("    protocol: ''\n    port_range_max: 8\n"),
            rule("    remote_ip_prefix: 10.0.0.0/8\n    remote_group_name: g\n"),
            rule("    remote_ip_prefix: '10.0.0.0/8; flush ruleset'\n"),
            rule("    remote_group_name: 'g\" accept'\n"),
            rule("    direction: sideways\n"),
            "name: [1, 2]\n".to_owned(),
            "- a\n- b\n".to_owned(),
        ] {
            assert!(SecurityGroup::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn too_many_rules_and_too_large_bodies_are_refused() {
        let mut text = "name: many\nrules:\n".to_owned();
        for port in 1..=MAX_RULES + 1 {
            text.push_str(&format!(
                "  - {{direction: ingress, protocol: tcp, port_range_min: {port}}}\n"
            ));
        }
        assert!(matches!(
            SecurityGroup::parse(text.as_bytes()),
            Err(SgError::TooManyRules(n)) if n == MAX_RULES + 1
        ));
        let huge = format!("name: g\ndescription: {}\n", "x".repeat(MAX_SPEC_BYTES));
        assert!(matches!(
            SecurityGroup::parse(huge.as_bytes()),
            Err(SgError::TooLarge(_))
        ));
        // Aliases that would expand a small body into a huge one.
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\nname: g\nrules: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n";
        assert!(SecurityGroup::parse(laughs.as_bytes()).is_err());
    }
}
