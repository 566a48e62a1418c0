//! A container's filesystem as a tar: whole (`docker export`) or its
//! changes as one image layer (`docker commit`).
//!
//! A running container's agent reads it. A stopped container's files are
//! on its writable disk, which only a guest can read safely (the host
//! never mounts a filesystem a guest wrote): a VM of its own is started
//! for the read, with the container's image and writable disk and nothing
//! else (no network, no volumes, no process), and powered off after it.
//! The container cannot be started meanwhile. `docker cp` in and out of a
//! stopped container goes the same way.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use hull_proto::FilesystemView;
use hull_proto::{ContainerSpec, Request, RootfsSpec};
use hull_vm::{Hypervisor, Vm};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::exec::NEXT_STREAM;
use super::run::WRITABLE_SERIAL;
use super::supervise::power_off;
use super::{Container, ContainerError, Containers};
use crate::agent::AgentClient;
use crate::run::{new_container_id, unless_vm_dies, Runtime, ROOTFS_SERIAL};
use crate::start::{pooled_network, StartedVm, VmNeeds};

/// Chunks of a read that may wait for a slow client.
const READ_BACKLOG: usize = 16;
/// A guest that sends nothing, or a client that takes nothing, for this
/// long while a stopped container's files are read is given up on, so the
/// container can start again.
const IDLE_READ: Duration = Duration::from_secs(120);

pub(super) type Reading = Result<mpsc::Receiver<Bytes>, ContainerError>;
/// What a read found before its tar (a path's stat), and the tar.
pub(super) type Found<T> = Result<(T, mpsc::Receiver<Bytes>), ContainerError>;
pub(super) type ReadFuture<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Found<T>> + Send>>;

impl<H: Hypervisor> Containers<H> {
    /// A tar of the container's filesystem as `view` says, once its agent
    /// has started sending it. A tar that ends short means the read broke
    /// off in the guest.
    pub async fn read_filesystem(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        view: FilesystemView,
    ) -> Reading {
        // As docker's export and commit: the container's own files, not
        // its volumes'.
        let read = self.read_files(runtime, container, false, move |container, agent| {
            Box::pin(async move { Ok(((), container.read_with(&agent, view).await?)) })
        });
        Ok(read.await?.1)
    }

    /// The tar `read` starts from the container's agent: the running
    /// container's, or that of a VM started for a stopped one, powered off
    /// once the tar is read.
    pub(super) async fn read_files<T: Send + 'static>(
        self: &Arc<Self>,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        with_volumes: bool,
        read: impl FnOnce(Arc<Container>, AgentClient) -> ReadFuture<T> + Send + 'static,
    ) -> Found<T> {
        if let Ok(agent) = container.running_agent() {
            return read(container.clone(), agent).await;
        }
        let (ready, reading) = oneshot::channel();
        let (containers, runtime, container) = (self.clone(), runtime.clone(), container.clone());
        tokio::spawn(async move {
            containers
                .read_stopped(&runtime, &container, with_volumes, read, ready)
                .await;
        });
        reading.await.unwrap_or(Err(ContainerError::AgentSilent))
    }

    /// Runs `op` with the agent of a VM started for the stopped
    /// `container` (or its own, should it have started meanwhile), under
    /// the container's lock, and powers that VM off after: a write there
    /// is on the container's disk when this returns.
    pub(super) async fn with_stopped_files<T>(
        &self,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        op: impl AsyncFnOnce(&AgentClient) -> Result<T, ContainerError>,
    ) -> Result<T, ContainerError> {
        let _op = container.ops.lock().await;
        if let Ok(agent) = container.running_agent() {
            return op(&agent).await;
        }
        let StartedVm {
            vm, agent, run_dir, ..
        } = self.stopped_files_vm(runtime, container, true).await?;
        let out = op(&agent).await;
        power_off(&vm, &agent, &mut vm.exit()).await;
        drop(run_dir);
        debug!(container = %container.id, "the VM that held its files is off");
        out
    }

    /// Checks that a stopped `container`'s files may be read by a VM of
    /// their own, and starts it; called under the container's lock.
    async fn stopped_files_vm(
        &self,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        with_volumes: bool,
    ) -> Result<StartedVm<H::Vm>, ContainerError> {
        if container.state().running() {
            return Err(ContainerError::FilesBusy(container.id.clone()));
        }
        if let Some(membership) = &container.config().pod {
            return Err(ContainerError::PodMemberFiles {
                container: container.id.clone(),
                pod: membership.pod.clone(),
            });
        }
        // Its last run's VM may still be writing the disk back.
        container.vm_gone().await;
        self.files_vm(runtime, container, with_volumes).await
    }

    /// Reads a stopped container's files in a VM started for it, under
    /// the container's lock; tells `ready` once the tar flows (or why not)
    /// and powers the VM off when it ends.
    async fn read_stopped<T>(
        &self,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        with_volumes: bool,
        read: impl FnOnce(Arc<Container>, AgentClient) -> ReadFuture<T>,
        ready: oneshot::Sender<Found<T>>,
    ) {
        let _op = container.ops.lock().await;
        // It may have been started while the lock was awaited.
        if let Ok(agent) = container.running_agent() {
            let _ = ready.send(read(container.clone(), agent).await);
            return;
        }
        let started = match self
            .stopped_files_vm(runtime, container, with_volumes)
            .await
        {
            Ok(started) => started,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let StartedVm {
            vm, agent, run_dir, ..
        } = started;
        match read(container.clone(), agent.clone()).await {
            Err(err) => {
                let _ = ready.send(Err(err));
            }
            Ok((found, mut tar)) => {
                let (tx, rx) = mpsc::channel(READ_BACKLOG);
                if ready.send(Ok((found, rx))).is_ok() {
                    loop {
                        let chunk = match tokio::time::timeout(IDLE_READ, tar.recv()).await {
                            Ok(Some(chunk)) => chunk,
                            Ok(None) => break,
                            Err(_) => {
                                warn!(container = %container.id, "the guest reading a stopped container's files went silent");
                                break;
                            }
                        };
                        // Nor may a client that stopped reading hold the
                        // container's lock for ever.
                        match tokio::time::timeout(IDLE_READ, tx.send(chunk)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break,
                            Err(_) => {
                                warn!(container = %container.id, "the client reading a stopped container's files went silent");
                                break;
                            }
                        }
                    }
                }
            }
        }
        power_off(&vm, &agent, &mut vm.exit()).await;
        drop(run_dir);
        debug!(container = %container.id, "the VM that read its files is off");
    }

    /// A VM with the container's image and writable disk (and, `with_volumes`,
    /// its volumes at their targets), the container's layers mounted in it
    /// and nothing run.
    async fn files_vm(
        &self,
        runtime: &Arc<Runtime<H>>,
        container: &Arc<Container>,
        with_volumes: bool,
    ) -> Result<StartedVm<H::Vm>, ContainerError> {
        let config = container.config();
        let (mut disks, _) = self.container_disks(container).await?;
        let (mut mounts, binds) = if with_volumes {
            self.volume_mounts(container, &mut disks)?
        } else {
            Default::default()
        };
        // Its volumes were filled at its first run: a copy changes nothing else.
        for mount in &mut mounts {
            mount.copy_up = false;
        }
        let needs = VmNeeds {
            size: None,
            network: pooled_network(),
            prime: None,
        };
        let name = format!("files-{}", &new_container_id()[..16]);
        let started = runtime.vms.start_with(&name, disks, false, needs).await?;
        let create = Request::CreateContainer(ContainerSpec {
            id: container.id.clone(),
            hostname: config.hostname.clone(),
            rootfs: RootfsSpec {
                serial: ROOTFS_SERIAL.into(),
                fs_type: "erofs".into(),
            },
            writable: config.persistent.then(|| RootfsSpec {
                serial: WRITABLE_SERIAL.into(),
                fs_type: "ext4".into(),
            }),
            mounts,
            host_etc_files: Vec::new(),
        });
        let vm = &started.vm;
        let bound = super::volumes::bind_into_share(&started.run_dir.path, &container.id, &binds);
        if let Err(err) = bound {
            vm.kill();
            return Err(err);
        }
        if let Err(err) = unless_vm_dies(vm, vm.exit(), started.agent.request_done(&create)).await {
            vm.kill();
            return Err(err.into());
        }
        Ok(started)
    }
}

impl Container {
    /// Asks `agent` for the tar; its chunks come as the client takes them.
    async fn read_with(&self, agent: &AgentClient, view: FilesystemView) -> Reading {
        let stream = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        // Registered first: the agent sends right after its answer.
        let mut output = agent.open_output(stream);
        let request = Request::ReadFilesystem {
            container: self.id.clone(),
            stream,
            view,
        };
        agent
            .request_done(&request)
            .await
            .map_err(|err| match err {
                crate::agent::AgentError::Disconnected => {
                    ContainerError::FilesBusy(self.id.clone())
                }
                other => other.into(),
            })?;
        let (tx, rx) = mpsc::channel(READ_BACKLOG);
        tokio::spawn(async move {
            let mut client_gone = false;
            while let Some(chunk) = output.recv().await {
                // A departed client must not leave the agent blocked on its
                // window: keep taking (and crediting) the rest.
                if !client_gone && tx.send(chunk).await.is_err() {
                    client_gone = true;
                }
            }
        });
        Ok(rx)
    }
}
