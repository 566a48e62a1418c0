//! `hull save`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use hull_api::Client;

use crate::archive_out::ArchiveOut;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A docker-archive that is also an OCI layout, as `docker save` writes.
    Docker,
    /// An OCI image layout.
    Oci,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// File to write; standard output when omitted.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Kind of archive.
    #[arg(long, value_enum, default_value = "docker")]
    format: Format,
    /// Images to save: names, ids or digests.
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn save(client: &Client, args: SaveArgs) -> Result<()> {
    let oci = args.format == Format::Oci;
    let mut out = ArchiveOut::open(args.output.as_deref(), ".hull-save-")?;
    client.save(&args.images, oci, out.writer()).await?;
    out.finish().await
}
