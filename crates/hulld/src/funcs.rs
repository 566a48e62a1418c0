//! The function call plane's listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hull_api::func::FuncConfig;
use hull_api::Daemon;
use tracing::info;

/// Sets the call plane's bounds, takes back the calls a stopped hulld
/// left queued, and serves calls on `listen` (tcp://ADDR:PORT) if given.
pub async fn start(
    daemon: Arc<Daemon>,
    listen: Option<&str>,
    max_io: u64,
    max_queue: usize,
    result_ttl: u64,
) -> Result<()> {
    let max_io = usize::try_from(max_io).context("--func-max-io is too large")?;
    daemon.funcs().configure(FuncConfig {
        max_input: max_io,
        max_output: max_io,
        max_queue,
        result_ttl: Duration::from_secs(result_ttl),
    });
    let addr = listen
        .map(|text| crate::tenants::parse_tcp("--func-listen", text))
        .transpose()?;
    hull_api::func::spawn(daemon.clone());
    let Some(addr) = addr else {
        return Ok(());
    };
    // Calls and their results cross it in the clear.
    if !addr.ip().is_loopback() {
        bail!("--func-listen serves plain HTTP: give it a loopback address, not {addr}");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve function calls on tcp://{addr}"))?;
    info!(address = %listener.local_addr()?, "serving function calls");
    tokio::spawn(hull_api::func::plane::serve(listener, daemon));
    Ok(())
}
