//! `hull pod`: pods from pod files, several containers in one VM.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hull_api::types::pod::PodSummary;
use hull_api::units::human_duration;
use hull_api::{Client, Method};

use crate::containers::failed;
use crate::each::inspect_each;
use crate::images::print_table;
use crate::tag::encode;

#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Create a pod from a pod file (a Kubernetes Pod in YAML or JSON);
    /// prints its id.
    Create(PodFileArgs),
    /// Create a pod from a pod file and start it; prints its id.
    Run(PodFileArgs),
    /// Start a pod's containers in its VM.
    Start { pods: Vec<String> },
    /// Stop a pod's containers; its VM powers off after the last.
    Stop(StopArgs),
    /// List pods.
    #[command(alias = "list", alias = "ps")]
    Ls,
    /// Remove pods and their containers.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Show a pod as JSON.
    Inspect { pods: Vec<String> },
}

#[derive(Debug, Args)]
pub struct PodFileArgs {
    /// The pod file; `-` reads standard input.
    #[arg(short = 'f', long = "file")]
    file_flag: Option<PathBuf>,
    /// The pod file, as an alternative to `-f`.
    #[arg(conflicts_with = "file_flag", required_unless_present = "file_flag")]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal before killing.
    #[arg(short = 't', long = "time")]
    time: Option<u32>,
    #[arg(required = true)]
    pods: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill running containers first.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    pods: Vec<String>,
}

pub async fn pod(client: &Client, command: PodCommand) -> Result<i32> {
    match command {
        PodCommand::Create(args) => create(client, args, false).await.or_else(failed),
        PodCommand::Run(args) => create(client, args, true).await.or_else(failed),
        PodCommand::Start { pods } => each(client, &pods, Method::POST, "/start").await,
        PodCommand::Stop(args) => {
            let query = args.time.map(|t| format!("/stop?t={t}"));
            each(
                client,
                &args.pods,
                Method::POST,
                query.as_deref().unwrap_or("/stop"),
            )
            .await
        }
        PodCommand::Rm(args) => {
            let query = format!("?force={}", args.force);
            each(client, &args.pods, Method::DELETE, &query).await
        }
        PodCommand::Ls => list(client).await.or_else(failed),
        PodCommand::Inspect { pods } => {
            inspect_each(client, &pods, |pod| {
                format!("/hull/pods/{}/json", encode(pod))
            })
            .await
        }
    }
}

/// Sends `method /hull/pods/{pod}{suffix}` for each pod, printing its name;
/// a failure is reported and the rest go ahead.
async fn each(client: &Client, pods: &[String], method: Method, suffix: &str) -> Result<i32> {
    let mut code = 0;
    for pod in pods {
        let path = format!("/hull/pods/{}{suffix}", encode(pod));
        match client
            .call_json::<()>(method.clone(), &path, None::<&()>)
            .await
        {
            Ok(()) => println!("{pod}"),
            Err(err) => code = failed(err.into())?,
        }
    }
    Ok(code)
}

async fn create(client: &Client, args: PodFileArgs, start: bool) -> Result<i32> {
    let path = args.file_flag.or(args.file).expect("clap requires a file");
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the pod file from stdin")?
    } else {
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the pod file {}", path.display()))?
    };
    // Images are pulled only for a file that reads as a pod here; the
    // daemon has the last word on any other (why it is malformed, or, on
    // a cloud, what in it is not the tenant's to do).
    if let Ok(spec) = hull_api::parse_pod_file(&text) {
        for container in &spec.containers {
            crate::pull::ensure_image(client, &container.image).await?;
        }
    }
    let created = client.create_pod(&text).await?;
    if start {
        let path = format!("/hull/pods/{}/start", created.id);
        client
            .call_json::<()>(Method::POST, &path, None::<&()>)
            .await?;
    }
    println!("{}", created.id);
    Ok(0)
}

async fn list(client: &Client) -> Result<i32> {
    let pods: Vec<PodSummary> = client.get_json("/hull/pods/json").await?;
    let mut rows = vec![
        ["POD ID", "NAME", "STATUS", "CONTAINERS", "SIZE", "CREATED"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for pod in pods {
        let members: Vec<&str> = pod
            .containers
            .iter()
            .map(|c| c.name.rsplit_once('.').map_or(c.name.as_str(), |(_, n)| n))
            .collect();
        let then = UNIX_EPOCH + Duration::from_secs(u64::try_from(pod.created).unwrap_or(0));
        let age = SystemTime::now().duration_since(then).unwrap_or_default();
        rows.push(vec![
            pod.id[..12.min(pod.id.len())].to_owned(),
            pod.name,
            pod.status,
            members.join(","),
            if pod.size.is_empty() {
                "default".to_owned()
            } else {
                pod.size
            },
            format!("{} ago", human_duration(age)),
        ]);
    }
    print_table(&rows);
    Ok(0)
}
