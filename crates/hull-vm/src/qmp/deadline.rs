//! How long QEMU may take to answer each QMP command. A live QEMU answers
//! most at once, from its main loop; the deadline only has to catch one
//! that is wedged, stopped or hostile, and is generous for TCG on a loaded
//! host, where the main loop competes with the vCPUs for the host's CPUs.

use std::time::Duration;

/// Commands QEMU answers from its main loop at once: queries, plugging,
/// the balloon, `quit`.
const QUICK: Duration = Duration::from_secs(10);
/// Commands that do their work before they answer, and the queries that
/// wait for it: `stop` drains and flushes every disk, `cont` reactivates
/// them after an incoming migration, and while a migration's device state
/// loads the main loop answers nothing (`query-status` is what polls it).
const LONG: Duration = Duration::from_secs(60);

/// How long QEMU may take to greet a new QMP connection.
pub const GREETING: Duration = QUICK;

/// The deadline of the QMP command `command`.
pub fn deadline(command: &str) -> Duration {
    match command {
        "stop" | "cont" | "migrate" | "migrate-incoming" | "query-migrate" | "query-status" => LONG,
        _ => QUICK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_style_commands_wait_longer_than_the_rest() {
        for long in ["stop", "migrate", "migrate-incoming", "query-migrate"] {
            assert!(deadline(long) > deadline("balloon"), "{long}");
        }
        for quick in ["quit", "device_del", "getfd", "qmp_capabilities", "unknown"] {
            assert_eq!(deadline(quick), QUICK, "{quick}");
        }
    }
}
