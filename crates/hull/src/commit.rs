//! `hull commit`, `hull export` and `hull import`, with docker's flags.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use hull_api::{Client, CommitOptions};

use crate::archive_out::ArchiveOut;

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (e.g. "Jane Doe <jane@example.com>").
    #[arg(short, long, default_value = "")]
    author: String,
    /// Dockerfile instruction to apply to the image (CMD, ENTRYPOINT, ENV,
    /// EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR); repeatable.
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Commit message.
    #[arg(short, long, default_value = "")]
    message: String,
    /// `-p=false` is taken, as docker takes it; Hull never pauses a container to commit it.
    #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pause: bool,
    container: String,
    /// REPOSITORY[:TAG] of the new image.
    reference: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// File to write; standard output when omitted.
    #[arg(short, long)]
    output: Option<PathBuf>,
    container: String,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Dockerfile instruction to apply to the image; repeatable.
    #[arg(short, long = "change")]
    change: Vec<String>,
    /// Commit message of the imported image.
    #[arg(short, long, default_value = "")]
    message: String,
    /// The image's platform: only linux is taken.
    #[arg(long)]
    platform: Option<String>,
    /// A tar (plain, gzip or zstd), `-` for standard input, or a URL for
    /// hulld to fetch.
    file: String,
    /// REPOSITORY[:TAG] of the new image.
    reference: Option<String>,
}

pub async fn commit(client: &Client, args: CommitArgs) -> Result<()> {
    let options = CommitOptions {
        reference: args.reference.unwrap_or_default(),
        comment: args.message,
        author: args.author,
        changes: args.change,
    };
    println!("{}", client.commit(&args.container, &options).await?);
    Ok(())
}

pub async fn export(client: &Client, args: ExportArgs) -> Result<()> {
    let mut out = ArchiveOut::open(args.output.as_deref(), ".hull-export-")?;
    client.export(&args.container, out.writer()).await?;
    out.finish().await
}

pub async fn import(client: &Client, args: ImportArgs) -> Result<()> {
    if let Some(platform) = args.platform.as_deref() {
        if !platform.starts_with("linux") {
            bail!("this host imports linux images only, not {platform}");
        }
    }
    let reference = args.reference.unwrap_or_default();
    let remote = args.file.starts_with("http://") || args.file.starts_with("https://");
    let lines = if remote {
        client
            .import_url(&args.file, &reference, &args.message, &args.change)
            .await?
    } else {
        let file = PathBuf::from(&args.file);
        client
            .import(&file, &reference, &args.message, &args.change)
            .await?
    };
    for line in lines {
        if let Some(error) = line.error {
            bail!("{error}");
        }
        if let Some(status) = line.status {
            println!("{status}");
        }
    }
    Ok(())
}
