//! `hull exec`: a command beside a container's main process.

use anyhow::Result;
use clap::Args;
use hull_api::types::container::{ExecCreate, ExecStart};
use hull_api::Client;

use crate::run::environment;
use crate::stdio::{self, SizeOf};
use crate::terminal;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Run in the background.
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// User to run as: name, uid, uid:gid or name:group.
    #[arg(short, long)]
    user: Option<String>,
    container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the command and exits with its code, as docker does.
pub async fn exec(client: &Client, args: ExecArgs) -> Result<i32> {
    let attached = !args.detach;
    if attached {
        stdio::check_tty_input(args.tty, args.interactive)?;
    }
    let body = ExecCreate {
        attach_stdin: attached && args.interactive,
        attach_stdout: attached,
        attach_stderr: attached,
        tty: args.tty,
        env: Some(environment(&args.env)),
        cmd: Some(args.command.clone()),
        working_dir: args.workdir.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_default(),
        console_size: console_size(args.tty),
        ..Default::default()
    };
    let id = client.create_exec(&args.container, &body).await?;
    if args.detach {
        client.start_exec_detached(&id).await?;
        return Ok(0);
    }
    let start = ExecStart {
        detach: false,
        tty: args.tty,
        console_size: console_size(args.tty),
    };
    let stream = client.start_exec(&id, &start).await?;
    let raw = stdio::raw_mode(args.tty, args.interactive);
    if args.tty {
        stdio::follow_size(client, SizeOf::Exec(id.clone()))?;
    }
    stdio::relay(stream, args.interactive).await?;
    drop(raw);
    exit_code(client, &id).await
}

fn console_size(tty: bool) -> Option<[u16; 2]> {
    tty.then(|| terminal::size(1))
        .flatten()
        .map(|(rows, cols)| [rows, cols])
}

/// The exec's exit code: hulld records it before the stream ends.
async fn exit_code(client: &Client, id: &str) -> Result<i32> {
    let inspected = client.inspect_exec(id).await?;
    Ok(inspected.exit_code.unwrap_or(126))
}
