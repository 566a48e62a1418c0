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

/// The feed of container events.
pub struct Events {
    live: broadcast::Sender<ContainerEvent>,
    past: Mutex<VecDeque<ContainerEvent>>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            live: broadcast::channel(HISTORY).0,
            past: Mutex::new(VecDeque::with_capacity(HISTORY)),
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
