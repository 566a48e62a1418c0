//! `hull start`, `stop`, `restart`, `kill`, `wait`, `rm`, `rename`,
//! `inspect` and `hull container …`, with docker's flags and output.

use std::future::Future;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hull_api::types::container::ContainerUpdate;
use hull_api::{Client, ClientError};

use crate::images::human_size;

/// docker's wording of a failure: the daemon's own message, or ours.
pub fn describe(err: &anyhow::Error) -> String {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api { message, .. }) => format!("Error response from daemon: {message}"),
        _ => format!("{err:#}"),
    }
}

/// Reports a failed container command as docker does: one line, exit 1.
pub fn failed(err: anyhow::Error) -> Result<i32> {
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Api { .. }) => eprintln!("{}", describe(&err)),
        _ => eprintln!("hull: {err:#}"),
    }
    Ok(1)
}

/// Applies `action` to each container in turn, printing what it returns;
/// a failure is reported and the others still go ahead. Exits 1 if any failed.
async fn each<F, Fut>(containers: &[String], action: F) -> i32
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, ClientError>>,
{
    let mut code = 0;
    for container in containers {
        match action(container.clone()).await {
            Ok(line) => println!("{line}"),
            Err(err) => {
                code = failed(err.into()).unwrap_or(1);
            }
        }
    }
    code
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output and exit with its code.
    #[arg(short, long)]
    attach: bool,
    /// Attach stdin too.
    #[arg(short, long)]
    interactive: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn start(client: &Client, args: StartArgs) -> Result<i32> {
    if args.attach || args.interactive {
        let [container] = &args.containers[..] else {
            bail!("you cannot start and attach multiple containers at once");
        };
        return crate::attach::session(client, container, args.interactive, true).await;
    }
    Ok(each(&args.containers, |c| async move {
        client.start_container(&c).await.map(|()| c)
    })
    .await)
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal to end it before it is killed.
    #[arg(short = 't', long = "time", alias = "timeout", value_name = "SECONDS")]
    time: Option<i64>,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn stop(client: &Client, args: StopArgs) -> Result<i32> {
    Ok(each(&args.containers, |c| async move {
        client.stop_container(&c, args.time).await.map(|()| c)
    })
    .await)
}

pub async fn restart(client: &Client, args: StopArgs) -> Result<i32> {
    Ok(each(&args.containers, |c| async move {
        client.restart_container(&c, args.time).await.map(|()| c)
    })
    .await)
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The signal to send: a name or a number.
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn kill(client: &Client, args: KillArgs) -> Result<i32> {
    let signal = args.signal.as_str();
    Ok(each(&args.containers, |c| async move {
        client.kill_container(&c, Some(signal)).await.map(|()| c)
    })
    .await)
}

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// `hull pause` (`pause`) and `hull unpause`.
pub async fn pause(client: &Client, args: PauseArgs, pause: bool) -> Result<i32> {
    Ok(each(&args.containers, |c| async move {
        client.pause_container(&c, pause).await.map(|()| c)
    })
    .await)
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// Prints each container's exit code once it has stopped.
pub async fn wait(client: &Client, args: WaitArgs) -> Result<i32> {
    Ok(each(&args.containers, |c| async move {
        let status = client
            .wait_container(&c, "not-running")
            .await?
            .result()
            .await?;
        Ok(status.status_code.to_string())
    })
    .await)
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove a running container.
    #[arg(short, long)]
    force: bool,
    /// Remove its anonymous volumes too.
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

pub async fn rm(client: &Client, args: RmArgs) -> Result<i32> {
    Ok(each(&args.containers, |c| async move {
        let path = format!(
            "/containers/{}?force={}&v={}",
            crate::tag::encode(&c),
            args.force,
            args.volumes
        );
        client
            .call_json::<()>(hull_api::Method::DELETE, &path, None::<&()>)
            .await
            .map(|()| c)
    })
    .await)
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    container: String,
    new_name: String,
}

pub async fn rename(client: &Client, args: RenameArgs) -> Result<i32> {
    client
        .rename_container(&args.container, &args.new_name)
        .await?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Memory limit (e.g. 200m, 1g), within the container's VM size.
    #[arg(short, long)]
    memory: Option<String>,
    /// CPUs (e.g. 1.5): vCPUs beyond them, rounded up, go offline.
    #[arg(long)]
    cpus: Option<f64>,
    /// Restart policy: no, always, unless-stopped, on-failure[:N].
    #[arg(long)]
    restart: Option<String>,
    /// Add the containers to a security group (repeat for more).
    #[arg(long = "sg-add", value_name = "NAME")]
    sg_add: Vec<String>,
    /// Take the containers out of a security group (repeat for more).
    #[arg(long = "sg-rm", value_name = "NAME")]
    sg_rm: Vec<String>,
    /// Containers: names or ids.
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `hull update`: changes running or stopped containers' limits.
pub async fn update(client: &Client, args: UpdateArgs) -> Result<i32> {
    let memory = args
        .memory
        .as_deref()
        .map(|text| {
            crate::create::parse_bytes(text)
                .with_context(|| format!("invalid argument {text:?} for \"-m, --memory\""))
        })
        .transpose()?;
    let nano_cpus = match args.cpus {
        Some(cpus) if !(cpus.is_finite() && cpus > 0.0) => {
            bail!("invalid argument \"{cpus}\" for \"--cpus\": it must be a positive number")
        }
        cpus => cpus.map(|cpus| (cpus * 1e9).round() as i64),
    };
    let groups = !args.sg_add.is_empty() || !args.sg_rm.is_empty();
    if memory.is_none() && nano_cpus.is_none() && args.restart.is_none() && !groups {
        bail!("you must provide one or more flags when using this command");
    }
    let limits = memory.is_some() || nano_cpus.is_some() || args.restart.is_some();
    let update = ContainerUpdate {
        memory,
        nano_cpus,
        restart_policy: args
            .restart
            .as_deref()
            .map(crate::create::restart_policy)
            .transpose()?,
        ..ContainerUpdate::default()
    };
    let (update, args) = (&update, &args);
    Ok(each(&args.containers, |container| async move {
        if groups {
            crate::sg::update_groups(client, &container, &args.sg_add, &args.sg_rm).await?;
        }
        if limits {
            let updated = client.update_container(&container, update).await?;
            for warning in updated.warnings {
                eprintln!("WARNING: {warning}");
            }
        }
        Ok(container)
    })
    .await)
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Containers (or images): names or ids.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

/// Prints docker's JSON array of containers, or of images by that name.
pub async fn inspect(client: &Client, args: InspectArgs) -> Result<i32> {
    let mut found = Vec::new();
    let mut code = 0;
    for name in &args.names {
        // Containers keep their fields' order: their type, not a map, is serialized.
        let json = match client.inspect_container(name).await {
            Ok(container) => docker_indent(&serde_json::to_string_pretty(&container)?),
            Err(ClientError::Api { status, .. }) if status == 404 => {
                let path = format!("/images/{}/json", crate::tag::encode(name));
                match client.get_json::<serde_json::Value>(&path).await {
                    Ok(image) => docker_indent(&serde_json::to_string_pretty(&image)?),
                    Err(_) => {
                        eprintln!("Error: No such object: {name}");
                        code = 1;
                        continue;
                    }
                }
            }
            Err(err) => return Err(err.into()),
        };
        found.push(json.replace('\n', "\n    "));
    }
    if found.is_empty() {
        println!("[]");
    } else {
        println!("[\n    {}\n]", found.join(",\n    "));
    }
    Ok(code)
}

/// serde_json's two-space indentation made docker's four (JSON strings hold no newline).
fn docker_indent(pretty: &str) -> String {
    let lines: Vec<String> = pretty
        .lines()
        .map(|line| {
            let text = line.trim_start_matches(' ');
            format!("{}{text}", " ".repeat(2 * (line.len() - text.len())))
        })
        .collect();
    lines.join("\n")
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation (hull never asks).
    #[arg(short, long)]
    force: bool,
}

/// Removes stopped containers and prints docker's report.
pub async fn prune(client: &Client, args: PruneArgs) -> Result<i32> {
    let _ = args.force;
    let report = client.prune_containers().await?;
    if !report.containers_deleted.is_empty() {
        println!("Deleted Containers:");
        for id in &report.containers_deleted {
            println!("{id}");
        }
        println!();
    }
    let reclaimed = i64::try_from(report.space_reclaimed).unwrap_or(i64::MAX);
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(0)
}

/// `hull container …`: docker's names of the container commands.
#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// List containers (`hull ps`).
    #[command(alias = "list", alias = "ps")]
    Ls(crate::ps::PsArgs),
    /// Create and run a container (`hull run`).
    Run(crate::run::RunArgs),
    /// Create a container without starting it (`hull create`).
    Create(crate::run::RunArgs),
    /// Start stopped containers (`hull start`).
    Start(StartArgs),
    /// Stop running containers (`hull stop`).
    Stop(StopArgs),
    /// Stop and start containers (`hull restart`).
    Restart(StopArgs),
    /// Send a signal to containers (`hull kill`).
    Kill(KillArgs),
    /// Wait for containers to stop and print their exit codes (`hull wait`).
    Wait(WaitArgs),
    /// Remove containers (`hull rm`).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Rename a container (`hull rename`).
    Rename(RenameArgs),
    /// Change containers' memory and CPU limits or restart policy (`hull update`).
    Update(UpdateArgs),
    /// Show containers' details as JSON (`hull inspect`).
    Inspect(InspectArgs),
    /// Show a container's output (`hull logs`).
    Logs(crate::logs::LogsArgs),
    /// Run a command in a running container (`hull exec`).
    Exec(crate::exec::ExecArgs),
    /// Attach to a running container (`hull attach`).
    Attach(crate::attach::AttachArgs),
    /// Remove every stopped container.
    Prune(PruneArgs),
    /// Create a new image from a container's changes (`hull commit`).
    Commit(crate::commit::CommitArgs),
    /// Export a container's filesystem as a tar archive (`hull export`).
    Export(crate::commit::ExportArgs),
}

pub async fn container(client: &Client, command: ContainerCommand) -> Result<i32> {
    let result = match command {
        ContainerCommand::Run(args) => return crate::run::run(client, args).await,
        ContainerCommand::Create(args) => return crate::create::create(client, args).await,
        ContainerCommand::Ls(args) => crate::ps::ps(client, args).await,
        ContainerCommand::Start(args) => start(client, args).await,
        ContainerCommand::Stop(args) => stop(client, args).await,
        ContainerCommand::Restart(args) => restart(client, args).await,
        ContainerCommand::Kill(args) => kill(client, args).await,
        ContainerCommand::Wait(args) => wait(client, args).await,
        ContainerCommand::Rm(args) => rm(client, args).await,
        ContainerCommand::Rename(args) => rename(client, args).await,
        ContainerCommand::Update(args) => update(client, args).await,
        ContainerCommand::Inspect(args) => inspect(client, args).await,
        ContainerCommand::Logs(args) => crate::logs::logs(client, args).await,
        ContainerCommand::Exec(args) => crate::exec::exec(client, args).await,
        ContainerCommand::Attach(args) => crate::attach::attach(client, args).await,
        ContainerCommand::Prune(args) => prune(client, args).await,
        ContainerCommand::Commit(args) => crate::commit::commit(client, args).await.map(|()| 0),
        ContainerCommand::Export(args) => crate::commit::export(client, args).await.map(|()| 0),
    };
    result.or_else(failed)
}

#[derive(Debug, Args)]
pub struct PortArgs {
    container: String,
    /// One port: PORT[/PROTO].
    port: Option<String>,
}

/// `hull port`: the container's published ports, as docker prints them.
pub async fn port(client: &Client, args: PortArgs) -> Result<i32> {
    let container = client.inspect_container(&args.container).await?;
    let ports = &container.network_settings.ports;
    let wanted = args.port.as_deref().map(|p| {
        if p.contains('/') {
            p.to_owned()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut found = false;
    for (key, hosts) in ports {
        if wanted.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for host in hosts.as_array().into_iter().flatten() {
            let ip = host["HostIp"].as_str().unwrap_or_default();
            let port = host["HostPort"].as_str().unwrap_or_default();
            found = true;
            if wanted.is_some() {
                println!("{ip}:{port}");
            } else {
                println!("{key} -> {ip}:{port}");
            }
        }
    }
    if let (Some(wanted), false) = (wanted, found) {
        eprintln!(
            "Error: No public port '{wanted}' published for {}",
            args.container
        );
        return Ok(1);
    }
    Ok(0)
}
