//! The function call plane's listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hull_api::func::FuncConfig;
use hull_api::{tls, Daemon};
use tracing::info;

use crate::certs::ServerTls;

/// The call plane's flags.
#[derive(Debug, clap::Args)]
pub struct FuncArgs {
    /// Serve function calls on this address (tcp://0.0.0.0:8080): plain
    /// HTTP on a loopback address, TLS with the tenant listener's
    /// certificate (--tls-cert, or Hull's own under <root>/tls) on any other.
    #[arg(long, env = "HULL_FUNC_LISTEN", value_name = "tcp://ADDR:PORT")]
    func_listen: Option<String>,
    /// The most bytes of a function call's stdin, and of its stdout.
    #[arg(long, env = "HULL_FUNC_MAX_IO", value_name = "SIZE", value_parser = crate::parse_size,
          default_value = "1M")]
    func_max_io: u64,
    /// Calls of one function that may wait for a free slot; more answer 429.
    #[arg(long, env = "HULL_FUNC_MAX_QUEUE", value_name = "N", value_parser = crate::parse_count,
          default_value_t = 100)]
    func_max_queue: usize,
    /// Seconds a call's result is kept unfetched; then it answers 410.
    #[arg(
        long,
        env = "HULL_FUNC_RESULT_TTL",
        value_name = "SECONDS",
        default_value_t = 3600
    )]
    func_result_ttl: u64,
    /// The bytes the calls of one tenant's functions may hold (requests
    /// waiting to run, results not fetched yet; the operator's functions
    /// count as one tenant's); a call past it answers 507.
    #[arg(long, env = "HULL_FUNC_MAX_HELD", value_name = "SIZE", value_parser = crate::parse_size,
          default_value = "64M")]
    func_max_held: u64,
    /// Calls of one tenant's functions running at once, all its functions
    /// together; more wait in their functions' queues.
    #[arg(long, env = "HULL_FUNC_MAX_RUNNING_PER_TENANT", value_name = "N", value_parser = crate::parse_count,
          default_value_t = hull_api::func::DEFAULT_MAX_RUNNING_PER_OWNER)]
    func_max_running_per_tenant: usize,
    /// Call plane connections the calls of one tenant's functions may hold
    /// at once (sync calls and output waits count); a call on one more is
    /// answered 429 and its connection closed.
    #[arg(long, env = "HULL_FUNC_MAX_CONNECTIONS_PER_TENANT", value_name = "N", value_parser = crate::parse_count,
          default_value_t = hull_api::func::DEFAULT_MAX_CONNECTIONS_PER_OWNER)]
    func_max_connections_per_tenant: usize,
    /// Call plane connections one address (an IPv6 /64) may hold before a
    /// request on them names a function; one more is closed at once.
    #[arg(long, env = "HULL_FUNC_MAX_UNAUTHENTICATED_PER_ADDRESS", value_name = "N", value_parser = crate::parse_count,
          default_value_t = hull_api::func::DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS)]
    func_max_unauthenticated_per_address: usize,
}

impl FuncArgs {
    /// `--func-listen`'s address, if given.
    pub fn listen_address(&self) -> Result<Option<SocketAddr>> {
        self.func_listen
            .as_deref()
            .map(|text| crate::tenants::parse_tcp("--func-listen", text))
            .transpose()
    }
}

/// Whether the call plane on `addr` serves TLS: calls and their results
/// cross any network but loopback, so only loopback is served plain.
pub fn needs_tls(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Sets the call plane's bounds, takes back the calls a stopped hulld
/// left queued, and serves calls on `addr` if given: with TLS and `cert`
/// unless it is a loopback address.
pub async fn start(
    daemon: Arc<Daemon>,
    args: &FuncArgs,
    addr: Option<SocketAddr>,
    cert: Option<&ServerTls>,
) -> Result<()> {
    let max_io = usize::try_from(args.func_max_io).context("--func-max-io is too large")?;
    daemon.funcs().configure(FuncConfig {
        max_input: max_io,
        max_output: max_io,
        max_queue: args.func_max_queue,
        result_ttl: Duration::from_secs(args.func_result_ttl),
        max_held_bytes: args.func_max_held,
        max_running_per_owner: args.func_max_running_per_tenant,
        max_connections_per_owner: args.func_max_connections_per_tenant,
        max_unauthenticated_per_address: args.func_max_unauthenticated_per_address,
    });
    hull_api::func::spawn(daemon.clone());
    let Some(addr) = addr else {
        return Ok(());
    };
    let acceptor = match (needs_tls(&addr), cert) {
        (false, _) => None,
        (true, Some(cert)) => {
            let config =
                tls::server_config_without_clients(&cert.files).with_context(|| cert.unusable())?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        }
        (true, None) => bail!("--func-listen {addr} serves TLS, but hulld has no certificate"),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve function calls on tcp://{addr}"))?;
    let tls = acceptor.is_some();
    info!(address = %listener.local_addr()?, tls, "serving function calls");
    tokio::spawn(hull_api::func::plane::serve(listener, acceptor, daemon));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_plain() {
        for plain in ["127.0.0.1:8080", "127.0.0.53:8080", "[::1]:8080"] {
            assert!(!needs_tls(&plain.parse().unwrap()), "{plain}");
        }
        for tls in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.0.2.7:8080",
            "[2001:db8::1]:80",
        ] {
            assert!(needs_tls(&tls.parse().unwrap()), "{tls}");
        }
    }
}
