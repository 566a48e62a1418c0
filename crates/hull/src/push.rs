//! `hull push`.

use anyhow::{bail, Result};
use clap::Args;
use hull_api::{Client, Reference};

use crate::pull::{credentials, follow};

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image to push: NAME[:TAG], as it is tagged here.
    image: String,
    /// Reach the registry over plain HTTP (loopback registries always are).
    #[arg(long)]
    insecure: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn push(client: &Client, args: PushArgs) -> Result<()> {
    let reference = Reference::parse(&args.image)?.with_default_tag();
    if reference.digest().is_some() {
        bail!("cannot push {}: push a tag, not a digest", args.image);
    }
    let auth = credentials(reference.domain())?.map(|c| c.to_header());
    let stream = client
        .push(&reference.to_string(), auth.as_deref(), args.insecure)
        .await?;
    follow(stream, args.quiet).await
}
