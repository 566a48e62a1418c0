//! hulld: Hull's daemon. Parses arguments and wires the libraries together.

mod certs;
mod funcs;
mod lock;
mod logfile;
mod tenants;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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
    /// Memory, in MiB, that image templates (a size's template with one
    /// image's rootfs mounted) may hold in all; each holds its size's.
    /// Frequent images get one, `hull template create IMAGE` pins one.
    /// 0: none.
    #[arg(long, env = "HULL_IMAGE_TEMPLATE_MEMORY", default_value_t = 1024)]
    image_template_memory: u64,
    /// A mirror of Docker Hub (http(s)://host[:port]), tried before it for
    /// images like `busybox`; repeat it for several, tried in order.
    #[arg(
        long = "registry-mirror",
        value_name = "URL",
        env = "HULL_REGISTRY_MIRRORS",
        value_delimiter = ','
    )]
    registry_mirrors: Vec<String>,
    /// VMs this host runs at most (containers', pods', pooled ones and
    /// template builds); a start past it is refused. 0: no limit.
    #[arg(long, env = "HULL_MAX_VMS", default_value_t = 0)]
    max_vms: usize,
    /// How far the memory of VMs (their sizes, and templates' memory) may
    /// exceed the host's MemTotal: a start past MemTotal × this is refused.
    #[arg(long, env = "HULL_MEMORY_OVERCOMMIT", default_value_t = 1.5)]
    memory_overcommit: f64,
    /// Write hulld's log (and its stdout and stderr) to this file, rotated
    /// at 10 MiB with 3 files kept, instead of to stderr.
    #[arg(long, env = "HULL_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// The most bytes of files one image may unpack to (`20G`, `500M`):
    /// larger images are refused on load and pull, as are those that would
    /// not fit on the image store's free disk.
    #[arg(long, env = "HULL_MAX_IMAGE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    max_image_size: Option<u64>,
    /// Serve tenants on this address (tcp://0.0.0.0:8443), over TLS, every
    /// request signed with a tenant's key. The Unix socket stays the operator's.
    #[arg(long, env = "HULL_LISTEN", value_name = "tcp://ADDR:PORT")]
    listen: Option<String>,
    /// The certificate chain (PEM) of the tenant listener and of the call
    /// plane off loopback; without it hulld makes its own CA and
    /// certificate under <root>/tls.
    #[arg(long, env = "HULL_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "HULL_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The master key that seals tenants' secret keys; keep it off the
    /// state directory's backups. Made at the first key issued.
    #[arg(
        long,
        env = "HULL_SECRETS_KEY",
        default_value = "/etc/hull/secrets.key"
    )]
    secrets_key: PathBuf,
    /// The host uids VMs' QEMU processes run as, FIRST:COUNT (one per VM at
    /// once); no account or user namespace may use them.
    #[arg(long, env = "HULL_VM_UIDS", value_name = "FIRST:COUNT", value_parser = parse_vm_uids)]
    vm_uids: Option<hull_vm::uids::VmUids>,
    /// Serve Prometheus metrics on this address (tcp://127.0.0.1:9323):
    /// plain HTTP, `GET /metrics` only. They are the operator's: bind it
    /// where tenants cannot reach it.
    #[arg(long, env = "HULL_METRICS", value_name = "tcp://ADDR:PORT")]
    metrics: Option<String>,
    /// The operator's public range (198.51.100.16/28) that floating IPs are
    /// allocated from; needs --uplink.
    #[arg(
        long = "fip-pool",
        env = "HULL_FIP_POOL",
        value_name = "CIDR",
        requires = "uplink"
    )]
    fip_pool: Option<String>,
    /// The interface on which the FIP pool's addresses are reached.
    #[arg(long, env = "HULL_UPLINK", value_name = "INTERFACE")]
    uplink: Option<String>,
    /// How the uplink answers for attached FIPs: proxy-arp (the host answers
    /// ARP for them but never holds them, so no service of its own is
    /// reached at a FIP) or address (added to the uplink).
    #[arg(
        long = "fip-uplink-mode",
        env = "HULL_FIP_UPLINK_MODE",
        default_value = "proxy-arp"
    )]
    fip_uplink_mode: hull_net::fip::UplinkMode,
    /// The region tenants' request signatures are scoped to.
    #[arg(long, env = "HULL_REGION", default_value = "us-west-1")]
    region: String,
    /// A registry host (name or address) tenants' pulls may reach though
    /// it is private; otherwise they reach public addresses only. Repeat it
    /// for several.
    #[arg(
        long = "tenant-registry",
        env = "HULL_TENANT_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST"
    )]
    tenant_registries: Vec<String>,
    /// Connections the tenant listener serves at once; more wait in the
    /// kernel's backlog.
    #[arg(long, env = "HULL_MAX_CONNECTIONS", value_name = "N", value_parser = parse_count,
          default_value_t = hull_api::server::connections::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections one tenant may hold at once on the tenant listener
    /// (held streams such as `logs -f`, `events` and attach count); a
    /// request on one more is answered 429 and its connection closed.
    #[arg(long, env = "HULL_MAX_CONNECTIONS_PER_TENANT", value_name = "N", value_parser = parse_count,
          default_value_t = hull_api::server::connections::DEFAULT_MAX_PER_TENANT)]
    max_connections_per_tenant: usize,
    /// Connections one address (an IPv6 /64) may hold on the tenant
    /// listener before they authenticate; one more is closed at once.
    #[arg(long, env = "HULL_MAX_UNAUTHENTICATED_PER_ADDRESS", value_name = "N", value_parser = parse_count,
          default_value_t = hull_api::server::connections::DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS)]
    max_unauthenticated_per_address: usize,
    #[command(flatten)]
    funcs: funcs::FuncArgs,
}

pub(crate) fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(count) if count > 0 => Ok(count),
        _ => Err(format!("'{text}' is not a count of 1 or more")),
    }
}

fn parse_vm_uids(text: &str) -> Result<hull_vm::uids::VmUids, String> {
    hull_vm::uids::VmUids::parse(text).map_err(|e| e.to_string())
}

pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    hull_image::limits::parse_size(text)
        .ok_or_else(|| format!("'{text}' is not a size such as 500M or 20G"))
}

/// hulld's own log rotates at this size, keeping this many files.
const LOG_MAX_SIZE: u64 = 10 << 20;
const LOG_MAX_FILES: u32 = 3;
/// The group whose members may use the API socket, when it exists.
const SOCKET_GROUP: &str = "hull";

fn main() -> Result<()> {
    // A run's witness is hulld started again by itself: a small process
    // that must not parse hulld's flags, take its lock or start a runtime.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == hull_api::metering::WITNESS_ARG)
    {
        return hull_api::metering::run_witness(&argv[2..]).map_err(anyhow::Error::msg);
    }
    serve()
}

#[tokio::main]
async fn serve() -> Result<()> {
    let args = Args::parse();
    if args.memory_overcommit.is_nan() || args.memory_overcommit <= 0.0 {
        bail!(
            "--memory-overcommit must be above 0, not {}",
            args.memory_overcommit
        );
    }
    init_logging(args.log_file.as_deref())?;
    // Before anything else touches the root or the socket: a second hulld
    // must leave the first one's state alone.
    let lock = lock::lock_root(&args.root)?;
    // Written before the socket exists: whoever sees the socket finds the
    // pid of the hulld behind it, not of one before it.
    let pid_file = args.root.join("hulld.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    raise_open_files_limit();
    let listen = args
        .listen
        .as_deref()
        .map(|text| tenants::parse_tcp("--listen", text))
        .transpose()?;
    let metrics = args
        .metrics
        .as_deref()
        .map(|text| tenants::parse_tcp("--metrics", text))
        .transpose()?;
    let func_listen = args.funcs.listen_address()?;
    let cert = certs::cert_files(args.tls_cert.clone(), args.tls_key.clone())?;
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
        image_template_mib: args.image_template_memory,
        pools: hull_api::size::parse_pools(&args.pool).context("invalid --pool")?,
        admission: hull_api::AdmissionConfig {
            max_vms: (args.max_vms > 0).then_some(args.max_vms),
            memory_overcommit: args.memory_overcommit,
        },
        vm_uids: args.vm_uids.unwrap_or(hull_vm::uids::VmUids::DEFAULT),
        cloud: hull_api::CloudConfig {
            secrets_key: args.secrets_key.clone(),
            region: args.region.clone(),
            witness: std::env::current_exe().ok(),
            tenant_registries: args.tenant_registries.clone(),
            connections: hull_api::server::connections::ConnectionLimits {
                total: args.max_connections,
                per_tenant: args.max_connections_per_tenant,
                unauthenticated_per_address: args.max_unauthenticated_per_address,
            },
        },
    })
    .with_context(|| format!("cannot start with state in {}", args.root.display()))?;
    if let Some(pool) = &args.fip_pool {
        let config = hull_net::fip::FipConfig {
            pool: pool
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid --fip-pool: {e}"))?,
            uplink: args.uplink.clone().context("--fip-pool needs --uplink")?,
            mode: args.fip_uplink_mode,
        };
        daemon
            .containers()
            .networks()
            .configure_fips(config)
            .context("cannot enable floating IPs")?;
    }
    if let Some(max) = args.max_image_size {
        let mut limits = daemon.images().limits();
        limits.max_unpacked_bytes = max;
        daemon.images().set_limits(limits);
    }
    daemon
        .registry()
        .set_mirrors(&args.registry_mirrors)
        .context("cannot use the registry mirrors")?;
    info!(socket = %socket.display(), root = %args.root.display(), lock = %lock.path.display(), "hulld listening");

    daemon.cap_consoles();
    let daemon = Arc::new(daemon);
    // Before any listener: no container starts unrecorded.
    daemon.follow_usage();
    // The tenants' listener and the call plane off loopback serve one
    // certificate, made (if it is Hull's own) for both their addresses.
    let tls_addresses: Vec<_> = listen
        .into_iter()
        .chain(func_listen.filter(funcs::needs_tls))
        .collect();
    let server_tls = if tls_addresses.is_empty() {
        None
    } else {
        Some(certs::server_tls(cert, &args.root, &tls_addresses)?)
    };
    if let (Some(addr), Some(cert)) = (listen, &server_tls) {
        tenants::listen(addr, cert, daemon.clone()).await?;
    }
    if let Some(addr) = metrics {
        serve_metrics(addr, daemon.clone()).await?;
    }
    hull_api::cron::spawn(daemon.clone());
    funcs::start(
        daemon.clone(),
        &args.funcs,
        func_listen,
        server_tls.as_ref(),
    )
    .await?;
    hull_api::service::spawn(daemon.clone());
    let resuming = daemon.clone();
    tokio::spawn(async move {
        if let Err(err) = resuming.reattach_containers().await {
            warn!(error = %hull_api::server::error_chain(&err), "cannot re-attach to the containers of the last hulld");
        }
        resuming.reconcile_usage();
        hull_api::func::resume_interrupted(&resuming).await;
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

/// Serves the daemon's metrics on `addr`, in the background.
async fn serve_metrics(addr: std::net::SocketAddr, daemon: Arc<Daemon>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on tcp://{addr}"))?;
    info!(address = %listener.local_addr()?, "serving metrics at /metrics");
    tokio::spawn(hull_api::metrics::serve(listener, move || {
        daemon.render_metrics()
    }));
    Ok(())
}

/// Logs to `file` (rotated) or to stderr.
fn init_logging(file: Option<&Path>) -> Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("HULL_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let log = logfile::RotatingLog::open(path, LOG_MAX_SIZE, LOG_MAX_FILES)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            builder
                .with_writer(std::sync::Mutex::new(log))
                .with_ansi(false)
                .init();
        }
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
}

/// Each VM holds descriptors (its sockets, disks, tap) and each client a
/// connection: the soft limit of 1024 runs out long before memory does.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            false
        } else {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        info!(
            open_files = limit.rlim_cur,
            "raised the limit of open files to its hard limit"
        );
    } else {
        warn!(error = %std::io::Error::last_os_error(), "cannot raise the limit of open files");
    }
}

/// Lets the socket's owner and, when the group `hull` exists, its members
/// use the API; nobody else.
fn restrict_socket(socket: &Path) -> Result<()> {
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set the mode of {}", socket.display()))?;
    let name = std::ffi::CString::new(SOCKET_GROUP).expect("no NUL in the group's name");
    // SAFETY: getgrnam with a valid C string; the result is read at once,
    // before any other call could reuse its static buffer.
    let gid = unsafe {
        let group = libc::getgrnam(name.as_ptr());
        (!group.is_null()).then(|| (*group).gr_gid)
    };
    if let Some(gid) = gid {
        std::os::unix::fs::lchown(socket, None, Some(gid)).with_context(|| {
            format!(
                "cannot give {} to the group {SOCKET_GROUP}",
                socket.display()
            )
        })?;
    }
    Ok(())
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
    // Made private from the start: the mode is set for good just below.
    // SAFETY: umask only swaps the process's file mode mask.
    let umask = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(socket);
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(umask) };
    let listener = bound.with_context(|| format!("cannot listen on {}", socket.display()))?;
    restrict_socket(socket)?;
    Ok(listener)
}
