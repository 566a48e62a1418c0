//! `hull usage` (a tenant's own runs) and `hull admin usage` (everyone's):
//! container seconds billed, per tenant, container and size, and a total;
//! then volumes' GB-seconds.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{bail, Result};
use hull_api::units::api_timestamp;
use hull_api::Client;
use hull_cloud::storage::StorageUse;
use hull_cloud::usage::{Run, UsageReport};

use crate::admin::Format;
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only runs that went on at or after this time: a timestamp
    /// (2024-01-02T13:04:05Z, Unix seconds) or a duration before now (24h).
    #[arg(long)]
    since: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Debug, clap::Args)]
pub struct AdminUsageArgs {
    #[command(flatten)]
    common: UsageArgs,
    /// Only this tenant's runs.
    #[arg(long)]
    tenant: Option<String>,
}

/// `hull usage`: the caller's own runs (on the Unix socket, everyone's).
pub async fn usage(client: &Client, args: UsageArgs) -> Result<i32> {
    let query = since_query(args.since.as_deref())?;
    show(client, &format!("/hull/usage?{query}"), args.format).await
}

/// `hull admin usage`: every tenant's runs, or one's.
pub async fn admin_usage(client: &Client, args: AdminUsageArgs) -> Result<i32> {
    let mut query = since_query(args.common.since.as_deref())?;
    if let Some(tenant) = &args.tenant {
        query.push_str(&format!("&tenant={}", encode(tenant)));
    }
    show(
        client,
        &format!("/hull/admin/usage?{query}"),
        args.common.format,
    )
    .await
}

fn since_query(since: Option<&str>) -> Result<String> {
    let Some(text) = since else {
        return Ok("since=".to_owned());
    };
    match api_timestamp(text, SystemTime::now()) {
        Some(seconds) => Ok(format!("since={seconds}")),
        None => bail!("invalid time {text:?}: neither a timestamp nor a duration"),
    }
}

async fn show(client: &Client, path: &str, format: Format) -> Result<i32> {
    let report: UsageReport = client.get_json(path).await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            print_table(&table(&report.runs));
            if !report.storage.is_empty() {
                println!();
                print_table(&storage_table(&report.storage));
            }
        }
    }
    Ok(0)
}

/// One row per tenant, container and size (its runs summed), then the total.
fn table(runs: &[Run]) -> Vec<Vec<String>> {
    let mut sums: BTreeMap<(String, String, String), (usize, u64, bool)> = BTreeMap::new();
    for run in runs {
        let tenant = run.tenant.clone().unwrap_or_else(|| "-".to_owned());
        // A pod's VM is billed as one: `pod app (…)`.
        let pod = if run.kind == "pod" { "pod " } else { "" };
        let container = format!(
            "{pod}{} ({})",
            run.container_name,
            &run.container_id[..12.min(run.container_id.len())]
        );
        let size = format!(
            "{} ({} vCPU, {} MiB)",
            run.size.name, run.size.vcpus, run.size.memory_mib
        );
        let sum = sums.entry((tenant, container, size)).or_default();
        sum.0 += 1;
        sum.1 += run.seconds;
        sum.2 |= run.end.is_none();
    }
    let mut rows = vec![["TENANT", "CONTAINER", "SIZE", "RUNS", "SECONDS"]
        .map(str::to_owned)
        .to_vec()];
    for ((tenant, container, size), (count, seconds, running)) in &sums {
        let seconds = if *running {
            format!("{seconds} (running)")
        } else {
            seconds.to_string()
        };
        rows.push(vec![
            tenant.clone(),
            container.clone(),
            size.clone(),
            count.to_string(),
            seconds,
        ]);
    }
    let total: u64 = runs.iter().map(|r| r.seconds).sum();
    rows.push(vec![
        "TOTAL".to_owned(),
        String::new(),
        String::new(),
        runs.len().to_string(),
        total.to_string(),
    ]);
    rows
}

/// One row per stored volume, then the total GB-seconds.
fn storage_table(stored: &[StorageUse]) -> Vec<Vec<String>> {
    let mut rows = vec![["TENANT", "VOLUME", "SIZE", "GB-SECONDS"]
        .map(str::to_owned)
        .to_vec()];
    for item in stored {
        let gone = if item.gone.is_some() {
            " (removed)"
        } else {
            ""
        };
        rows.push(vec![
            item.tenant.clone().unwrap_or_else(|| "-".to_owned()),
            format!("{}{gone}", item.name),
            format!("{:.1} GiB", item.bytes as f64 / f64::from(1u32 << 30)),
            format!("{:.0}", item.gb_seconds),
        ]);
    }
    let total: f64 = stored.iter().map(|s| s.gb_seconds).sum();
    rows.push(vec![
        "TOTAL".to_owned(),
        String::new(),
        String::new(),
        format!("{total:.0}"),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_cloud::usage::Size;

    fn run(tenant: Option<&str>, name: &str, seconds: u64, end: Option<i64>) -> Run {
        Run {
            id: 1,
            tenant: tenant.map(str::to_owned),
            kind: "container".into(),
            container_id: format!("{name}0123456789abcdef"),
            container_name: name.to_owned(),
            size: Size {
                name: "S2".into(),
                vcpus: 1,
                memory_mib: 128,
            },
            start: 0,
            end,
            seconds,
            ended_by: None,
        }
    }

    #[test]
    fn the_table_sums_runs_per_tenant_container_and_size_and_totals_them() {
        let rows = table(&[
            run(Some("acme"), "web", 10, Some(1)),
            run(Some("acme"), "web", 25, None),
            run(None, "db", 40, Some(1)),
        ]);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1][0], "-");
        assert_eq!(rows[1][4], "40");
        assert_eq!(rows[2][0], "acme");
        assert_eq!(rows[2][1], "web (web012345678)");
        assert_eq!(rows[2][2], "S2 (1 vCPU, 128 MiB)");
        assert_eq!(rows[2][3], "2");
        assert_eq!(rows[2][4], "35 (running)");
        assert_eq!(rows[3], ["TOTAL", "", "", "3", "75"]);
    }
}
