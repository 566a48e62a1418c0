//! The shim's process: `start` finds (or spawns) the shim of the
//! container's sandbox, `delete` cleans up after a dead one, and the server
//! serves the Task API until its sandbox is gone.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_str_to_file;
use containerd_shim::{spawn, Config, DeleteResponse, Error, ExitSignal, Flags, Shim, StartOpts};
use tracing::warn;

use crate::config::ShimConfig;
use crate::events::{timestamp, Events};
use crate::rootfs;
use crate::service::Service;
use crate::spec::{grouping, ContainerConfig};
use crate::task::HullTask;

/// The runtime name containerd knows the shim by.
pub const RUNTIME_ID: &str = "io.containerd.hull.v2";

/// The options the shim library runs with: Hull reaps its own children
/// (QEMU is waited for by the VM backend, which a process-wide reaper
/// would rob of the status) and logs with `tracing`.
pub fn library_config() -> Config {
    Config {
        no_setup_logger: true,
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    }
}

pub struct HullShim {
    namespace: String,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for HullShim {
    type T = HullTask;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            namespace: args.namespace.clone(),
            exit: Arc::default(),
        }
    }

    /// One shim per sandbox: containers naming the same CRI sandbox get
    /// the address of the shim already serving it.
    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // containerd starts the shim in the container's bundle.
        let key = match ContainerConfig::load(Path::new(".")) {
            Ok(config) => config.grouping(&opts.id),
            Err(_) => grouping(&Default::default(), &opts.id),
        };
        let address = spawn(opts, &key, Vec::new()).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    /// containerd's clean-up of a shim that died: the bundle's rootfs is
    /// unmounted and its image removed; the process died with the VM.
    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().map_err(|e| Error::Other(e.to_string()))?;
        if let Err(err) = rootfs::unmount(&bundle.join("rootfs")) {
            warn!(error = %err, "cannot unmount a dead shim's rootfs");
        }
        let _ = std::fs::remove_file(rootfs::image_path(&bundle));
        Ok(DeleteResponse {
            // As runc's shim reports a container it lost: killed.
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(timestamp(SystemTime::now())).into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> HullTask {
        let config = match ShimConfig::load() {
            Ok(config) => config,
            Err(err) => {
                // Every create will fail to boot with the defaults' error
                // too; say why here as well.
                warn!(error = %hull_runtime::error_chain(&err), "using the default shim configuration");
                ShimConfig::default()
            }
        };
        let events = Events::new(publisher, self.namespace.clone());
        let service = Service::new(config, self.namespace.clone(), events);
        HullTask::new(Arc::new(service), self.exit.clone())
    }
}
