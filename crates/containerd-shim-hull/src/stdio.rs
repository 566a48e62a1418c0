//! A process's stdio between the FIFOs containerd hands over and the agent's
//! streams. FIFOs are opened and used on blocking threads: opening one
//! waits for its other end, which containerd's client may open later.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hull_runtime::agent::{InputStream, OutputStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tracing::debug;

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("unsupported stdio destination {0:?}: only FIFO paths and file:// URIs are")]
    Unsupported(String),
}

/// Where one stream of a process goes: a FIFO containerd made, or (with
/// `ctr run --log-uri file://…`) a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pipe(PathBuf),
    File(PathBuf),
}

impl Target {
    /// `None` for an empty path: containerd wants no such stream.
    pub fn parse(uri: &str) -> Result<Option<Self>, StdioError> {
        if uri.is_empty() {
            return Ok(None);
        }
        if let Some(path) = uri.strip_prefix("file://") {
            return Ok(Some(Self::File(path.into())));
        }
        if uri.starts_with('/') {
            return Ok(Some(Self::Pipe(uri.into())));
        }
        Err(StdioError::Unsupported(uri.to_owned()))
    }

    fn open_for_writing(&self) -> io::Result<File> {
        match self {
            // Read and write, as a runc shim holds both ends: the open does
            // not wait for a reader, and a reader that leaves (`ctr run -d`
            // exits) costs no EPIPE; the pipe fills and the writer waits.
            Self::Pipe(path) => OpenOptions::new().read(true).write(true).open(path),
            Self::File(path) => OpenOptions::new().create(true).append(true).open(path),
        }
    }
}

/// Copies an agent stream to `target` until the agent's `Eof`; the handle
/// ends once the last byte is written (or could not be).
pub fn pump_output(mut output: OutputStream, target: Option<Target>) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        while let Some(chunk) = output.recv().await {
            // Without a target (or once it failed) output is drained and
            // dropped, so the guest process never stalls on a full window.
            let _ = tx.send(chunk).await;
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut file = target.and_then(|target| match target.open_for_writing() {
            Ok(file) => Some(file),
            Err(err) => {
                debug!(?target, error = %err, "cannot open an output");
                None
            }
        });
        while let Some(chunk) = rx.blocking_recv() {
            if let Some(f) = &mut file {
                if f.write_all(&chunk).is_err() {
                    file = None;
                }
            }
        }
    })
}

/// Ends a process's input early (containerd's `CloseIO`); it also ends by
/// itself when the FIFO's writer closes it.
#[derive(Clone, Default)]
pub struct CloseInput(Arc<Notify>);

impl CloseInput {
    pub fn close(&self) {
        self.0.notify_one();
    }
}

/// Copies the FIFO at `path` to the agent's input stream until the FIFO's
/// writer closes it or [`CloseInput::close`], then sends `Eof`.
pub fn pump_input(input: InputStream, path: PathBuf, close: CloseInput) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        // Blocks until a writer opens the FIFO; a shim without one keeps a
        // thread parked, as a runc shim keeps a goroutine.
        let Ok(mut fifo) = File::open(&path) else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match fifo.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => {
                        if input.write(&chunk).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
                () = close.0.notified() => {
                    // What was read already still goes in.
                    while let Ok(chunk) = rx.try_recv() {
                        if input.write(&chunk).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
            }
        }
        let _ = input.close().await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdio_destinations_parse() {
        assert_eq!(Target::parse("").unwrap(), None);
        assert_eq!(
            Target::parse("/run/containerd/fifo/1/t-stdout").unwrap(),
            Some(Target::Pipe("/run/containerd/fifo/1/t-stdout".into()))
        );
        assert_eq!(
            Target::parse("file:///var/log/t.log").unwrap(),
            Some(Target::File("/var/log/t.log".into()))
        );
        assert!(Target::parse("binary:///usr/bin/logger").is_err());
    }
}
