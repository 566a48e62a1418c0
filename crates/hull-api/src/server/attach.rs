//! `POST /containers/{id}/attach`: the connection is taken over; the
//! container's output goes out (framed by stream unless it has a tty) and
//! what the client writes is its stdin.

use super::RequestBody;
use bytes::Bytes;
use hull_runtime::container::{LogFilter, OutputChunk, StdinMessage};
use hull_runtime::WaitCondition;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::containers::Query;
use super::detach::{self, DetachWatch, Input};
use super::stream::{stdcopy, upgraded_response, wants_upgrade, CONTENT_MULTIPLEXED, CONTENT_RAW};
use super::{ApiError, Body};
use crate::daemon::Daemon;

/// How long after the 101 the first output waits (see [`serve`]).
const FIRST_WRITE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// How long a finished stream waits for its container's exit to be recorded.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) async fn attach(
    daemon: &Daemon,
    reference: &str,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    if !wants_upgrade(&request) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "attach takes over the connection: send 'Connection: Upgrade' and 'Upgrade: tcp'",
        ));
    }
    let query = Query::of(&request);
    let detach_keys = detach::parse(query.get("detachKeys").unwrap_or(""))
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.to_string()))?;
    let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
    let config = container.config();
    let tty = config.process.tty;
    // Subscribe before answering: `docker run` starts the container as soon
    // as the attach is answered, and its first output must not be missed.
    let live = query
        .flag("stream")
        .then(|| container.attach_output(stdout, stderr));
    let history = if query.flag("logs") {
        history(&container, stdout, stderr).await
    } else {
        Vec::new()
    };
    let stdin = query
        .flag("stdin")
        .then(|| container.stdin())
        .flatten()
        .map(|tx| Stdin {
            tx,
            once: config.stdin_once,
            watch: DetachWatch::new(detach_keys),
        });

    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                // Clients that inspect the container once its stream ends
                // (docker 1.10's `run --rm`, the hyper client) must find it
                // stopped: the output closes an instant before the exit is
                // recorded.
                let exited = async {
                    let exited = container.wait(WaitCondition::NotRunning);
                    let _ = tokio::time::timeout(EXIT_GRACE, exited).await;
                };
                serve(TokioIo::new(upgraded), tty, history, live, stdin, exited).await;
            }
            Err(err) => warn!(error = %err, "attach upgrade failed"),
        }
    });
    Ok(upgraded_response(if tty {
        CONTENT_RAW
    } else {
        CONTENT_MULTIPLEXED
    }))
}

/// What the container wrote so far, of the streams asked for.
pub(super) async fn history(
    container: &hull_runtime::Container,
    stdout: bool,
    stderr: bool,
) -> Vec<OutputChunk> {
    let filter = LogFilter {
        stdout,
        stderr,
        ..Default::default()
    };
    let mut entries = container.logs(filter, false);
    let mut history = Vec::new();
    while let Some(Ok(entry)) = entries.recv().await {
        history.push((entry.stream, Bytes::from(entry.line)));
    }
    history
}

async fn serve<S: AsyncRead + AsyncWrite + Send + 'static>(
    connection: S,
    tty: bool,
    history: Vec<OutputChunk>,
    live: Option<mpsc::Receiver<OutputChunk>>,
    stdin: Option<Stdin>,
    exited: impl std::future::Future<Output = ()>,
) {
    let (mut reader, mut writer) = tokio::io::split(connection);
    let output = async {
        // Clients that read the 101 through a buffered reader and then take
        // the raw socket (Python's http.client under docker-py) lose what
        // arrived with the header; docker's own start of a stream gives
        // them this much time.
        tokio::time::sleep(FIRST_WRITE_DELAY).await;
        for (stream, bytes) in history {
            write_chunk(&mut writer, tty, stream, &bytes).await?;
        }
        if let Some(mut live) = live {
            while let Some((stream, bytes)) = live.recv().await {
                write_chunk(&mut writer, tty, stream, &bytes).await?;
            }
            exited.await;
        }
        Ok::<_, std::io::Error>(())
    };
    let input = async {
        if let Some(stdin) = stdin {
            if forward_stdin(&mut reader, stdin).await == Ended::Detached {
                // The connection closes; the process runs on.
                return;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        result = output => if let Err(err) = result {
            debug!(error = %err, "the attached client went away");
        },
        () = input => {}
    }
    let _ = writer.shutdown().await;
}

pub(super) async fn write_chunk<W: AsyncWrite + Unpin>(
    writer: &mut W,
    tty: bool,
    stream: hull_runtime::container::LogStream,
    bytes: &[u8],
) -> std::io::Result<()> {
    if tty {
        writer.write_all(bytes).await?;
    } else {
        writer.write_all(&stdcopy(stream, bytes)).await?;
    }
    writer.flush().await
}

/// Where an attached client's input goes.
struct Stdin {
    tx: mpsc::Sender<StdinMessage>,
    /// Whether the process gets EOF when the client closes its side.
    once: bool,
    watch: DetachWatch,
}

/// How a client's input ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    Detached,
}

/// Copies the client's bytes to the container's stdin until the client
/// closes its side (then, with `stdin_once`, the process gets EOF) or
/// types the detach keys (the process keeps its stdin).
async fn forward_stdin<R: AsyncRead + Unpin>(reader: &mut R, mut stdin: Stdin) -> Ended {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let (chunk, detached) = match stdin.watch.filter(&buffer[..n]) {
                    Input::Data(chunk) => (chunk, false),
                    Input::Detach(chunk) => (chunk, true),
                };
                if !chunk.is_empty() && stdin.tx.send(StdinMessage::Data(chunk)).await.is_err() {
                    return Ended::Closed;
                }
                if detached {
                    return Ended::Detached;
                }
            }
        }
    }
    if stdin.once {
        let _ = stdin.tx.send(StdinMessage::Close).await;
    }
    Ended::Closed
}
