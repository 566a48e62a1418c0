//! The host's health checks of replicas: a TCP connection to the
//! replica's container port, or with a path an HTTP GET of it answered
//! 2xx or 3xx, from hulld itself (the host routes every bridge network),
//! counted into HAProxy-style fall and rise.

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

/// Bytes of a probe's answer read for its status line.
const STATUS_LINE: usize = 256;

/// Whether `address:port` takes a TCP connection within the timeout and,
/// with `path`, answers a GET of it with 2xx or 3xx.
pub async fn probe(address: Ipv4Addr, port: u16, path: Option<&str>) -> bool {
    let target = SocketAddr::from((address, port));
    let probed = async {
        let mut stream = tokio::net::TcpStream::connect(target).await.ok()?;
        let Some(path) = path else {
            return Some(true);
        };
        Some(http_passes(&mut stream, &target.to_string(), path).await)
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probed).await,
        Ok(Some(true))
    )
}

/// A GET of `path` on `stream`: whether its status is 2xx or 3xx.
async fn http_passes<S>(stream: &mut S, host: &str, path: &str) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: hull-health\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::with_capacity(STATUS_LINE);
    let mut buffer = [0u8; STATUS_LINE];
    while !head.contains(&b'\n') && head.len() < STATUS_LINE {
        match stream.read(&mut buffer[..STATUS_LINE - head.len()]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    // "HTTP/1.x 200 ..."
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_ascii_whitespace();
    words.next().is_some_and(|v| v.starts_with("HTTP/"))
        && words
            .next()
            .and_then(|code| code.parse::<u16>().ok())
            .is_some_and(|code| (200..400).contains(&code))
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
            path: None,
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

    /// What a replica answers, then whether the probe passes.
    async fn passes(answer: &'static [u8]) -> (bool, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut probe, mut replica) = tokio::io::duplex(4096);
        let serve = async move {
            let mut asked = vec![0u8; 1024];
            let n = replica.read(&mut asked).await.unwrap();
            replica.write_all(answer).await.unwrap();
            String::from_utf8_lossy(&asked[..n]).into_owned()
        };
        let (passed, asked) =
            tokio::join!(http_passes(&mut probe, "10.0.0.2:80", "/healthz"), serve);
        (passed, asked)
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_3xx_only() {
        let (passed, asked) = passes(b"HTTP/1.0 200 OK\r\n\r\nok").await;
        assert!(passed);
        assert!(asked.starts_with("GET /healthz HTTP/1.0\r\nHost: 10.0.0.2:80\r\n"));
        assert!(passes(b"HTTP/1.1 302 Found\r\n\r\n").await.0);
        assert!(!passes(b"HTTP/1.1 404 Not Found\r\n\r\n").await.0);
        assert!(!passes(b"HTTP/1.1 500 Oops\r\n\r\n").await.0);
        assert!(!passes(b"SSH-2.0-OpenSSH\r\n").await.0);
        assert!(!passes(b"").await.0);
        // A status line that never ends is read no further than its bound.
        assert!(!passes(&[b'x'; 300]).await.0);
    }
}
