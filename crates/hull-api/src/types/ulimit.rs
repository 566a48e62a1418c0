//! Docker's ulimits (`--ulimit nofile=1024:2048`, `HostConfig.Ulimits`) and
//! the resource limits they are in the guest.

use hull_proto::{Rlimit, RLIM_INFINITY};
use serde::{Deserialize, Serialize};

/// One entry of `HostConfig.Ulimits`, its fields in docker's order. A
/// limit of -1 is no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    /// The resource's short name: `nofile`, `nproc`, `core`, …
    pub name: String,
    pub hard: i64,
    pub soft: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UlimitError {
    #[error("invalid ulimit argument {0:?}: it must be TYPE=SOFT[:HARD], as nofile=1024:2048")]
    Syntax(String),
    #[error("invalid ulimit type {0:?}: it must be one of core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack")]
    UnknownName(String),
    #[error("invalid ulimit value {value:?} of {name}: it must be a number of 0 or more, or -1 for no limit")]
    Value { name: String, value: String },
    #[error(
        "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard} for {name}"
    )]
    SoftAboveHard { name: String, soft: i64, hard: i64 },
}

impl Ulimit {
    /// Parses `--ulimit`'s `TYPE=SOFT[:HARD]`; without a hard limit, it
    /// is the soft one, as docker takes it.
    pub fn parse(text: &str) -> Result<Self, UlimitError> {
        let syntax = || UlimitError::Syntax(text.to_owned());
        let (name, values) = text.split_once('=').ok_or_else(syntax)?;
        let (soft, hard) = match values.split_once(':') {
            Some((soft, hard)) => (soft, hard),
            None => (values, values),
        };
        let number = |value: &str| {
            value.parse::<i64>().map_err(|_| UlimitError::Value {
                name: name.to_owned(),
                value: value.to_owned(),
            })
        };
        let ulimit = Self {
            name: name.to_owned(),
            soft: number(soft)?,
            hard: number(hard)?,
        };
        ulimit.to_rlimit()?;
        Ok(ulimit)
    }

    /// The limit the agent sets.
    pub fn to_rlimit(&self) -> Result<Rlimit, UlimitError> {
        let value = |value: i64| match value {
            -1 => Ok(RLIM_INFINITY),
            _ => u64::try_from(value).map_err(|_| UlimitError::Value {
                name: self.name.clone(),
                value: value.to_string(),
            }),
        };
        let (soft, hard) = (value(self.soft)?, value(self.hard)?);
        if soft > hard {
            return Err(UlimitError::SoftAboveHard {
                name: self.name.clone(),
                soft: self.soft,
                hard: self.hard,
            });
        }
        Rlimit::from_short_name(&self.name, soft, hard)
            .ok_or_else(|| UlimitError::UnknownName(self.name.clone()))
    }

    /// How docker shows a limit of the container.
    pub fn from_rlimit(limit: &Rlimit) -> Self {
        let value = |value: u64| i64::try_from(value).unwrap_or(-1);
        Self {
            name: limit.short_name(),
            soft: value(limit.soft),
            hard: value(limit.hard),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ulimit(name: &str, soft: i64, hard: i64) -> Ulimit {
        Ulimit {
            name: name.into(),
            soft,
            hard,
        }
    }

    #[test]
    fn a_ulimit_is_type_soft_and_optional_hard() {
        assert_eq!(
            Ulimit::parse("nofile=1024:2048"),
            Ok(ulimit("nofile", 1024, 2048))
        );
        assert_eq!(Ulimit::parse("nproc=64"), Ok(ulimit("nproc", 64, 64)));
        assert_eq!(Ulimit::parse("core=0:-1"), Ok(ulimit("core", 0, -1)));
    }

    #[test]
    fn malformed_ulimits_say_what_is_wrong() {
        let cases = [
            ("nofile", UlimitError::Syntax("nofile".into())),
            ("files=1", UlimitError::UnknownName("files".into())),
            (
                "nofile=1:2:3",
                UlimitError::Value {
                    name: "nofile".into(),
                    value: "2:3".into(),
                },
            ),
            (
                "nofile=-2",
                UlimitError::Value {
                    name: "nofile".into(),
                    value: "-2".into(),
                },
            ),
            (
                "nofile=2048:1024",
                UlimitError::SoftAboveHard {
                    name: "nofile".into(),
                    soft: 2048,
                    hard: 1024,
                },
            ),
        ];
        for (text, error) in cases {
            assert_eq!(Ulimit::parse(text), Err(error), "{text}");
        }
    }

    #[test]
    fn minus_one_is_no_limit_both_ways() {
        let limit = ulimit("core", 0, -1).to_rlimit().unwrap();
        assert_eq!(limit, Rlimit::new("RLIMIT_CORE", 0, RLIM_INFINITY));
        assert_eq!(Ulimit::from_rlimit(&limit), ulimit("core", 0, -1));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = Ulimit::parse(&text);
        }

        #[test]
        fn valid_limits_survive_the_way_to_the_agent_and_back(
            soft in 0..i64::MAX,
            extra in 0..1_000_000i64,
        ) {
            let hard = soft.saturating_add(extra);
            let parsed = Ulimit::parse(&format!("nofile={soft}:{hard}")).unwrap();
            let limit = parsed.to_rlimit().unwrap();
            prop_assert_eq!(Ulimit::from_rlimit(&limit), parsed);
        }
    }
}
