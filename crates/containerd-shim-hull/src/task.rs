//! containerd's Task API (`containerd.task.v2.Task` over ttrpc) in terms of
//! [`Service`]: request and response types in, errors as ttrpc statuses.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use hull_proto::GuestStats;
use tracing::warn;

use crate::events::timestamp;
use crate::service::{CreateRequest, Service, ServiceError};
use crate::state::Stdio;

/// The type containerd decodes task metrics as (`ctr task metrics`, CRI).
const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

pub struct HullTask {
    service: Arc<Service>,
    exit: Arc<ExitSignal>,
}

impl HullTask {
    pub fn new(service: Arc<Service>, exit: Arc<ExitSignal>) -> Self {
        Self { service, exit }
    }
}

/// containerd's errdefs follow the gRPC codes: NotFound for a finished
/// process lets it carry on deleting.
fn status(err: ServiceError) -> ttrpc::Error {
    let code = match &err {
        ServiceError::NoContainer(_)
        | ServiceError::NoProcess { .. }
        | ServiceError::Finished(_) => Code::NOT_FOUND,
        ServiceError::ContainerExists(_) | ServiceError::ProcessExists { .. } => {
            Code::ALREADY_EXISTS
        }
        ServiceError::ReservedExecId(_) | ServiceError::Spec(_) | ServiceError::Stdio(_) => {
            Code::INVALID_ARGUMENT
        }
        ServiceError::AlreadyStarted(_)
        | ServiceError::StillRunning(_)
        | ServiceError::NoSandbox => Code::FAILED_PRECONDITION,
        ServiceError::Update { .. } | ServiceError::Resources(_) => Code::INVALID_ARGUMENT,
        _ => Code::UNKNOWN,
    };
    let message = hull_runtime::error_chain(&err);
    if code == Code::UNKNOWN {
        warn!(error = %message, "request failed");
    }
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn metrics(stats: &GuestStats) -> Metrics {
    Metrics {
        cpu: Some(CPUStat {
            usage: Some(CPUUsage {
                total: stats.cpu_total_ns,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(MemoryStat {
            usage: Some(MemoryEntry {
                usage: stats.memory_used_bytes,
                limit: stats.memory_limit_bytes,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        pids: Some(PidsStat {
            current: u64::from(stats.pids),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

fn terminal_size(n: u32) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

#[async_trait]
impl Task for HullTask {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let request = CreateRequest {
            id: req.id,
            bundle: req.bundle.into(),
            rootfs: req.rootfs,
            stdio: Stdio {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
        };
        self.service.create(request).await.map_err(status)?;
        // The process has no pid until it starts in the guest.
        Ok(CreateTaskResponse::default())
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let pid = self
            .service
            .start(&req.id, &req.exec_id)
            .await
            .map_err(status)?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let state = self.service.state(&req.id, &req.exec_id).map_err(status)?;
        Ok(StateResponse {
            id: req.id,
            exec_id: req.exec_id,
            bundle: state.bundle.display().to_string(),
            pid: state.pid,
            status: state.status.into(),
            stdin: state.stdio.stdin,
            stdout: state.stdio.stdout,
            stderr: state.stdio.stderr,
            terminal: state.stdio.terminal,
            exit_status: state.exited.map_or(0, |e| e.status),
            exited_at: state.exited.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let processes = self.service.pids(&req.id).await.map_err(status)?;
        Ok(PidsResponse {
            processes: processes
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.service
            .set_paused(&req.id, true)
            .await
            .map_err(status)?;
        Ok(Empty::default())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.service
            .set_paused(&req.id, false)
            .await
            .map_err(status)?;
        Ok(Empty::default())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        // `all` needs nothing more: the init process is its PID
        // namespace's, and the others die with it.
        self.service
            .kill(&req.id, &req.exec_id, req.signal)
            .await
            .map_err(status)?;
        Ok(Empty::default())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let stdio = Stdio {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let spec = req.spec.as_ref().map(|s| s.value.as_slice()).unwrap_or(&[]);
        self.service
            .exec(&req.id, &req.exec_id, spec, stdio)
            .map_err(status)?;
        Ok(Empty::default())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let (rows, cols) = (terminal_size(req.height), terminal_size(req.width));
        self.service
            .resize(&req.id, &req.exec_id, rows, cols)
            .await
            .map_err(status)?;
        Ok(Empty::default())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        if req.stdin {
            self.service
                .close_input(&req.id, &req.exec_id)
                .map_err(status)?;
        }
        Ok(Empty::default())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let resources = req
            .resources
            .as_ref()
            .map(|r| r.value.as_slice())
            .unwrap_or(b"{}");
        self.service
            .update(&req.id, resources)
            .await
            .map_err(status)?;
        Ok(Empty::default())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let exited = self
            .service
            .wait(&req.id, &req.exec_id)
            .await
            .map_err(status)?;
        Ok(WaitResponse {
            exit_status: exited.status,
            exited_at: Some(timestamp(exited.at)).into(),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let stats = self.service.stats(&req.id).await.map_err(status)?;
        let value = metrics(&stats)
            .write_to_bytes()
            .map_err(|err| ttrpc::Error::Others(err.to_string()))?;
        Ok(StatsResponse {
            stats: Some(Any {
                type_url: METRICS_TYPE.into(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let (pid, exited) = self
            .service
            .delete(&req.id, &req.exec_id)
            .await
            .map_err(status)?;
        Ok(DeleteResponse {
            pid,
            exit_status: exited.map_or(0, |e| e.status),
            exited_at: exited.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.service.init_pid(&req.id),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        // containerd asks after deleting each task; the VM and the shim
        // stay while the sandbox has containers.
        if self.service.shutdown().await {
            self.exit.signal();
        }
        Ok(Empty::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_figures_become_cgroup_metrics() {
        let stats = GuestStats {
            cpu_total_ns: 5,
            system_ns: 10,
            online_cpus: 1,
            memory_used_bytes: 100,
            memory_limit_bytes: 1000,
            pids: 3,
            networks: Default::default(),
        };
        let m = metrics(&stats);
        assert_eq!(m.cpu.usage.total, 5);
        assert_eq!(m.memory.usage.usage, 100);
        assert_eq!(m.memory.usage.limit, 1000);
        assert_eq!(m.pids.current, 3);
    }

    #[test]
    fn finished_processes_are_not_found_for_containerd() {
        let err = status(ServiceError::Finished("c1".into()));
        let ttrpc::Error::RpcStatus(s) = err else {
            panic!("a status")
        };
        assert_eq!(s.code(), Code::NOT_FOUND);
        assert_eq!(s.message(), "process c1 already finished");
    }
}
