//! `hull save`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hull_api::Client;

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
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed, so a failed save leaves no partial archive.
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            let tmp = tempfile::Builder::new()
                .prefix(".hull-save-")
                .tempfile_in(dir.unwrap_or(std::path::Path::new(".")))
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut file = tokio::fs::File::from_std(tmp.reopen()?);
            client.save(&args.images, oci, &mut file).await?;
            file.sync_all().await?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            client
                .save(&args.images, oci, &mut tokio::io::stdout())
                .await?;
        }
    }
    Ok(())
}
