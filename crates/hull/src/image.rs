//! `hull image …` (inspect, prune, and docker's other names of the image
//! commands) and `hull system df`.

use anyhow::Result;
use clap::{Args, Subcommand};
use hull_api::types::{DiskUsage, ImagePruneReport};
use hull_api::{Client, Method};

use crate::images::human_size;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Show images' details as JSON.
    Inspect(InspectArgs),
    /// List images (`hull images`).
    #[command(alias = "list")]
    Ls(crate::images::ImagesArgs),
    /// Remove images (`hull rmi`).
    #[command(alias = "remove")]
    Rm(crate::tag::RmiArgs),
    /// Give an image another name (`hull tag`).
    Tag(crate::tag::TagArgs),
    /// Save images to a tar archive (`hull save`).
    Save(crate::save::SaveArgs),
    /// Load images from a tar archive (`hull load`).
    Load(crate::load::LoadArgs),
    /// Import a tarball as a one-layer image (`hull import`).
    Import(crate::commit::ImportArgs),
    /// Remove dangling images, or with -a every image, and the blobs no image uses.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images: names, ids or digests.
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every unused image, not only the untagged ones.
    #[arg(short, long)]
    all: bool,
    /// Which images: until=<timestamp or duration>, label=<key>[=<value>],
    /// label!=<key>[=<value>].
    #[arg(long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Do not ask for confirmation (hull never asks).
    #[arg(short, long)]
    force: bool,
}

pub async fn run(client: &Client, command: ImageCommand) -> Result<i32> {
    match command {
        ImageCommand::Inspect(args) => inspect(client, args).await,
        ImageCommand::Ls(args) => crate::images::list(client, args).await.map(|()| 0),
        ImageCommand::Rm(args) => crate::tag::rmi(client, args).await,
        ImageCommand::Tag(args) => crate::tag::tag(client, args).await.map(|()| 0),
        ImageCommand::Save(args) => crate::save::save(client, args).await.map(|()| 0),
        ImageCommand::Load(args) => crate::load::load(client, args).await.map(|()| 0),
        ImageCommand::Import(args) => crate::commit::import(client, args)
            .await
            .map(|()| 0)
            .or_else(crate::containers::failed),
        ImageCommand::Prune(args) => prune(client, args).await.map(|()| 0),
    }
}

/// Prints the JSON array docker prints; exits 1 if an image is missing.
async fn inspect(client: &Client, args: InspectArgs) -> Result<i32> {
    let mut found = Vec::new();
    let mut code = 0;
    for image in &args.images {
        let path = format!("/images/{}/json", encode(image));
        match client.get_json::<serde_json::Value>(&path).await {
            Ok(value) => found.push(value),
            Err(err) => {
                eprintln!("Error: {err}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&found)?);
    Ok(code)
}

async fn prune(client: &Client, args: PruneArgs) -> Result<()> {
    let _ = args.force;
    let mut filters = hull_api::client::flag_filters(&args.filter)?;
    if args.all {
        filters.insert("dangling".to_owned(), vec!["false".to_owned()]);
    }
    let path = format!(
        "/images/prune?filters={}",
        encode(&serde_json::to_string(&filters)?)
    );
    let report: ImagePruneReport = client.call_json(Method::POST, &path, None::<&()>).await?;
    if let Some(items) = &report.images_deleted {
        // docker's prune, unlike its rmi, writes these in lower case.
        println!("Deleted Images:");
        for item in items {
            if let Some(tag) = &item.untagged {
                println!("untagged: {tag}");
            }
            if let Some(id) = &item.deleted {
                println!("deleted: {id}");
            }
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        human_size(i64::try_from(report.space_reclaimed).unwrap_or(i64::MAX))
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show the disk space images take.
    Df,
}

pub async fn system(client: &Client, command: SystemCommand) -> Result<()> {
    match command {
        SystemCommand::Df => df(client).await,
    }
}

/// Docker's table; no container holds an image here, so every image is reclaimable.
async fn df(client: &Client) -> Result<()> {
    let usage: DiskUsage = client.get_json("/system/df").await?;
    let size = human_size(usage.images.iter().map(|i| i.size).sum());
    let reclaimable = if usage.images.is_empty() {
        "0B".to_owned()
    } else {
        format!("{size} (100%)")
    };
    println!("TYPE            TOTAL     ACTIVE    SIZE        RECLAIMABLE");
    println!(
        "{:<15} {:<9} {:<9} {:<11} {reclaimable}",
        "Images",
        usage.images.len(),
        0,
        size,
    );
    println!("Store on disk: {}", human_size(usage.layers_size));
    Ok(())
}
