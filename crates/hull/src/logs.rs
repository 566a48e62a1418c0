//! `hull logs`: a container's output, stdout and stderr each to its own.

use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::Args;
use hull_api::client::LogsOptions;
use hull_api::units::api_timestamp;
use hull_api::Client;

use crate::stdio;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing output as it comes, until the container stops.
    #[arg(short, long)]
    follow: bool,
    /// Prefix each line with its time.
    #[arg(short, long)]
    timestamps: bool,
    /// Only this many lines from the end ("all" for every line).
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<String>,
    /// Only output after this time: a timestamp (2024-01-02T13:04:05Z, Unix
    /// seconds) or a duration before now (42m).
    #[arg(long)]
    since: Option<String>,
    /// Only output before this time, given as for --since.
    #[arg(long)]
    until: Option<String>,
    container: String,
}

pub async fn logs(client: &Client, args: LogsArgs) -> Result<i32> {
    let now = SystemTime::now();
    let options = LogsOptions {
        follow: args.follow,
        timestamps: args.timestamps,
        tail: args.tail,
        since: args.since.map(|t| timestamp(&t, now)).transpose()?,
        until: args.until.map(|t| timestamp(&t, now)).transpose()?,
    };
    let output = client.container_logs(&args.container, &options).await?;
    stdio::copy_output(output.stream, output.multiplexed).await?;
    Ok(0)
}

/// docker's `--since`/`--until` as the API's Unix seconds.
pub(crate) fn timestamp(text: &str, now: SystemTime) -> Result<String> {
    match api_timestamp(text, now) {
        Some(seconds) => Ok(seconds),
        None => bail!("invalid time {text:?}: neither a timestamp nor a duration"),
    }
}
