//! `hull run`: start a container in a VM and stay attached until it exits.
//! `--rm` in the foreground takes Hull's own run stream (`POST /hull/run`),
//! which never records the container; every other run goes through docker's
//! endpoints (see `create.rs`).

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use hull_api::run_stream::{STDERR, STDIN, STDOUT};
use hull_api::types::ulimit::Ulimit;
use hull_api::types::{RunControlMessage, RunEvent, RunSpec};
use hull_api::Client;
use hull_proto::{Frame, FrameDecoder, FrameKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;

use crate::{stdio, terminal};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Run in the background and print the container's id.
    #[arg(short, long)]
    pub(crate) detach: bool,
    /// Name the container.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// When to start the container again: no, always, unless-stopped, on-failure[:N].
    #[arg(long, value_name = "POLICY")]
    pub(crate) restart: Option<String>,
    /// Set a label (KEY=VALUE, or KEY).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub(crate) label: Vec<String>,
    /// Put the container in a security group (repeat for more); it must be
    /// on a bridge network.
    #[arg(long = "sg", value_name = "NAME")]
    pub(crate) sg: Vec<String>,
    /// The container's host name.
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Keep stdin open and send it to the process.
    #[arg(short, long)]
    pub(crate) interactive: bool,
    /// Give the process a terminal.
    #[arg(short, long)]
    pub(crate) tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to copy it from here).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub(crate) workdir: Option<String>,
    /// User to run as: name, uid, uid:gid or name:group.
    #[arg(short, long)]
    pub(crate) user: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// Mount a volume: NAME:/path[:ro], /host/dir:/path[:ro], or /path for
    /// a new anonymous volume.
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub(crate) volume: Vec<String>,
    /// Publish a container port on the host: [ip:][hostPort:]containerPort[/udp].
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub(crate) publish: Vec<String>,
    /// The network to join: bridge (the default), none, or one made with
    /// `hull network create`. Given again, the container joins that network
    /// too (up to three).
    #[arg(long, alias = "net")]
    pub(crate) network: Vec<String>,
    /// Another name the container answers to on its (first) network.
    #[arg(long = "network-alias", alias = "net-alias", value_name = "ALIAS")]
    pub(crate) network_alias: Vec<String>,
    /// The container's IPv4 address on its network.
    #[arg(long)]
    pub(crate) ip: Option<String>,
    /// Add a line to /etc/hosts: NAME:IP, or NAME:host-gateway for the host.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub(crate) add_host: Vec<String>,
    /// Link to another container: NAME[:ALIAS] (docker's legacy links).
    #[arg(long = "link", value_name = "NAME[:ALIAS]")]
    pub(crate) link: Vec<String>,
    /// Mount the volumes of another container: NAME[:ro|:rw].
    #[arg(long = "volumes-from", value_name = "NAME[:MODE]")]
    pub(crate) volumes_from: Vec<String>,
    /// The VM's size: S1 (1 vCPU, 64 MiB) … L3 (8 vCPUs, 16 GiB).
    #[arg(long, conflicts_with_all = ["cpus", "memory"])]
    pub(crate) size: Option<String>,
    /// CPUs the VM needs; it gets the smallest size that holds them.
    #[arg(long)]
    pub(crate) cpus: Option<f64>,
    /// Memory the VM needs (512m, 1g, bytes); it gets the smallest size that holds it.
    #[arg(short, long)]
    pub(crate) memory: Option<String>,
    /// Set a resource limit of the process: TYPE=SOFT[:HARD], as
    /// nofile=1024:2048 (-1 is no limit).
    #[arg(long, value_name = "TYPE=SOFT[:HARD]", value_parser = Ulimit::parse)]
    pub(crate) ulimit: Vec<Ulimit>,
    /// The logging driver: json-file (the default) or local, both written
    /// as docker's json-file.
    #[arg(long = "log-driver", value_name = "DRIVER")]
    pub(crate) log_driver: Option<String>,
    /// A log option: max-size=SIZE (20m when not given) or max-file=N (5).
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub(crate) log_opt: Vec<String>,
    #[command(flatten)]
    pub(crate) health: crate::health::HealthArgs,
    /// Image to run.
    pub(crate) image: String,
    /// Command and arguments; the image's command when omitted.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// `-e` entries; like docker, a bare name copies this shell's value, or is dropped.
pub(crate) fn environment(entries: &[String]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry.clone())
            } else {
                std::env::var(entry)
                    .ok()
                    .map(|value| format!("{entry}={value}"))
            }
        })
        .collect()
}

fn spec(args: &RunArgs) -> Result<RunSpec> {
    let mut spec = RunSpec {
        image: args.image.clone(),
        stdin: args.interactive,
        tty_size: if args.tty { terminal::size(1) } else { None },
        ..Default::default()
    };
    spec.process.cmd = args.command.clone();
    spec.process.entrypoint = args.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }
    });
    spec.process.env = environment(&args.env);
    spec.process.workdir = args.workdir.clone();
    spec.process.user = args.user.clone();
    spec.process.tty = args.tty;
    spec.process.rlimits = args
        .ulimit
        .iter()
        .map(Ulimit::to_rlimit)
        .collect::<Result<_, _>>()?;
    Ok(spec)
}

pub async fn run(client: &Client, args: RunArgs) -> Result<i32> {
    if args.rm && args.restart.as_deref().is_some_and(|policy| policy != "no") {
        bail!("Conflicting options: --restart and --rm");
    }
    if let Err(err) = crate::pull::ensure_image(client, &args.image).await {
        // The pull failed in hulld, as docker's daemon reports it.
        eprintln!("hull: Error response from daemon: {err:#}");
        return Ok(125);
    }
    // Hull's run stream takes the pools' VMs, on the default network,
    // publishing nothing; a cloud's tenants create their containers as
    // docker's clients do, so each is theirs, named, sized and counted.
    let pooled = !client.is_remote()
        && args.publish.is_empty()
        && args.volume.is_empty()
        && args.add_host.is_empty()
        && args.link.is_empty()
        && args.volumes_from.is_empty()
        && args.network.is_empty()
        && args.log_opt.is_empty()
        && args.log_driver.is_none()
        && !args.health.given();
    if args.rm && !args.detach && pooled {
        return run_streamed(client, args).await;
    }
    crate::create::run(client, args).await
}

/// Runs over Hull's own stream, which carries stdio, signals and the exit.
async fn run_streamed(client: &Client, args: RunArgs) -> Result<i32> {
    stdio::check_tty_input(args.tty, args.interactive)?;
    let mut spec = spec(&args)?;
    spec.size = crate::create::vm_size(&args)?;
    spec.limits = crate::create::limits(&args)?;
    let stream = client.run(&spec).await?;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let _raw = stdio::raw_mode(args.tty, args.interactive);

    let (frames, mut outgoing) = mpsc::channel::<Frame>(16);
    tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame.encode()).await.is_err() {
                return;
            }
        }
    });
    if args.interactive {
        tokio::spawn(send_stdin(frames.clone()));
    }
    if args.tty {
        let winch = signal(SignalKind::window_change())?;
        tokio::spawn(send_resizes(winch, frames.clone()));
    } else {
        for signal_number in stdio::FORWARDED_SIGNALS {
            // Registered here, not in the task, so no signal slips past
            // between this point and the task's first poll.
            let signals = signal(SignalKind::from_raw(signal_number))?;
            tokio::spawn(forward_signal(signal_number, signals, frames.clone()));
        }
    }

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let mut decoder = FrameDecoder::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = decoder
            .next_frame()
            .context("hulld sent a malformed frame")?
        {
            match (frame.kind, frame.channel) {
                (FrameKind::Data, STDOUT) => {
                    stdout.write_all(&frame.payload).await?;
                    stdout.flush().await?;
                }
                (FrameKind::Data, STDERR) => {
                    stderr.write_all(&frame.payload).await?;
                    stderr.flush().await?;
                }
                (FrameKind::Event, _) => {
                    return match frame.parse::<RunEvent>()? {
                        RunEvent::Exited { code } => Ok(code),
                        RunEvent::Failed { message, code } => {
                            drop(_raw);
                            eprintln!("hull: {message}");
                            Ok(code)
                        }
                    };
                }
                _ => {}
            }
        }
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            bail!("lost the connection to hulld before the container exited");
        }
        decoder.extend(&buffer[..n]);
    }
}

async fn send_stdin(frames: mpsc::Sender<Frame>) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; hull_proto::MAX_DATA_CHUNK];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = Bytes::copy_from_slice(&buffer[..n]);
                if frames.send(Frame::data(STDIN, &chunk)).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = frames.send(Frame::eof(STDIN)).await;
}

async fn send_resizes(mut winch: Signal, frames: mpsc::Sender<Frame>) {
    while winch.recv().await.is_some() {
        if let Some((rows, cols)) = terminal::size(1) {
            let message = RunControlMessage::Resize { rows, cols };
            if frames
                .send(Frame::json(FrameKind::Event, 0, &message))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

async fn forward_signal(signal_number: i32, mut signals: Signal, frames: mpsc::Sender<Frame>) {
    while signals.recv().await.is_some() {
        let message = RunControlMessage::Signal {
            signal: signal_number,
        };
        if frames
            .send(Frame::json(FrameKind::Event, 0, &message))
            .await
            .is_err()
        {
            return;
        }
    }
}
