//! hulld: Hull's daemon. Parses arguments and wires the libraries together.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use hull_api::{Daemon, DaemonConfig};
use hull_vm::{AccelChoice, ArtifactSources};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "hulld",
    version,
    about = "Runs containers in lightweight VMs and serves Hull's API"
)]
struct Args {
    /// Directory for all of Hull's state.
    #[arg(long, env = "HULL_ROOT", default_value = "/var/lib/hull")]
    root: PathBuf,
    /// Address to listen on (unix:///path).
    #[arg(short = 'H', long, env = "HULL_HOST", default_value = hull_api::DEFAULT_HOST)]
    host: String,
    /// Accelerator: auto, kvm or tcg.
    #[arg(long, env = "HULL_ACCEL", default_value = "auto")]
    accel: AccelChoice,
    /// Guest kernel (an uncompressed vmlinux with PVH boot support).
    #[arg(long, env = "HULL_KERNEL")]
    kernel: Option<PathBuf>,
    /// Statically linked guest agent.
    #[arg(long, env = "HULL_AGENT")]
    agent: Option<PathBuf>,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Memory per VM, in MiB.
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// Boot every VM cold instead of cloning a booted template.
    #[arg(long, env = "HULL_NO_TEMPLATES", value_parser = clap::builder::BoolishValueParser::new())]
    no_templates: bool,
    /// Template clones to keep resumed and idle, so runs skip starting
    /// QEMU: a count of the default size (4), or per size (S1=4,M1=1).
    #[arg(long, env = "HULL_POOL", default_value = "0")]
    pool: String,
    /// Directory for VM templates' memory and state (best on tmpfs).
    #[arg(long, env = "HULL_TEMPLATE_DIR")]
    template_dir: Option<PathBuf>,
    /// A mirror of Docker Hub (http(s)://host[:port]), tried before it for
    /// images like `busybox`; repeat it for several, tried in order.
    #[arg(
        long = "registry-mirror",
        value_name = "URL",
        env = "HULL_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    registry_mirrors: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HULL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let socket = hull_api::socket_path(&args.host);
    let listener = bind(&socket).await?;
    let daemon = Daemon::open(DaemonConfig {
        root: args.root.clone(),
        accel: args.accel,
        artifacts: ArtifactSources {
            kernel: args.kernel,
            agent: args.agent,
        },
        vcpus: args.cpus,
        memory_mib: args.memory,
        templates: !args.no_templates,
        template_dir: args.template_dir,
        pools: hull_api::size::parse_pools(&args.pool).context("invalid --pool")?,
        vm_uids: hull_vm::uids::VmUids::DEFAULT,
    })
    .with_context(|| format!("cannot start with state in {}", args.root.display()))?;
    daemon
        .registry()
        .set_mirrors(&args.registry_mirrors)
        .context("cannot use the registry mirrors")?;
    let pid_file = args.root.join("hulld.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    info!(socket = %socket.display(), root = %args.root.display(), "hulld listening");

    let daemon = Arc::new(daemon);
    let resuming = daemon.clone();
    tokio::spawn(async move {
        if let Err(err) = resuming.reattach_containers().await {
            warn!(error = %hull_api::server::error_chain(&err), "cannot re-attach to the containers of the last hulld");
        }
        // A pool is asked for to be ready before the first run, so its
        // template and clones are made now rather than on first use.
        if resuming.has_pool() {
            if let Err(err) = resuming.runtime().await {
                warn!(error = %hull_api::server::error_chain(&err), "cannot fill the VM pool");
            }
        }
    });

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let served = tokio::select! {
        served = hull_api::server::serve(listener, daemon) => served.context("serving the API failed"),
        _ = terminate.recv() => Ok(()),
        _ = interrupt.recv() => Ok(()),
    };
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&pid_file);
    info!("hulld stopped");
    served
}

/// Binds the socket, replacing a stale one but never a live daemon's.
async fn bind(socket: &std::path::Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            bail!("another hulld is already listening on {}", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("cannot remove the stale socket {}", socket.display()))?;
    }
    tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))
}
