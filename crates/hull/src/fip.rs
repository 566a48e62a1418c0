//! `hull fip`: floating IPs, Hyper.sh's public addresses that a container
//! keeps through stop and start and is reached at from outside.

use anyhow::Result;
use clap::Subcommand;
use hull_api::{Client, Method};

use crate::containers::failed;
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum FipCommand {
    /// Allocate COUNT floating IPs from the pool; prints them.
    Allocate {
        /// Take addresses others released before never-used ones.
        #[arg(long)]
        pick: bool,
        count: u64,
    },
    /// List floating IPs.
    #[command(alias = "list")]
    Ls {
        /// Filter: dangling=true (attached to nothing) or dangling=false.
        #[arg(short, long = "filter", value_name = "dangling=true")]
        filters: Vec<String>,
    },
    /// Name a floating IP (an empty name clears it).
    Name { ip: String, name: String },
    /// Attach a floating IP to a container on a bridge network, or to a
    /// service: its public address.
    Attach {
        /// Move it from the container or service it is attached to now.
        #[arg(short, long)]
        force: bool,
        ip: String,
        #[arg(value_name = "CONTAINER|SERVICE")]
        target: String,
    },
    /// Detach the floating IP of a container or service.
    Detach {
        #[arg(value_name = "CONTAINER|SERVICE")]
        target: String,
    },
    /// Give floating IPs back to the pool.
    #[command(alias = "rm")]
    Release {
        #[arg(required = true)]
        ips: Vec<String>,
    },
}

pub async fn fip(client: &Client, command: FipCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn post(client: &Client, path: &str) -> Result<serde_json::Value> {
    Ok(client.call_json(Method::POST, path, None::<&()>).await?)
}

fn filters_query(filters: &[String]) -> Result<String> {
    let mut map = serde_json::Map::new();
    for filter in filters {
        let (key, value) = filter
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid filter {filter:?}: expected dangling=true"))?;
        map.insert(key.to_owned(), serde_json::json!([value]));
    }
    Ok(serde_json::Value::Object(map).to_string())
}

async fn run(client: &Client, command: FipCommand) -> Result<i32> {
    match command {
        FipCommand::Allocate { pick, count } => {
            let path = format!(
                "/fips/allocate?count={count}{}",
                if pick { "&pick=true" } else { "" }
            );
            let ips = post(client, &path).await?;
            for ip in ips.as_array().into_iter().flatten() {
                println!("{}", ip.as_str().unwrap_or_default());
            }
        }
        FipCommand::Ls { filters } => {
            let path = if filters.is_empty() {
                "/fips".to_owned()
            } else {
                format!("/fips?filters={}", encode(&filters_query(&filters)?))
            };
            let listing: Vec<serde_json::Value> = client.get_json(&path).await?;
            let operator = listing.iter().any(|f| f.get("tenant").is_some());
            let mut header = vec!["FLOATING IP", "NAME", "CONTAINER", "SERVICE"];
            if operator {
                header.push("TENANT");
            }
            let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
            for fip in &listing {
                let field = |key: &str| fip[key].as_str().unwrap_or_default().to_owned();
                let mut row = vec![
                    field("fip"),
                    field("name"),
                    field("container"),
                    field("service"),
                ];
                if operator {
                    row.push(field("tenant"));
                }
                rows.push(row);
            }
            print_table(&rows);
        }
        FipCommand::Name { ip, name } => {
            post(
                client,
                &format!("/fips/name?ip={}&name={}", encode(&ip), encode(&name)),
            )
            .await?;
        }
        FipCommand::Attach { force, ip, target } => {
            let force = if force { "&force=true" } else { "" };
            let ip = encode(&ip);
            on_container_or_service(client, &target, |key, name| {
                format!("/fips/attach?ip={ip}&{key}={name}{force}")
            })
            .await?;
        }
        FipCommand::Detach { target } => {
            on_container_or_service(client, &target, |key, name| {
                format!("/fips/detach?{key}={name}")
            })
            .await?;
        }
        FipCommand::Release { ips } => {
            for ip in ips {
                post(client, &format!("/fips/release?ip={}", encode(&ip))).await?;
            }
        }
    }
    Ok(0)
}

/// POSTs `path(key, name)` for the container `target` names, or, when
/// there is none, for the service: as Hyper.sh's client, one argument
/// names either.
async fn on_container_or_service(
    client: &Client,
    target: &str,
    path: impl Fn(&str, &str) -> String,
) -> Result<()> {
    let name = encode(target);
    match post(client, &path("container", &name)).await {
        Err(err) if no_such_container(&err) => match post(client, &path("service", &name)).await {
            Err(err) if is_not_found(&err) && err.to_string().starts_with("service ") => {
                anyhow::bail!("no container or service {target}")
            }
            other => other.map(drop),
        },
        other => other.map(drop),
    }
}

fn is_not_found(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<hull_api::ClientError>(),
        Some(hull_api::ClientError::Api { status, .. }) if status.as_u16() == 404
    )
}

fn no_such_container(err: &anyhow::Error) -> bool {
    is_not_found(err) && err.to_string().starts_with("No such container")
}
