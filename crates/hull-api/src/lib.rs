//! Hull's HTTP API (the Unix socket, and TLS for tenants): the Docker Engine API subset that Hull
//! serves, Hull's own endpoints, the daemon behind them and a client.

pub mod client;
pub mod cron;
pub mod daemon;
pub mod func;
pub mod in_use;
pub mod metering;
pub mod metrics;
pub mod server;
pub mod service;
pub mod stdcopy;
pub mod tls;
pub mod types;
pub mod units;

pub use client::{Client, ClientError, CommitOptions, ProgressStream};
pub use daemon::{CloudConfig, Daemon, DaemonConfig};
pub use hull_image::registry::auth::{AuthFile, Credentials};
pub use hull_image::Reference;
pub use hull_runtime::pod::{parse as parse_pod_file, PodSpec};
pub use hull_runtime::size;
pub use hull_runtime::AdmissionConfig;
pub use hyper::Method;
pub use types::{RunControlMessage, RunEvent, RunSpec};

/// The Docker Engine API version Hull answers with.
pub const DOCKER_API_VERSION: &str = "1.43";

/// Upgrade protocol name of Hull's run stream.
pub const RUN_UPGRADE: &str = "hull-run";

/// Stream ids on the run stream between the CLI and hulld.
pub mod run_stream {
    pub const STDIN: u32 = 0;
    pub const STDOUT: u32 = 1;
    pub const STDERR: u32 = 2;
}

/// Where hulld listens unless told otherwise.
pub const DEFAULT_HOST: &str = "unix:///run/hull/hull.sock";

/// The socket path of a `unix://` host address (a bare path is accepted too).
pub fn socket_path(host: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(host.strip_prefix("unix://").unwrap_or(host))
}
