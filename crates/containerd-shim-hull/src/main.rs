//! `containerd-shim-hull-v2`: started by containerd, never by hand.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;

use containerd_shim_hull::config::ShimConfig;
use containerd_shim_hull::sandbox;
use containerd_shim_hull::shim::{library_config, HullShim, RUNTIME_ID};
use hull_runtime::size::VmSize;
use tracing_subscriber::EnvFilter;

/// The serving shim logs to the `log` FIFO containerd reads in the bundle
/// (its stderr goes nowhere); `start` and `delete` to stderr, which
/// containerd shows when they fail. Writes that would block are dropped:
/// a containerd that stopped reading must not stall the shim.
fn init_logging() {
    let serving = !std::env::args().any(|a| a == "start" || a == "delete");
    let filter = EnvFilter::try_from_env("HULL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let fifo = serving
        .then(|| {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open("log")
                .ok()
        })
        .flatten();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match fifo {
        Some(fifo) => builder.with_writer(std::sync::Mutex::new(fifo)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().nth(1).as_deref() == Some(sandbox::BUILD_TEMPLATE) {
        std::process::exit(build_template().await);
    }
    init_logging();
    containerd_shim::asynchronous::run::<HullShim>(RUNTIME_ID, Some(library_config())).await;
}

/// Started by a shim whose sandbox booted cold, in the background, with
/// the size (`1x256`) of the template to build.
async fn build_template() -> i32 {
    let Some(size) = std::env::args()
        .nth(2)
        .as_deref()
        .and_then(VmSize::from_token)
    else {
        eprintln!("usage: containerd-shim-hull-v2 build-template VCPUSxMIB");
        return 2;
    };
    let built = match ShimConfig::load() {
        Ok(config) => sandbox::build_template(&config, size).await,
        Err(e) => Err(e.into()),
    };
    match built {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-hull-v2: {}", hull_runtime::error_chain(&e));
            1
        }
    }
}
