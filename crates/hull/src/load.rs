//! `hull load`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use hull_api::Client;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Archive to read; standard input when omitted.
    #[arg(short, long, default_value = "-")]
    input: PathBuf,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn load(client: &Client, args: LoadArgs) -> Result<()> {
    for line in client.load(&args.input).await? {
        if let Some(error) = line.error {
            bail!("{error}");
        }
        if let (Some(text), false) = (line.stream, args.quiet) {
            print!("{text}");
        }
    }
    Ok(())
}
