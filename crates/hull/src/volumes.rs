//! `hull volume`: named volumes that outlive containers.

use anyhow::Result;
use clap::{Args, Subcommand};
use hull_api::{Client, Method};

use crate::containers::failed;
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
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Options: size=N[k|m|g] (10g unless given).
    #[arg(short = 'o', long = "opt", value_name = "KEY=VALUE")]
    opt: Vec<String>,
    name: Option<String>,
}

pub async fn volume(client: &Client, command: VolumeCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn run(client: &Client, command: VolumeCommand) -> Result<i32> {
    match command {
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
        VolumeCommand::Inspect { volumes } => {
            let mut found = Vec::new();
            let mut code = 0;
            for name in volumes {
                match client
                    .get_json::<serde_json::Value>(&format!("/volumes/{}", encode(&name)))
                    .await
                {
                    Ok(volume) => found.push(volume),
                    Err(err) => code = failed(err.into())?,
                }
            }
            println!("{}", serde_json::to_string_pretty(&found)?);
            Ok(code)
        }
        VolumeCommand::Rm { volumes } => {
            let mut code = 0;
            for name in volumes {
                let path = format!("/volumes/{}", encode(&name));
                match client
                    .call_json::<()>(Method::DELETE, &path, None::<&()>)
                    .await
                {
                    Ok(()) => println!("{name}"),
                    Err(err) => code = failed(err.into())?,
                }
            }
            Ok(code)
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
