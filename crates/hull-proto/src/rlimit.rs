//! Resource limits of a container's processes, named as the OCI runtime
//! spec's `process.rlimits` names them.

use serde::{Deserialize, Serialize};

/// One `setrlimit(2)` the agent makes in a new process before it execs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// One of [`RLIMIT_KINDS`], as the OCI spec spells it: `RLIMIT_NOFILE`.
    pub kind: String,
    pub soft: u64,
    /// At least `soft`.
    pub hard: u64,
}

/// The value that means no limit: the kernel's `RLIM_INFINITY`.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// Every resource a [`Rlimit`] may name: Linux's, which the agent knows.
pub const RLIMIT_KINDS: [&str; 16] = [
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

impl Rlimit {
    pub fn new(kind: impl Into<String>, soft: u64, hard: u64) -> Self {
        Self {
            kind: kind.into(),
            soft,
            hard,
        }
    }

    /// The limit under the short name that docker's `--ulimit` and the
    /// Engine API's `Ulimits` use (`nofile` for `RLIMIT_NOFILE`); `None`
    /// for a name that is no resource.
    pub fn from_short_name(name: &str, soft: u64, hard: u64) -> Option<Self> {
        let kind = format!("RLIMIT_{}", name.to_ascii_uppercase());
        RLIMIT_KINDS
            .contains(&kind.as_str())
            .then(|| Self::new(kind, soft, hard))
    }

    /// Docker's name of the resource: `nofile` for `RLIMIT_NOFILE`.
    pub fn short_name(&self) -> String {
        let name = self.kind.strip_prefix("RLIMIT_").unwrap_or(&self.kind);
        name.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_the_kinds_without_their_prefix() {
        let limit = Rlimit::from_short_name("nofile", 1024, 2048).unwrap();
        assert_eq!(limit, Rlimit::new("RLIMIT_NOFILE", 1024, 2048));
        assert_eq!(limit.short_name(), "nofile");
        for kind in RLIMIT_KINDS {
            let limit = Rlimit::new(kind, 1, 1);
            assert_eq!(
                Rlimit::from_short_name(&limit.short_name(), 1, 1),
                Some(limit)
            );
        }
    }

    #[test]
    fn names_that_are_no_resource_are_refused() {
        for name in ["", "files", "rlimit_nofile", "RLIMIT_NOFILE", "no file"] {
            assert_eq!(Rlimit::from_short_name(name, 1, 1), None, "{name:?}");
        }
    }
}
