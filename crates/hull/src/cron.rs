//! `hull cron`: containers run on a schedule (Hyper.sh's cron).

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hull_api::{Client, Method};
use hull_cron::{Concurrency, CronSpec, CronView, Notify};
use serde_json::{json, Value};

use crate::containers::failed;
use crate::each::{inspect_each, remove_each};
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum CronCommand {
    /// Create a cron: IMAGE [CMD...] runs on its schedule.
    Create(CreateArgs),
    /// List crons.
    #[command(alias = "list")]
    Ls {
        /// Every owner's crons (the operator only).
        #[arg(short, long)]
        all: bool,
    },
    /// Show crons as JSON.
    Inspect {
        #[arg(required = true)]
        crons: Vec<String>,
    },
    /// Remove crons and their history.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        crons: Vec<String>,
    },
    /// Show a cron's runs, oldest first.
    History {
        name: String,
        /// Only runs scheduled since then: Unix seconds, RFC 3339, or a
        /// duration ago (10m, 2h, 1d).
        #[arg(long)]
        since: Option<String>,
        /// Only the last N runs.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// `json` prints the records as JSON.
        #[arg(long)]
        format: Option<String>,
    },
    /// Stop a cron from firing until it is resumed.
    Suspend { name: String },
    /// Let a suspended cron fire again, from its next time on.
    Resume { name: String },
    /// Run a cron now, beside its schedule.
    Run { name: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The cron's name; its runs are containers named NAME-<unix time>.
    #[arg(long)]
    name: String,
    /// Five fields (minute hour day-of-month month day-of-week), six with
    /// seconds first, or a macro (@hourly, @daily…).
    #[arg(long)]
    schedule: String,
    /// The schedule's IANA time zone.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// What a run due while the last still runs does: allow, forbid, replace.
    #[arg(long, default_value = "allow")]
    concurrency: String,
    /// Seconds after its time a run missed while hulld was down may still start.
    #[arg(long, value_name = "SECONDS")]
    starting_deadline: Option<u64>,
    /// The run's size (S1 … L3).
    #[arg(long)]
    size: Option<String>,
    /// Environment variables of the run (KEY=VALUE).
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// POST each run's record (JSON) to this URL.
    #[arg(long)]
    notify_url: Option<String>,
    /// Which runs are posted: on-failure, on-success, all.
    #[arg(long, default_value = "on-failure", requires = "notify_url")]
    notify: String,
    /// The image each run starts from.
    image: String,
    /// The command each run runs, instead of the image's.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn cron(client: &Client, command: CronCommand) -> Result<i32> {
    run(client, command).await.or_else(failed)
}

async fn run(client: &Client, command: CronCommand) -> Result<i32> {
    let path_of = |name: &str| format!("/crons/{}", encode(name));
    match command {
        CronCommand::Create(args) => {
            let name = args.name.clone();
            let spec = spec(args)?;
            let path = format!("/crons/create?name={}", encode(&name));
            let _: Value = client.call_json(Method::POST, &path, Some(&spec)).await?;
            println!("{name}");
            Ok(0)
        }
        CronCommand::Ls { all } => {
            let path = if all { "/crons?all=1" } else { "/crons" };
            let crons: Vec<CronView> = client.get_json(path).await?;
            print_table(&listing(&crons, all));
            Ok(0)
        }
        CronCommand::Inspect { crons } => inspect_each(client, &crons, path_of).await,
        CronCommand::Rm { crons } => remove_each(client, &crons, path_of).await,
        CronCommand::History {
            name,
            since,
            tail,
            format,
        } => history(client, &name, since, tail, format).await,
        CronCommand::Suspend { name } => action(client, &name, "suspend").await,
        CronCommand::Resume { name } => action(client, &name, "resume").await,
        CronCommand::Run { name } => action(client, &name, "run").await,
    }
}

fn spec(args: CreateArgs) -> Result<CronSpec> {
    let concurrency: Concurrency = args.concurrency.parse()?;
    let notify: Notify = args.notify.parse()?;
    let mut config = json!({ "Image": args.image });
    if !args.command.is_empty() {
        config["Cmd"] = json!(args.command);
    }
    if !args.env.is_empty() {
        config["Env"] = json!(args.env);
    }
    if let Some(size) = &args.size {
        let vm = hull_api::size::named(size)?;
        config["Labels"] = json!({ hull_api::server::SIZE_LABEL: size.to_ascii_uppercase() });
        config["HostConfig"] = json!({
            "Memory": i64::from(vm.memory_mib) << 20,
            "NanoCpus": i64::from(vm.vcpus) * 1_000_000_000,
        });
    }
    Ok(CronSpec {
        schedule: args.schedule,
        time_zone: args.tz,
        concurrency_policy: concurrency,
        starting_deadline_seconds: args.starting_deadline,
        notify_url: args.notify_url,
        notify_policy: notify,
        config,
    })
}

fn listing(crons: &[CronView], all: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "NAME", "SCHEDULE", "IMAGE", "COMMAND", "STATE", "SUCCESS", "ERROR",
    ];
    header.extend(["LAST RUN", "NEXT RUN"]);
    if all {
        header.insert(0, "TENANT");
    }
    let mut rows = vec![header.into_iter().map(str::to_owned).collect::<Vec<_>>()];
    for cron in crons {
        let config = &cron.spec.config;
        let command = config["Cmd"]
            .as_array()
            .map(|words| {
                let words: Vec<&str> = words.iter().filter_map(Value::as_str).collect();
                words.join(" ")
            })
            .unwrap_or_default();
        let mut row = vec![
            cron.name.clone(),
            format!("{} ({})", cron.spec.schedule, cron.spec.time_zone),
            config["Image"].as_str().unwrap_or_default().to_owned(),
            command,
            if cron.suspended {
                "suspended"
            } else {
                "active"
            }
            .to_owned(),
            cron.success_count.to_string(),
            cron.error_count.to_string(),
            cron.last_run.clone().unwrap_or_default(),
            cron.next_run.clone().unwrap_or_default(),
        ];
        if all {
            row.insert(0, cron.tenant.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    rows
}

async fn history(
    client: &Client,
    name: &str,
    since: Option<String>,
    tail: Option<usize>,
    format: Option<String>,
) -> Result<i32> {
    let mut path = format!("/crons/{}/history?", encode(name));
    if let Some(since) = since {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs() as i64;
        let Some(unix) = hull_cron::record::parse_since(&since, now) else {
            bail!("invalid --since {since:?}: give Unix seconds, RFC 3339 or a duration (10m, 2h)");
        };
        path.push_str(&format!("since={unix}&"));
    }
    if let Some(tail) = tail {
        path.push_str(&format!("tail={tail}"));
    }
    let runs: Vec<Value> = client.get_json(&path).await?;
    match format.as_deref() {
        Some("json") => println!("{}", serde_json::to_string_pretty(&runs)?),
        None | Some("table") => {
            let mut rows = vec![[
                "CONTAINER",
                "SCHEDULED",
                "STATUS",
                "EXIT CODE",
                "STARTED",
                "FINISHED",
            ]
            .map(str::to_owned)
            .to_vec()];
            for run in &runs {
                let text = |key: &str| run[key].as_str().unwrap_or_default().to_owned();
                rows.push(vec![
                    text("Container"),
                    text("ScheduledAt"),
                    text("Status"),
                    run["ExitCode"]
                        .as_i64()
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    text("StartedAt"),
                    text("FinishedAt"),
                ]);
            }
            print_table(&rows);
        }
        Some(other) => bail!("unknown --format {other:?}: use json or table"),
    }
    Ok(0)
}

async fn action(client: &Client, name: &str, action: &str) -> Result<i32> {
    let path = format!("/crons/{}/{action}", encode(name));
    client
        .call_json::<()>(Method::POST, &path, None::<&()>)
        .await?;
    Ok(0)
}
