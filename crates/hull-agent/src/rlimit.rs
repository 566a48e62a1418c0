//! From a process's [`Rlimit`]s to what `prlimit64(2)` takes, checked
//! before the clone: the child can report only an errno.

use hull_proto::Rlimit;

/// A limit ready for the child: the resource's number and its values.
#[derive(Clone, Copy)]
pub struct ResourceLimit {
    pub resource: libc::__rlimit_resource_t,
    pub limit: libc::rlimit64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RlimitError {
    #[error("unknown resource limit {0:?}: it must be one of RLIMIT_AS, RLIMIT_NOFILE, …")]
    UnknownKind(String),
    #[error("the soft limit {soft} of {kind} is above its hard limit {hard}")]
    SoftAboveHard { kind: String, soft: u64, hard: u64 },
}

/// The number Linux gives the resource `kind`.
fn resource(kind: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Checks and converts every limit, in order.
pub fn resolve(limits: &[Rlimit]) -> Result<Vec<ResourceLimit>, RlimitError> {
    limits
        .iter()
        .map(|limit| {
            let resource = resource(&limit.kind)
                .ok_or_else(|| RlimitError::UnknownKind(limit.kind.clone()))?;
            if limit.soft > limit.hard {
                return Err(RlimitError::SoftAboveHard {
                    kind: limit.kind.clone(),
                    soft: limit.soft,
                    hard: limit.hard,
                });
            }
            Ok(ResourceLimit {
                resource,
                limit: libc::rlimit64 {
                    rlim_cur: limit.soft,
                    rlim_max: limit.hard,
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_the_protocol_is_a_resource_of_linux() {
        for kind in hull_proto::RLIMIT_KINDS {
            assert!(resource(kind).is_some(), "{kind}");
        }
        let numbers: std::collections::BTreeSet<_> = hull_proto::RLIMIT_KINDS
            .iter()
            .filter_map(|k| resource(k))
            .collect();
        assert_eq!(numbers.len(), hull_proto::RLIMIT_KINDS.len());
    }

    #[test]
    fn limits_keep_their_order_and_values() {
        let limits = [
            Rlimit::new("RLIMIT_NOFILE", 1024, 2048),
            Rlimit::new("RLIMIT_CORE", 0, hull_proto::RLIM_INFINITY),
        ];
        let resolved = resolve(&limits).unwrap();
        assert_eq!(resolved[0].resource, libc::RLIMIT_NOFILE);
        assert_eq!(
            (resolved[0].limit.rlim_cur, resolved[0].limit.rlim_max),
            (1024, 2048)
        );
        assert_eq!(resolved[1].resource, libc::RLIMIT_CORE);
        assert_eq!(resolved[1].limit.rlim_max, libc::RLIM64_INFINITY);
    }

    #[test]
    fn unknown_kinds_and_inverted_limits_are_refused() {
        assert_eq!(
            resolve(&[Rlimit::new("RLIMIT_FILES", 1, 1)]).err(),
            Some(RlimitError::UnknownKind("RLIMIT_FILES".into()))
        );
        let inverted = resolve(&[Rlimit::new("RLIMIT_NOFILE", 10, 5)])
            .err()
            .unwrap();
        assert_eq!(
            inverted.to_string(),
            "the soft limit 10 of RLIMIT_NOFILE is above its hard limit 5"
        );
    }
}
