//! `hull template ls/rm` and `hull pool ls`: the VMs fast starts come from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Subcommand;
use hull_api::types::{PoolStatus, TemplateCreate, TemplateSummary};
use hull_api::units::human_duration;
use hull_api::{Client, Method};

use crate::images::{human_size, print_table};

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List the VM templates: each size's, then image templates.
    #[command(alias = "list")]
    Ls,
    /// Build an image template: a size's template with IMAGE's rootfs
    /// mounted and its program read ahead, so its containers start as a
    /// resume and a spawn. Kept until removed.
    Create {
        image: String,
        /// The size (S1 … L3); the daemon's default when omitted.
        #[arg(long)]
        size: Option<String>,
    },
    /// Remove a VM template (by key or key prefix); the next VM boots cold
    /// and builds it again.
    #[command(alias = "remove")]
    Rm { key: String },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Show the pool of resumed template clones.
    #[command(alias = "list")]
    Ls,
}

fn ago(unix: i64) -> String {
    let then = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    let elapsed = SystemTime::now().duration_since(then).unwrap_or_default();
    format!("{} ago", human_duration(elapsed))
}

pub async fn template(client: &Client, command: TemplateCommand) -> Result<i32> {
    match command {
        TemplateCommand::Ls => {
            let templates: Vec<TemplateSummary> = client.get_json("/hull/templates").await?;
            let mut rows = vec![[
                "KEY",
                "SIZE",
                "IMAGE",
                "STATUS",
                "STARTS",
                "MEMORY FILE",
                "BUILT",
                "DIRECTORY",
            ]
            .map(str::to_owned)
            .to_vec()];
            for template in templates {
                let image = match &template.image {
                    Some(id) => {
                        let short = id.trim_start_matches("sha256:");
                        let short = &short[..short.len().min(12)];
                        format!("{short}{}", if template.pinned { " (pinned)" } else { "" })
                    }
                    None => "-".to_owned(),
                };
                rows.push(vec![
                    template.key,
                    format!("{} vCPU, {} MiB", template.vcpus, template.memory_mib),
                    image,
                    template.status,
                    template.uses.to_string(),
                    human_size(i64::try_from(template.memory_bytes).unwrap_or(i64::MAX)),
                    template.built.map(ago).unwrap_or_default(),
                    template.dir,
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
        TemplateCommand::Create { image, size } => {
            eprintln!(
                "Building the image template of {image}: a VM boots with its rootfs and is saved…"
            );
            let body = TemplateCreate { image, size };
            match client
                .call_json::<TemplateSummary>(Method::POST, "/hull/templates", Some(&body))
                .await
            {
                Ok(template) => {
                    println!("{}", template.key);
                    Ok(0)
                }
                Err(err) => {
                    eprintln!("Error response from daemon: {err}");
                    Ok(1)
                }
            }
        }
        TemplateCommand::Rm { key } => {
            let path = format!("/hull/templates/{key}");
            match client
                .call_json::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
                .await
            {
                Ok(_) => {
                    println!("{key}");
                    Ok(0)
                }
                Err(err) => {
                    eprintln!("Error response from daemon: {err}");
                    Ok(1)
                }
            }
        }
    }
}

pub async fn pool(client: &Client, command: PoolCommand) -> Result<i32> {
    match command {
        PoolCommand::Ls => {
            let pools: Vec<PoolStatus> = client.get_json("/hull/pool").await?;
            let mut rows = vec![["SIZE", "VM", "TARGET", "READY", "PRIMED"]
                .map(str::to_owned)
                .to_vec()];
            for pool in pools {
                rows.push(vec![
                    pool.size.unwrap_or_else(|| "-".into()),
                    format!("{} vCPU, {} MiB", pool.vcpus, pool.memory_mib),
                    pool.target.to_string(),
                    pool.ready.to_string(),
                    pool.primed.to_string(),
                ]);
            }
            print_table(&rows);
            Ok(0)
        }
    }
}
