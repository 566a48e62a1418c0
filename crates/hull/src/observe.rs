//! Docker's commands that look at containers and images without changing
//! them: `top`, `diff`, `stats`, `events` and `history`, over the Engine
//! API routes hulld serves for the docker CLI.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use hull_api::client::flag_filters;
use hull_api::types::stats::{StatsResponse, TopResponse};
use hull_api::types::HistoryItem;
use hull_api::Client;
use serde_json::Value;

use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Args)]
pub struct TopArgs {
    container: String,
    /// Options for ps inside the container (`-ef` when none).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    container: String,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    image: String,
    /// Full ids and commands.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Containers: the running ones when none is named.
    containers: Vec<String>,
    /// One sample, then exit.
    #[arg(long)]
    no_stream: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Events since this time (RFC 3339, Unix seconds, or a duration ago: 10m).
    #[arg(long)]
    since: Option<String>,
    /// Events until this time; without it, new ones as they come.
    #[arg(long)]
    until: Option<String>,
    /// Only events that match (container=NAME, event=start, image=, label=).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filters: Vec<String>,
}

/// `hull top`: the processes of a container, as its `ps` lists them.
pub async fn top(client: &Client, args: TopArgs) -> Result<i32> {
    let mut path = format!("/containers/{}/top", encode(&args.container));
    if !args.ps_args.is_empty() {
        path.push_str(&format!("?ps_args={}", encode(&args.ps_args.join(" "))));
    }
    let top: TopResponse = client.get_json(&path).await?;
    let mut rows = vec![top.titles];
    rows.extend(top.processes);
    print_table(&rows);
    Ok(0)
}

/// `hull diff`: what the container changed in its image's filesystem.
pub async fn diff(client: &Client, args: DiffArgs) -> Result<i32> {
    let path = format!("/containers/{}/changes", encode(&args.container));
    let changes: Option<Vec<Value>> = client.get_json(&path).await?;
    for change in changes.unwrap_or_default() {
        let kind = match change["Kind"].as_u64() {
            Some(0) => 'C',
            Some(1) => 'A',
            _ => 'D',
        };
        println!("{kind} {}", change["Path"].as_str().unwrap_or_default());
    }
    Ok(0)
}

/// `hull history`: the steps that made an image, newest first.
pub async fn history(client: &Client, args: HistoryArgs) -> Result<i32> {
    let path = format!("/images/{}/history", encode(&args.image));
    let steps: Vec<HistoryItem> = client.get_json(&path).await?;
    let mut rows = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(str::to_owned)
        .to_vec()];
    for step in steps {
        let (id, created_by) = if args.no_trunc {
            (step.id, step.created_by)
        } else {
            let id = step.id.trim_start_matches("sha256:");
            let id = if id == "<missing>" {
                id
            } else {
                &id[..id.len().min(12)]
            };
            (id.to_owned(), truncate(&step.created_by, 45))
        };
        rows.push(vec![
            id,
            hull_cron::rfc3339(step.created),
            created_by,
            size(step.size.max(0) as u64),
            step.comment,
        ]);
    }
    print_table(&rows);
    Ok(0)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Bytes as docker prints them (decimal units).
fn size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}{}", units[unit])
    }
}

/// Bytes in binary units, as docker's stats print memory.
fn mib(bytes: u64) -> String {
    format!("{:.2}MiB", bytes as f64 / f64::from(1 << 20))
}

/// `hull stats`: CPU, memory and processes of containers; with
/// `--no-stream` one sample, else a sample every two seconds until ^C.
pub async fn stats(client: &Client, args: StatsArgs) -> Result<i32> {
    let names = if args.containers.is_empty() {
        let running = client.list_containers(false, &BTreeMap::new()).await?;
        running.into_iter().map(|c| c.id).collect()
    } else {
        args.containers
    };
    loop {
        let mut rows = vec![[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "PIDS",
        ]
        .map(str::to_owned)
        .to_vec()];
        for name in &names {
            let path = format!("/containers/{}/stats?stream=0", encode(name));
            let sample: StatsResponse = client.get_json(&path).await?;
            rows.push(stats_row(&sample));
        }
        if !args.no_stream {
            // Each sample replaces the last on the screen.
            print!("\x1b[2J\x1b[H");
        }
        print_table(&rows);
        std::io::stdout().flush()?;
        if args.no_stream {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn stats_row(sample: &StatsResponse) -> Vec<String> {
    let cpu = &sample.cpu_stats;
    let before = &sample.precpu_stats;
    let busy = cpu
        .cpu_usage
        .total_usage
        .saturating_sub(before.cpu_usage.total_usage) as f64;
    let all = cpu
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(before.system_cpu_usage.unwrap_or(0)) as f64;
    let cpus = f64::from(cpu.online_cpus.unwrap_or(1));
    let cpu_percent = if all > 0.0 {
        busy / all * cpus * 100.0
    } else {
        0.0
    };
    let memory = &sample.memory_stats;
    let (used, limit) = (memory.usage.unwrap_or(0), memory.limit.unwrap_or(0));
    let mem_percent = if limit > 0 {
        used as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    vec![
        sample.id.chars().take(12).collect(),
        sample.name.trim_start_matches('/').to_owned(),
        format!("{cpu_percent:.2}%"),
        format!("{} / {}", mib(used), mib(limit)),
        format!("{mem_percent:.2}%"),
        sample.pids_stats.current.to_string(),
    ]
}

/// `hull events`: container events as they happen (or between `--since`
/// and `--until`), a line each as docker prints them.
pub async fn events(client: &Client, args: EventsArgs) -> Result<i32> {
    let filters = flag_filters(&args.filters)?;
    let mut query = vec![format!(
        "filters={}",
        encode(&serde_json::to_string(&filters)?)
    )];
    // As docker's client: `10m` and RFC 3339 times are made Unix seconds here.
    let now = std::time::SystemTime::now();
    for (key, value) in [("since", &args.since), ("until", &args.until)] {
        if let Some(value) = value {
            let seconds = crate::logs::timestamp(value, now)?;
            query.push(format!("{key}={}", encode(&seconds)));
        }
    }
    let path = format!("/events?{}", query.join("&"));
    let stream = client.get_stream(&path).await?;
    crate::stdio::print_json_lines(stream, |event| Ok(event_line(event))).await
}

/// `2024-01-02T13:04:05.000000000Z container start ID (image=…, name=…)`.
fn event_line(event: &Value) -> String {
    let nanos = event["timeNano"].as_u64().unwrap_or(0);
    let seconds = (nanos / 1_000_000_000) as i64;
    let time = hull_cron::rfc3339(seconds);
    let time = format!(
        "{}.{:09}Z",
        time.trim_end_matches('Z'),
        nanos % 1_000_000_000
    );
    let attributes: Vec<String> = event["Actor"]["Attributes"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{time} {} {} {} ({})",
        event["Type"].as_str().unwrap_or("container"),
        event["Action"].as_str().unwrap_or_default(),
        event["Actor"]["ID"].as_str().unwrap_or_default(),
        attributes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_api::types::stats::{CpuStats, CpuUsage, MemoryStats, PidsStats};

    #[test]
    fn stats_rows_show_cpu_and_memory_as_docker_computes_them() {
        let sample = StatsResponse {
            name: "/web".into(),
            id: "0123456789abcdef".into(),
            pids_stats: PidsStats { current: 3 },
            cpu_stats: CpuStats {
                cpu_usage: CpuUsage {
                    total_usage: 3_000,
                    ..CpuUsage::default()
                },
                system_cpu_usage: Some(20_000),
                online_cpus: Some(2),
                ..CpuStats::default()
            },
            precpu_stats: CpuStats {
                cpu_usage: CpuUsage {
                    total_usage: 1_000,
                    ..CpuUsage::default()
                },
                system_cpu_usage: Some(10_000),
                ..CpuStats::default()
            },
            memory_stats: MemoryStats {
                usage: Some(64 << 20),
                limit: Some(256 << 20),
                stats: None,
            },
            ..StatsResponse::default()
        };
        assert_eq!(
            stats_row(&sample),
            [
                "0123456789ab",
                "web",
                "40.00%",
                "64.00MiB / 256.00MiB",
                "25.00%",
                "3"
            ]
        );
    }

    #[test]
    fn events_print_as_docker_prints_them() {
        let event = serde_json::json!({
            "Type": "container", "Action": "start", "timeNano": 1_700_000_000_123_456_789u64,
            "Actor": {"ID": "abc", "Attributes": {"image": "busybox", "name": "web"}},
        });
        assert_eq!(
            event_line(&event),
            "2023-11-14T22:13:20.123456789Z container start abc (image=busybox, name=web)"
        );
        assert_eq!(size(999), "999B");
        assert_eq!(size(4_261_000), "4.261MB");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
