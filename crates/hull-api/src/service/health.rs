//! The host's health checks of replicas: a TCP connection to the
//! replica's container port, from hulld itself (the host routes every
//! bridge network), counted into HAProxy-style fall and rise.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use hull_net::service::HealthCheck;

/// A probe waits at most this long for a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A replica that never passes, or keeps failing, this many probes after
/// its fall is replaced: its VM runs, but what it serves does not answer.
pub const REPLACE_AFTER: u32 = 20;

/// One replica's record of probes.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub healthy: bool,
    /// Probes passed (or failed) in a row.
    pub passes: u32,
    pub failures: u32,
    pub last: Option<Instant>,
    /// When it last left the balancer.
    pub fell_at: Option<Instant>,
}

impl Health {
    pub fn due(&self, check: &HealthCheck, now: Instant) -> bool {
        self.last
            .is_none_or(|last| now.duration_since(last) >= Duration::from_millis(check.interval_ms))
    }

    /// Counts one probe's outcome; whether the replica changed state.
    pub fn record(&mut self, check: &HealthCheck, passed: bool, now: Instant) -> bool {
        self.last = Some(now);
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            if !self.healthy && self.passes >= check.rise {
                self.healthy = true;
                return true;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            if self.healthy && self.failures >= check.fall {
                self.healthy = false;
                self.fell_at = Some(now);
                return true;
            }
        }
        false
    }

    /// Whether it failed for so long that it is better replaced.
    pub fn hopeless(&self, check: &HealthCheck) -> bool {
        !self.healthy && self.failures >= check.fall + REPLACE_AFTER
    }
}

/// Whether `address:port` takes a TCP connection within the timeout.
pub async fn probe(address: Ipv4Addr, port: u16) -> bool {
    let target = SocketAddr::from((address, port));
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await,
        Ok(Ok(_))
    )
}

/// The health of every replica, by container id.
pub type Table = BTreeMap<String, Health>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_and_rise_count_probes_in_a_row() {
        let check = HealthCheck {
            interval_ms: 1000,
            fall: 2,
            rise: 2,
        };
        let now = Instant::now();
        let mut health = Health::default();
        assert!(health.due(&check, now));
        assert!(!health.record(&check, true, now));
        assert!(!health.due(&check, now));
        assert!(health.record(&check, true, now));
        assert!(health.healthy);
        assert!(!health.record(&check, false, now));
        assert!(!health.record(&check, true, now));
        assert!(!health.record(&check, false, now));
        assert!(health.record(&check, false, now));
        assert!(!health.healthy && health.fell_at.is_some());
        for _ in 0..REPLACE_AFTER {
            health.record(&check, false, now);
        }
        assert!(health.hopeless(&check));
    }
}
