//! What happens to containers, as `docker events` reports it: a live feed,
//! and the recent past for readers that ask from a point in time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::broadcast;

/// Events kept for readers that ask for the past (`--since`).
const HISTORY: usize = 1024;

/// One event about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    /// Docker's action: `create`, `start`, `die`, `kill`, `stop`, `destroy`…
    pub action: String,
    /// `name`, `image`, and per action `exitCode` or `signal`.
    pub attributes: BTreeMap<String, String>,
    pub time: SystemTime,
}

/// A pod's VM came up (or was taken back after a restart of hulld) or went
/// away. Not a docker event: a pod's VM is billed as one, whatever its
/// containers do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodVmEvent {
    pub pod: String,
    pub running: bool,
    pub time: SystemTime,
}

/// The feed of container events, and beside it that of pods' VMs.
pub struct Events {
    live: broadcast::Sender<ContainerEvent>,
    past: Mutex<VecDeque<ContainerEvent>>,
    pod_vms: broadcast::Sender<PodVmEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            live: broadcast::channel(HISTORY).0,
            past: Mutex::new(VecDeque::with_capacity(HISTORY)),
            pod_vms: broadcast::channel(HISTORY).0,
        }
    }
}

impl Events {
    pub fn emit(&self, event: ContainerEvent) {
        let mut past = self.past.lock().unwrap_or_else(|e| e.into_inner());
        if past.len() == HISTORY {
            past.pop_front();
        }
        past.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event once: in the
        // past it copied, or live.
        let _ = self.live.send(event);
    }

    pub(crate) fn emit_pod_vm(&self, pod: &str, running: bool) {
        let _ = self.pod_vms.send(PodVmEvent {
            pod: pod.to_owned(),
            running,
            time: SystemTime::now(),
        });
    }

    /// A receiver of the pod VMs' comings and goings from now on.
    pub fn subscribe_pod_vms(&self) -> broadcast::Receiver<PodVmEvent> {
        self.pod_vms.subscribe()
    }

    /// The kept events since `since`, and a receiver of those to come.
    pub fn subscribe(
        &self,
        since: Option<SystemTime>,
    ) -> (Vec<ContainerEvent>, broadcast::Receiver<ContainerEvent>) {
        let past = self.past.lock().unwrap_or_else(|e| e.into_inner());
        let earlier = match since {
            Some(since) => past.iter().filter(|e| e.time >= since).cloned().collect(),
            None => Vec::new(),
        };
        (earlier, self.live.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(action: &str, secs: u64) -> ContainerEvent {
        ContainerEvent {
            id: "c".into(),
            action: action.into(),
            attributes: BTreeMap::new(),
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn readers_get_the_past_they_ask_for_then_live_events() {
        let events = Events::default();
        events.emit(event("create", 10));
        events.emit(event("start", 20));
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(15);
        let (past, mut live) = events.subscribe(Some(since));
        assert_eq!(past, [event("start", 20)]);
        events.emit(event("die", 30));
        assert_eq!(live.recv().await.unwrap(), event("die", 30));
        let (none, _) = events.subscribe(None);
        assert!(none.is_empty());
    }
}
