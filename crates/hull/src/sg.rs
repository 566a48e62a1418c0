//! `hull sg`: security groups, Hyper.sh's firewall of a container's
//! network interface, from YAML files of its format.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueHint};
use hull_api::{Client, Method};
use hull_net::sg::{SecurityGroup, LABEL_PREFIX, MAX_SPEC_BYTES};

use crate::containers::failed;
use crate::each::{inspect_each, remove_each};
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum SgCommand {
    /// Create a security group from a YAML file (name, description, rules).
    Create {
        #[arg(short, long, value_hint = ValueHint::FilePath)]
        file: PathBuf,
        /// The group's name; the file's `name` otherwise.
        name: Option<String>,
    },
    /// Replace a security group's rules with a YAML file's; running
    /// containers in it get the new rules at once.
    Update {
        #[arg(short, long, value_hint = ValueHint::FilePath)]
        file: PathBuf,
        name: Option<String>,
    },
    /// List security groups.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show security groups as JSON, with the containers in them.
    Inspect {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Remove security groups no container is in.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

pub async fn sg(client: &Client, command: SgCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

fn read_group(file: &PathBuf, name: Option<String>) -> Result<SecurityGroup> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > MAX_SPEC_BYTES as u64 {
        anyhow::bail!(
            "{} is {size} bytes; a security group's YAML is at most {MAX_SPEC_BYTES}",
            file.display()
        );
    }
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut group = SecurityGroup::parse(&text)
        .with_context(|| format!("cannot read the security group in {}", file.display()))?;
    if let Some(name) = name {
        group.name = name;
        group.check()?;
    }
    Ok(group)
}

async fn run(client: &Client, command: SgCommand) -> Result<i32> {
    match command {
        SgCommand::Create { file, name } => {
            let group = read_group(&file, name)?;
            let path = format!("/sg/{}", encode(&group.name));
            client
                .call_json::<serde_json::Value>(Method::POST, &path, Some(&group))
                .await?;
            println!("{}", group.name);
            Ok(0)
        }
        SgCommand::Update { file, name } => {
            let group = read_group(&file, name)?;
            let path = format!("/sg/{}", encode(&group.name));
            client
                .call_json::<serde_json::Value>(Method::PUT, &path, Some(&group))
                .await?;
            println!("{}", group.name);
            Ok(0)
        }
        SgCommand::Ls { quiet } => {
            let listing: Vec<serde_json::Value> = client.get_json("/sg").await?;
            let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or("").to_owned();
            if quiet {
                for group in &listing {
                    println!("{}", text(group, "name"));
                }
                return Ok(0);
            }
            let mut rows = vec![["NAME", "DESCRIPTION", "RULES", "CONTAINERS"]
                .map(str::to_owned)
                .to_vec()];
            for group in &listing {
                let count = |key: &str| group[key].as_array().map_or(0, Vec::len).to_string();
                rows.push(vec![
                    text(group, "name"),
                    text(group, "description"),
                    count("rules"),
                    count("containers"),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        SgCommand::Inspect { groups } => {
            inspect_each(client, &groups, |name| format!("/sg/{}", encode(name))).await
        }
        SgCommand::Rm { groups } => {
            remove_each(client, &groups, |name| format!("/sg/{}", encode(name))).await
        }
    }
}

/// `hull run --sg NAME`: the labels that put a new container in groups.
pub fn labels(groups: &[String]) -> impl Iterator<Item = (String, String)> + '_ {
    groups
        .iter()
        .map(|g| (format!("{LABEL_PREFIX}{g}"), "yes".to_owned()))
}

/// `hull update --sg-add/--sg-rm`: the container's groups now (those that
/// list it), changed, sent as Hyper.sh's client sent them: as labels.
pub async fn update_groups(
    client: &Client,
    container: &str,
    add: &[String],
    remove: &[String],
) -> Result<(), hull_api::ClientError> {
    let inspected = client.inspect_container(container).await?;
    let name = inspected.name.trim_start_matches('/').to_owned();
    let listing: Vec<serde_json::Value> = client.get_json("/sg").await?;
    let mut groups: BTreeSet<String> = listing
        .iter()
        .filter(|g| {
            g["containers"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c.as_str() == Some(name.as_str())))
        })
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    groups.extend(add.iter().cloned());
    for gone in remove {
        groups.remove(gone);
    }
    let groups: Vec<String> = groups.into_iter().collect();
    let body = serde_json::json!({
        "Labels": labels(&groups).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let path = format!("/containers/{}/update", encode(container));
    client
        .call_json::<serde_json::Value>(Method::POST, &path, Some(&body))
        .await?;
    Ok(())
}
