//! `hull volume`: named volumes that outlive containers.

use anyhow::Result;
use clap::{Args, Subcommand};
use hull_api::{Client, Method};

use crate::containers::failed;
use crate::each::{inspect_each, remove_each};
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a sparse ext4 disk); prints its name.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls,
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes no container uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune {
        #[arg(short, long)]
        all: bool,
    },
    /// Snapshot a volume no running container has (VOLUME SNAPSHOT), or
    /// list (ls) and remove (rm) snapshots.
    Snapshot(SnapshotArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: Option<SnapshotCommand>,
    /// The volume to snapshot.
    #[arg(required = true)]
    volume: Option<String>,
    /// The new snapshot's name.
    #[arg(required = true)]
    snapshot: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// List snapshots.
    #[command(alias = "list")]
    Ls,
    /// Show snapshots as JSON.
    Inspect {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Remove snapshots (volumes restored from them keep their data).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Options: size=N[k|m|g] (10g unless given).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    /// Restore a snapshot: the new volume starts with its data and size.
    #[arg(
        long,
        value_name = "SNAPSHOT",
        requires = "name",
        conflicts_with = "opt"
    )]
    from: Option<String>,
    name: Option<String>,
}

pub async fn volume(client: &Client, command: VolumeCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn run(client: &Client, command: VolumeCommand) -> Result<i32> {
    match command {
        VolumeCommand::Create(CreateArgs {
            from: Some(snapshot),
            name,
            ..
        }) => {
            let body = serde_json::json!({"Name": name.unwrap_or_default(), "From": snapshot});
            let made: serde_json::Value = client
                .call_json(Method::POST, "/hull/volumes/create", Some(&body))
                .await?;
            println!("{}", made["Name"].as_str().unwrap_or_default());
            Ok(0)
        }
        VolumeCommand::Create(args) => {
            let mut options = serde_json::Map::new();
            for opt in &args.opt {
                let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
                options.insert(key.to_owned(), value.into());
            }
            let body = serde_json::json!({
                "Name": args.name.unwrap_or_default(),
                "DriverOpts": options,
            });
            let made: serde_json::Value = client
                .call_json(Method::POST, "/volumes/create", Some(&body))
                .await?;
            println!("{}", made["Name"].as_str().unwrap_or_default());
            Ok(0)
        }
        VolumeCommand::Ls => {
            let listing: serde_json::Value = client.get_json("/volumes").await?;
            let mut rows = vec![vec!["DRIVER".to_owned(), "VOLUME NAME".to_owned()]];
            for volume in listing["Volumes"].as_array().into_iter().flatten() {
                rows.push(vec![
                    volume["Driver"].as_str().unwrap_or_default().to_owned(),
                    volume["Name"].as_str().unwrap_or_default().to_owned(),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        VolumeCommand::Snapshot(args) => snapshot(client, args).await,
        VolumeCommand::Inspect { volumes } => {
            inspect_each(client, &volumes, |name| {
                format!("/volumes/{}", encode(name))
            })
            .await
        }
        VolumeCommand::Rm { volumes } => {
            remove_each(client, &volumes, |name| {
                format!("/volumes/{}", encode(name))
            })
            .await
        }
        VolumeCommand::Prune { all } => {
            let path = if all {
                format!("/volumes/prune?filters={}", encode(r#"{"all":["true"]}"#))
            } else {
                "/volumes/prune".to_owned()
            };
            let pruned: serde_json::Value =
                client.call_json(Method::POST, &path, None::<&()>).await?;
            println!("Deleted Volumes:");
            for name in pruned["VolumesDeleted"].as_array().into_iter().flatten() {
                println!("{}", name.as_str().unwrap_or_default());
            }
            println!(
                "\nTotal reclaimed space: {}",
                crate::images::human_size(pruned["SpaceReclaimed"].as_i64().unwrap_or(0))
            );
            Ok(0)
        }
    }
}

async fn snapshot(client: &Client, args: SnapshotArgs) -> Result<i32> {
    let (volume, name) = match (args.command, args.volume, args.snapshot) {
        (Some(command), _, _) => return snapshot_command(client, command).await,
        (None, Some(volume), Some(name)) => (volume, name),
        _ => anyhow::bail!("usage: hull volume snapshot VOLUME SNAPSHOT | ls | inspect | rm"),
    };
    let path = format!("/hull/volumes/{}/snapshot", encode(&volume));
    let body = serde_json::json!({ "Name": name });
    let made: serde_json::Value = client.call_json(Method::POST, &path, Some(&body)).await?;
    println!("{}", made["Name"].as_str().unwrap_or_default());
    Ok(0)
}

async fn snapshot_command(client: &Client, command: SnapshotCommand) -> Result<i32> {
    match command {
        SnapshotCommand::Ls => {
            let listing: Vec<serde_json::Value> =
                client.get_json("/hull/volumes/snapshots").await?;
            let mut rows = vec![["SNAPSHOT", "VOLUME", "SIZE", "USED", "COPY", "CREATED"]
                .map(str::to_owned)
                .to_vec()];
            for snapshot in &listing {
                let field = |name: &str| snapshot[name].as_str().unwrap_or_default().to_owned();
                let bytes = |name: &str| {
                    crate::images::human_size(snapshot[name].as_i64().unwrap_or_default())
                };
                rows.push(vec![
                    field("Name"),
                    field("Volume"),
                    bytes("Size"),
                    bytes("Used"),
                    field("Method"),
                    field("CreatedAt"),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        SnapshotCommand::Inspect { snapshots } => {
            inspect_each(client, &snapshots, snapshot_path).await
        }
        SnapshotCommand::Rm { snapshots } => remove_each(client, &snapshots, snapshot_path).await,
    }
}

fn snapshot_path(name: &str) -> String {
    format!("/hull/volumes/snapshots/{}", encode(name))
}
