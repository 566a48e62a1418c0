//! hull: the command-line client of hulld. Parses arguments and calls the API.

mod admin;
mod archive_out;
mod attach;
mod cloud;
mod commit;
mod containers;
mod cp;
mod create;
mod cron;
mod daemon;
mod each;
mod exec;
mod fip;
mod func;
mod health;
mod image;
mod images;
mod info;
mod load;
mod login;
mod logs;
mod networks;
mod observe;
mod pods;
mod ps;
mod pull;
mod push;
mod run;
mod save;
mod service;
mod sg;
mod stdio;
mod tag;
mod templates;
mod terminal;
mod usage;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hull", version, about = "Run containers in lightweight VMs")]
struct Cli {
    /// hulld's address (unix:///path).
    #[arg(short = 'H', long, global = true, env = "HULL_HOST", default_value = hull_api::DEFAULT_HOST)]
    host: String,
    /// State directory of a hulld that hull starts when none is running.
    #[arg(
        long,
        global = true,
        env = "HULL_ROOT",
        default_value = "/var/lib/hull"
    )]
    root: PathBuf,
    /// The CA that signed a cloud's certificate, for -H tcp://….
    #[arg(long, global = true, env = "HULL_TLS_CA")]
    tlscacert: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new container, in its own VM.
    Run(run::RunArgs),
    /// Create a container without starting it; prints its id.
    Create(run::RunArgs),
    /// List containers.
    Ps(ps::PsArgs),
    /// Start stopped containers.
    Start(containers::StartArgs),
    /// Stop running containers: their stop signal, then SIGKILL.
    Stop(containers::StopArgs),
    /// Stop and start containers.
    Restart(containers::StopArgs),
    /// Send a signal to running containers.
    Kill(containers::KillArgs),
    /// Freeze running containers' VMs where they are.
    Pause(containers::PauseArgs),
    /// Let paused containers go on.
    Unpause(containers::PauseArgs),
    /// Wait for containers to stop and print their exit codes.
    Wait(containers::WaitArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// Change containers' memory and CPU limits (within their VM size) or restart policy.
    Update(containers::UpdateArgs),
    /// Show containers' (or images') details as JSON.
    Inspect(containers::InspectArgs),
    /// List a container's published ports.
    Port(containers::PortArgs),
    /// Show a container's output.
    Logs(logs::LogsArgs),
    /// Run a command in a running container.
    Exec(exec::ExecArgs),
    /// Attach this terminal to a running container.
    Attach(attach::AttachArgs),
    /// Show a container's processes.
    Top(observe::TopArgs),
    /// Show what a container changed in its image's files (A, C, D).
    Diff(observe::DiffArgs),
    /// Show containers' CPU, memory and processes.
    Stats(observe::StatsArgs),
    /// Show container events as they happen.
    Events(observe::EventsArgs),
    /// Show the steps that made an image.
    History(observe::HistoryArgs),
    /// Create a new image from a container's changes.
    Commit(commit::CommitArgs),
    /// Copy files between a container (running or stopped) and the host.
    Cp(cp::CpArgs),
    /// Export a container's filesystem as a tar archive.
    Export(commit::ExportArgs),
    /// Import the contents of a tarball to create a filesystem image.
    Import(commit::ImportArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(containers::ContainerCommand),
    /// List images.
    Images(images::ImagesArgs),
    /// Load images from a docker-archive or OCI-layout tar.
    Load(load::LoadArgs),
    /// Pull an image from a registry.
    Pull(pull::PullArgs),
    /// Push an image to a registry.
    Push(push::PushArgs),
    /// Save images to a tar archive (docker-archive, or an OCI layout).
    Save(save::SaveArgs),
    /// Give an image another name.
    Tag(tag::TagArgs),
    /// Remove images (or tags of them).
    Rmi(tag::RmiArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Show what the store takes.
    #[command(subcommand)]
    System(image::SystemCommand),
    /// Log in to a registry.
    Login(login::LoginArgs),
    /// Log out of a registry.
    Logout(login::LogoutArgs),
    /// Show how hulld runs VMs here.
    Info,
    /// Manage VM templates.
    #[command(subcommand)]
    Template(templates::TemplateCommand),
    /// Show the pool of ready VMs.
    #[command(subcommand)]
    Pool(templates::PoolCommand),
    /// Manage pods: several containers in one VM, from a pod file.
    #[command(subcommand)]
    Pod(pods::PodCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Run containers on a schedule.
    #[command(subcommand)]
    Cron(cron::CronCommand),
    /// Functions: each call runs a new container of an image.
    #[command(subcommand)]
    Func(func::FuncCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
    /// Manage security groups: the firewall of containers' interfaces.
    #[command(subcommand)]
    Sg(sg::SgCommand),
    /// Manage floating IPs: public addresses for containers.
    #[command(subcommand)]
    Fip(fip::FipCommand),
    /// Manage services: a balanced address over replicas of one image.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Show the versions of hull and of the hulld it reaches.
    Version,
    /// Save a cloud's credentials: hull config --accesskey AK --secretkey SK tcp://HOST:PORT
    Config(cloud::ConfigArgs),
    /// Container seconds billed: your runs per container and size, and a total.
    Usage(usage::UsageArgs),
    /// The operator's commands: tenants and their keys.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`hull run … | head`); Rust ignores SIGPIPE by default.
    // SAFETY: setting a signal's disposition to its default before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the async runtime starts");
    let result = runtime.block_on(async {
        let command = match cli.command {
            Command::Config(args) => return cloud::configure(args),
            command => command,
        };
        let client = if cli.host.starts_with("tcp://") {
            cloud::tenant_client(&cli.host, cli.tlscacert.as_deref())?
        } else {
            daemon::connect(&cli.host, &cli.root).await?
        };
        match command {
            Command::Config(_) => unreachable!("handled above"),
            Command::Admin(command) => admin::admin(&client, command).await,
            Command::Usage(args) => usage::usage(&client, args)
                .await
                .or_else(containers::failed),
            Command::Run(args) => run::run(&client, args).await,
            Command::Create(args) => create::create(&client, args).await,
            Command::Ps(args) => ps::ps(&client, args).await.or_else(containers::failed),
            Command::Start(args) => containers::start(&client, args)
                .await
                .or_else(containers::failed),
            Command::Stop(args) => containers::stop(&client, args).await,
            Command::Restart(args) => containers::restart(&client, args).await,
            Command::Kill(args) => containers::kill(&client, args).await,
            Command::Pause(args) => containers::pause(&client, args, true).await,
            Command::Unpause(args) => containers::pause(&client, args, false).await,
            Command::Wait(args) => containers::wait(&client, args).await,
            Command::Rm(args) => containers::rm(&client, args).await,
            Command::Update(args) => containers::update(&client, args)
                .await
                .or_else(containers::failed),
            Command::Rename(args) => containers::rename(&client, args)
                .await
                .or_else(containers::failed),
            Command::Port(args) => containers::port(&client, args)
                .await
                .or_else(containers::failed),
            Command::Inspect(args) => containers::inspect(&client, args)
                .await
                .or_else(containers::failed),
            Command::Logs(args) => logs::logs(&client, args).await.or_else(containers::failed),
            Command::Exec(args) => exec::exec(&client, args).await.or_else(containers::failed),
            Command::Attach(args) => attach::attach(&client, args)
                .await
                .or_else(containers::failed),
            Command::Top(args) => observe::top(&client, args)
                .await
                .or_else(containers::failed),
            Command::Diff(args) => observe::diff(&client, args)
                .await
                .or_else(containers::failed),
            Command::Stats(args) => observe::stats(&client, args)
                .await
                .or_else(containers::failed),
            Command::Events(args) => observe::events(&client, args)
                .await
                .or_else(containers::failed),
            Command::History(args) => observe::history(&client, args)
                .await
                .or_else(containers::failed),
            Command::Commit(args) => commit::commit(&client, args)
                .await
                .map(|()| 0)
                .or_else(containers::failed),
            Command::Cp(args) => cp::cp(&client, args)
                .await
                .map(|()| 0)
                .or_else(containers::failed),
            Command::Export(args) => commit::export(&client, args)
                .await
                .map(|()| 0)
                .or_else(containers::failed),
            Command::Import(args) => commit::import(&client, args)
                .await
                .map(|()| 0)
                .or_else(containers::failed),
            Command::Container(command) => containers::container(&client, command).await,
            Command::Images(args) => images::list(&client, args).await.map(|()| 0),
            Command::Load(args) => load::load(&client, args).await.map(|()| 0),
            Command::Pull(args) => pull::pull(&client, args).await.map(|()| 0),
            Command::Push(args) => push::push(&client, args).await.map(|()| 0),
            Command::Save(args) => save::save(&client, args).await.map(|()| 0),
            Command::Tag(args) => tag::tag(&client, args).await.map(|()| 0),
            Command::Rmi(args) => tag::rmi(&client, args).await,
            Command::Image(command) => image::run(&client, command).await,
            Command::System(command) => image::system(&client, command).await.map(|()| 0),
            Command::Login(args) => login::login(&client, args).await.map(|()| 0),
            Command::Logout(args) => login::logout(args).await.map(|()| 0),
            Command::Info => info::show(&client).await.map(|()| 0),
            Command::Version => info::version(&client).await.map(|()| 0),
            Command::Template(command) => templates::template(&client, command).await,
            Command::Pool(command) => templates::pool(&client, command).await,
            Command::Pod(command) => pods::pod(&client, command).await,
            Command::Volume(command) => volumes::volume(&client, command).await,
            Command::Cron(command) => cron::cron(&client, command).await,
            Command::Func(command) => func::func(&client, command).await,
            Command::Network(command) => networks::network(&client, command).await,
            Command::Sg(command) => sg::sg(&client, command).await,
            Command::Fip(command) => fip::fip(&client, command).await,
            Command::Service(command) => service::service(&client, command).await,
        }
    });
    // A task may be blocked reading stdin, which would hold up a normal
    // shutdown until the user typed something.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Err(err) => {
            eprintln!("hull: {err:#}");
            ExitCode::from(125)
        }
    }
}
