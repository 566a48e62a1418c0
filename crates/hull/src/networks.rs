//! `hull network`: user-defined networks, on which containers reach each
//! other by name.

use anyhow::Result;
use clap::{Args, Subcommand};
use hull_api::{Client, Method};

use crate::containers::failed;
use crate::each::{inspect_each, remove_each};
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network; prints its id.
    Create(CreateArgs),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks no container is on.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Put a container on a network: at once if it runs (up to three
    /// networks), or from its next start.
    Connect {
        /// Another name the container answers to on the network.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// The container's IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Take a container off a network (a running one keeps its first).
    Disconnect { network: String, container: String },
    /// Remove every network no container is on.
    Prune,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// IPv4 subnet, like 10.90.0.0/24; a free /24 of 10.89.0.0/16 otherwise.
    #[arg(long)]
    subnet: Option<String>,
    /// The gateway's address in the subnet; its first address otherwise.
    #[arg(long)]
    gateway: Option<String>,
    /// No way out: containers reach only each other.
    #[arg(long)]
    internal: bool,
    /// Driver; only `bridge`.
    #[arg(short, long, default_value = "bridge")]
    driver: String,
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    name: String,
}

pub async fn network(client: &Client, command: NetworkCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

fn text(value: &serde_json::Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_owned()
}

async fn run(client: &Client, command: NetworkCommand) -> Result<i32> {
    match command {
        NetworkCommand::Create(args) => {
            let labels: serde_json::Map<String, serde_json::Value> = args
                .labels
                .iter()
                .map(|l| {
                    let (key, value) = l.split_once('=').unwrap_or((l, ""));
                    (key.to_owned(), value.into())
                })
                .collect();
            let mut config = serde_json::Map::new();
            if let Some(subnet) = args.subnet {
                config.insert("Subnet".into(), subnet.into());
            }
            if let Some(gateway) = args.gateway {
                config.insert("Gateway".into(), gateway.into());
            }
            let body = serde_json::json!({
                "Name": args.name,
                "Driver": args.driver,
                "Internal": args.internal,
                "Labels": labels,
                "IPAM": {"Config": if config.is_empty() { vec![] } else { vec![config] }},
            });
            let made: serde_json::Value = client
                .call_json(Method::POST, "/networks/create", Some(&body))
                .await?;
            println!("{}", text(&made, "Id"));
            Ok(0)
        }
        NetworkCommand::Ls { quiet } => {
            let listing: Vec<serde_json::Value> = client.get_json("/networks").await?;
            if quiet {
                for network in &listing {
                    println!("{}", &text(network, "Id")[..12]);
                }
                return Ok(0);
            }
            let mut rows = vec![["NETWORK ID", "NAME", "DRIVER", "SUBNET", "SCOPE"]
                .map(str::to_owned)
                .to_vec()];
            for network in &listing {
                rows.push(vec![
                    text(network, "Id")[..12].to_owned(),
                    text(network, "Name"),
                    text(network, "Driver"),
                    network["IPAM"]["Config"][0]["Subnet"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    text(network, "Scope"),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        NetworkCommand::Inspect { networks } => {
            inspect_each(client, &networks, |name| {
                format!("/networks/{}", encode(name))
            })
            .await
        }
        NetworkCommand::Rm { networks } => {
            remove_each(client, &networks, |name| {
                format!("/networks/{}", encode(name))
            })
            .await
        }
        NetworkCommand::Connect {
            aliases,
            ip,
            network,
            container,
        } => {
            let body = serde_json::json!({
                "Container": container,
                "EndpointConfig": {
                    "Aliases": aliases,
                    "IPAMConfig": {"IPv4Address": ip.unwrap_or_default()},
                },
            });
            let path = format!("/networks/{}/connect", encode(&network));
            client
                .call_json::<serde_json::Value>(Method::POST, &path, Some(&body))
                .await?;
            Ok(0)
        }
        NetworkCommand::Disconnect { network, container } => {
            let body = serde_json::json!({"Container": container});
            let path = format!("/networks/{}/disconnect", encode(&network));
            client
                .call_json::<serde_json::Value>(Method::POST, &path, Some(&body))
                .await?;
            Ok(0)
        }
        NetworkCommand::Prune => {
            let pruned: serde_json::Value = client
                .call_json(Method::POST, "/networks/prune", None::<&()>)
                .await?;
            println!("Deleted Networks:");
            for name in pruned["NetworksDeleted"].as_array().into_iter().flatten() {
                println!("{}", name.as_str().unwrap_or_default());
            }
            Ok(0)
        }
    }
}
