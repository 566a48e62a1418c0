//! `hull attach`, and the attached session `hull start -a` shares with it.

use anyhow::{bail, Result};
use clap::Args;
use hull_api::Client;

use crate::stdio::{self, SizeOf};

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Do not attach stdin.
    #[arg(long)]
    no_stdin: bool,
    container: String,
}

pub async fn attach(client: &Client, args: AttachArgs) -> Result<i32> {
    session(client, &args.container, !args.no_stdin, false).await
}

/// Relays the container's stdio (stdin too when asked and it keeps stdin
/// open) until its process ends, starting it first when `start`; returns
/// its exit code.
pub async fn session(client: &Client, container: &str, stdin: bool, start: bool) -> Result<i32> {
    let inspected = client.inspect_container(container).await?;
    if !start && !inspected.state.running {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let (id, tty) = (inspected.id, inspected.config.tty);
    let stdin = stdin && inspected.config.open_stdin;
    stdio::check_tty_input(tty, stdin)?;
    let attached = client.attach_container(&id, stdin).await?;
    let condition = if start { "next-exit" } else { "not-running" };
    let wait = client.wait_container(&id, condition).await?;
    let raw = stdio::raw_mode(tty, stdin);
    if start {
        client.start_container(&id).await?;
    }
    if tty {
        stdio::follow_size(client, SizeOf::Container(id.clone()))?;
    } else {
        stdio::proxy_signals(client, &id)?;
    }
    stdio::relay(attached, stdin).await?;
    let status = wait.result().await?;
    drop(raw);
    Ok(i32::try_from(status.status_code).unwrap_or(1))
}
