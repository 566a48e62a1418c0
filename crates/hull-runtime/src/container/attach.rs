//! Attaching to a container: its live output fanned out to every attached
//! client, and one stdin shared by all of them, buffered from before the
//! process starts (`docker run -i` attaches first, then starts).

use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::logs::LogStream;

/// Chunks an attached client may fall behind by before it slows the process.
const ATTACH_BACKLOG: usize = 64;

/// What an attached client receives.
pub type OutputChunk = (LogStream, Bytes);

struct Subscriber {
    tx: mpsc::Sender<OutputChunk>,
    stdout: bool,
    stderr: bool,
}

/// The clients attached to a container's output.
#[derive(Default)]
pub(crate) struct OutputHub {
    subscribers: Mutex<Vec<Subscriber>>,
}

impl OutputHub {
    /// A receiver of the output of the current run (or the next one, when
    /// the container is not running); it ends when that run's output ends.
    pub fn subscribe(&self, stdout: bool, stderr: bool) -> mpsc::Receiver<OutputChunk> {
        let (tx, rx) = mpsc::channel(ATTACH_BACKLOG);
        self.lock().push(Subscriber { tx, stdout, stderr });
        rx
    }

    /// Sends to every subscriber that wants `stream`, waiting for slow ones
    /// as docker does, and forgets those that went away.
    pub async fn publish(&self, stream: LogStream, bytes: &Bytes) {
        let targets: Vec<mpsc::Sender<OutputChunk>> = self
            .lock()
            .iter()
            .filter(|s| match stream {
                LogStream::Stdout => s.stdout,
                LogStream::Stderr => s.stderr,
            })
            .map(|s| s.tx.clone())
            .collect();
        for tx in targets {
            let _ = tx.send((stream, bytes.clone())).await;
        }
        self.lock().retain(|s| !s.tx.is_closed());
    }

    /// Ends every attachment: the run's output is over.
    pub fn close(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Input for a container's stdin from attached clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinMessage {
    Data(Bytes),
    /// The process gets EOF.
    Close,
}

/// A container's stdin: writers are attached clients, the reader is the
/// running process (handed from run to run).
pub(crate) struct StdinPipe {
    pub tx: mpsc::Sender<StdinMessage>,
    pub rx: tokio::sync::Mutex<mpsc::Receiver<StdinMessage>>,
}

impl StdinPipe {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(64);
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_their_streams_until_the_run_ends() {
        let hub = OutputHub::default();
        let mut both = hub.subscribe(true, true);
        let mut errors = hub.subscribe(false, true);
        hub.publish(LogStream::Stdout, &Bytes::from_static(b"out"))
            .await;
        hub.publish(LogStream::Stderr, &Bytes::from_static(b"err"))
            .await;
        hub.close();
        assert_eq!(both.recv().await.unwrap().1, "out");
        assert_eq!(both.recv().await.unwrap().0, LogStream::Stderr);
        assert!(both.recv().await.is_none());
        assert_eq!(errors.recv().await.unwrap().1, "err");
        assert!(errors.recv().await.is_none());
    }

    #[tokio::test]
    async fn departed_subscribers_are_forgotten() {
        let hub = OutputHub::default();
        drop(hub.subscribe(true, true));
        hub.publish(LogStream::Stdout, &Bytes::from_static(b"x"))
            .await;
        assert!(hub.lock().is_empty());
    }
}
