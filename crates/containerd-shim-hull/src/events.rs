//! Task events published to containerd: it learns of exits from them (and
//! CRI of everything else).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::topics;
use containerd_shim::protos::types::mount::Mount;
use containerd_shim::publisher::RemotePublisher;
use tracing::warn;

use crate::state::{Exited, Stdio};

/// Something containerd hears of.
#[derive(Debug, Clone)]
pub enum Event {
    Create {
        container: String,
        bundle: PathBuf,
        rootfs: Vec<Mount>,
        stdio: Stdio,
    },
    Start {
        container: String,
        pid: u32,
    },
    ExecAdded {
        container: String,
        exec_id: String,
    },
    ExecStarted {
        container: String,
        exec_id: String,
        pid: u32,
    },
    Exit {
        container: String,
        exec_id: String,
        pid: u32,
        exited: Exited,
    },
    Delete {
        container: String,
        pid: u32,
        exited: Option<Exited>,
    },
    Paused {
        container: String,
    },
    Resumed {
        container: String,
    },
}

impl Event {
    fn into_message(self) -> (&'static str, Box<dyn MessageDyn>) {
        match self {
            Self::Create {
                container,
                bundle,
                rootfs,
                stdio,
            } => (
                topics::TASK_CREATE_EVENT_TOPIC,
                Box::new(TaskCreate {
                    container_id: container,
                    bundle: bundle.display().to_string(),
                    rootfs,
                    io: Some(TaskIO {
                        stdin: stdio.stdin,
                        stdout: stdio.stdout,
                        stderr: stdio.stderr,
                        terminal: stdio.terminal,
                        ..Default::default()
                    })
                    .into(),
                    ..Default::default()
                }),
            ),
            Self::Start { container, pid } => (
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: container,
                    pid,
                    ..Default::default()
                }),
            ),
            Self::ExecAdded { container, exec_id } => (
                topics::TASK_EXEC_ADDED_EVENT_TOPIC,
                Box::new(TaskExecAdded {
                    container_id: container,
                    exec_id,
                    ..Default::default()
                }),
            ),
            Self::ExecStarted {
                container,
                exec_id,
                pid,
            } => (
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: container,
                    exec_id,
                    pid,
                    ..Default::default()
                }),
            ),
            Self::Exit {
                container,
                exec_id,
                pid,
                exited,
            } => (
                topics::TASK_EXIT_EVENT_TOPIC,
                Box::new(TaskExit {
                    // containerd names the init process by its container.
                    id: if exec_id.is_empty() {
                        container.clone()
                    } else {
                        exec_id
                    },
                    container_id: container,
                    pid,
                    exit_status: exited.status,
                    exited_at: Some(timestamp(exited.at)).into(),
                    ..Default::default()
                }),
            ),
            Self::Delete {
                container,
                pid,
                exited,
            } => (
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    id: container.clone(),
                    container_id: container,
                    pid,
                    exit_status: exited.map_or(0, |e| e.status),
                    exited_at: exited.map(|e| timestamp(e.at)).into(),
                    ..Default::default()
                }),
            ),
            Self::Paused { container } => (
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: container,
                    ..Default::default()
                }),
            ),
            Self::Resumed { container } => (
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: container,
                    ..Default::default()
                }),
            ),
        }
    }
}

/// Publishes events in the order they happen, off the caller's path.
#[derive(Clone)]
pub struct Events {
    queue: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl Events {
    pub fn new(publisher: RemotePublisher, namespace: String) -> Self {
        let (queue, mut events) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let publisher = Arc::new(publisher);
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let (topic, message) = event.into_message();
                let context = containerd_shim::Context::default();
                if let Err(err) = publisher.publish(context, topic, &namespace, message).await {
                    warn!(topic, error = %err, "cannot publish an event to containerd");
                }
            }
        });
        Self { queue }
    }

    pub fn publish(&self, event: Event) {
        let _ = self.queue.send(event);
    }
}

/// A protobuf timestamp of `at`.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_init_process_exits_under_its_containers_id() {
        let exited = Exited {
            status: 137,
            at: UNIX_EPOCH + Duration::from_millis(1500),
        };
        let event = Event::Exit {
            container: "c1".into(),
            exec_id: String::new(),
            pid: 9,
            exited,
        };
        let (topic, message) = event.into_message();
        assert_eq!(topic, "/tasks/exit");
        let exit = message
            .downcast_box::<TaskExit>()
            .unwrap_or_else(|_| panic!("a TaskExit"));
        assert_eq!(exit.id, "c1");
        assert_eq!(exit.exit_status, 137);
        assert_eq!(exit.exited_at.seconds, 1);
        assert_eq!(exit.exited_at.nanos, 500_000_000);
    }
}
