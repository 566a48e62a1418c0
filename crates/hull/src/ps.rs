//! `hull ps`: containers in docker's table.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use clap::Args;
use hull_api::types::container::ContainerSummary;
use hull_api::units::human_duration;
use hull_api::Client;

use crate::images::print_table;

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show every container (only running ones otherwise).
    #[arg(short, long)]
    all: bool,
    /// Show only ids.
    #[arg(short, long)]
    quiet: bool,
    /// Show full ids and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Show the last N created containers, in any state.
    #[arg(short = 'n', long, value_name = "N")]
    last: Option<usize>,
    /// Show the last created container, in any state.
    #[arg(short, long)]
    latest: bool,
    /// Only containers that match: id, name, status, label, ancestor, exited.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
}

pub async fn ps(client: &Client, args: PsArgs) -> Result<i32> {
    let filters = hull_api::client::flag_filters(&args.filter)?;
    let last = if args.latest { Some(1) } else { args.last };
    let mut containers = client
        .list_containers(args.all || last.is_some(), &filters)
        .await?;
    containers.sort_by_key(|c| std::cmp::Reverse(c.created));
    if let Some(last) = last {
        containers.truncate(last);
    }
    if args.quiet {
        for container in &containers {
            println!("{}", short_id(&container.id, args.no_trunc));
        }
        return Ok(0);
    }
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    let now = SystemTime::now();
    rows.extend(containers.iter().map(|c| row(c, args.no_trunc, now)));
    print_table(&rows);
    Ok(0)
}

fn short_id(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        &id[..id.len().min(12)]
    }
}

fn row(container: &ContainerSummary, no_trunc: bool, now: SystemTime) -> Vec<String> {
    let command = if no_trunc {
        container.command.clone()
    } else {
        ellipsis(&container.command, 20)
    };
    let created = UNIX_EPOCH + Duration::from_secs(container.created.max(0) as u64);
    let age = now.duration_since(created).unwrap_or_default();
    let names: Vec<&str> = container
        .names
        .iter()
        .map(|n| n.trim_start_matches('/'))
        .collect();
    vec![
        short_id(&container.id, no_trunc).to_owned(),
        container.image.clone(),
        format!("{command:?}"),
        format!("{} ago", human_duration(age)),
        container.status.clone(),
        ports(container),
        names.join(","),
    ]
}

/// Docker's PORTS column: `127.0.0.1:8080->80/tcp, 0.0.0.0:5353->53/udp`.
fn ports(container: &ContainerSummary) -> String {
    container
        .ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p["IP"].as_str().unwrap_or_default(),
                p["PublicPort"],
                p["PrivatePort"],
                p["Type"].as_str().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// At most `width` characters, the last one `…` when cut, as docker cuts.
fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_cut_to_twenty_characters() {
        assert_eq!(ellipsis("sh -c echo", 20), "sh -c echo");
        let cut = ellipsis("sh -c while true; do echo tick; done", 20);
        assert_eq!(cut, "sh -c while true; d…");
        assert_eq!(cut.chars().count(), 20);
    }
}
