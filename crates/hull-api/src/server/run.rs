//! Hull's run stream: `POST /hull/run` upgrades to frames carrying stdio,
//! control and the final exit status.

use std::sync::Arc;

use super::RequestBody;
use bytes::Bytes;
use hull_proto::{Frame, FrameKind};
use hull_runtime::{Prepared, RunControl, RunIo, Runtime};
use hull_vm::Qemu;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{error_chain, full, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::{RunControlMessage, RunEvent, RunSpec};
use crate::{run_stream, RUN_UPGRADE};

/// `POST /hull/run`: checks the request, then upgrades the connection to a
/// stream of frames carrying stdio, control and the final exit status.
pub(super) async fn start(
    daemon: &Daemon,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let upgrade_asked = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(RUN_UPGRADE.as_bytes()));
    if !upgrade_asked {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("POST /hull/run needs 'Connection: Upgrade' and 'Upgrade: {RUN_UPGRADE}'"),
        ));
    }
    let body = super::body_bytes(&mut request).await?;
    let spec: RunSpec = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed run request: {e}"),
        )
    })?;
    let runtime = daemon
        .runtime()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))?;
    let run_request = hull_runtime::RunRequest {
        image: spec.image.clone(),
        options: spec.process.clone(),
        stdin: spec.stdin,
        size: spec.size,
        limits: spec.limits,
    };
    let prepared = runtime.prepare(&run_request).await?;
    let in_use = daemon
        .images()
        .rootfs_image(&prepared.rootfs)
        .map(|id| daemon.images_in_use().hold(id));

    let upgrade = hyper::upgrade::on(&mut request);
    let metering = daemon.metering().clone();
    tokio::spawn(async move {
        let _in_use = in_use;
        match upgrade.await {
            Ok(upgraded) => {
                // Billed from here to the run's end, whichever way it ends.
                let _run = metering
                    .foreground(&prepared.id, &spec.image, spec.size)
                    .await;
                serve_run(TokioIo::new(upgraded), runtime, prepared, spec).await
            }
            Err(err) => warn!(error = %err, "run stream upgrade failed"),
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(RUN_UPGRADE));
    Ok(response)
}

async fn serve_run<S>(stream: S, runtime: Arc<Runtime<Qemu>>, prepared: Prepared, spec: RunSpec)
where
    S: tokio::io::AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (stdout_tx, mut stdout_rx) = mpsc::channel::<Bytes>(16);
    let (stderr_tx, mut stderr_rx) = mpsc::channel::<Bytes>(16);
    let (control_tx, control_rx) = mpsc::channel::<RunControl>(16);
    if let (true, Some((rows, cols))) = (spec.process.tty, spec.tty_size) {
        let _ = control_tx.try_send(RunControl::Resize { rows, cols });
    }
    let io = RunIo {
        stdin: stdin_rx,
        stdout: stdout_tx,
        stderr: stderr_tx,
        control: control_rx,
    };

    // Ends when the client goes away: then the run is dropped, which kills the VM.
    let client_gone = read_client(&mut reader, stdin_tx, control_tx);
    let relay_output = async {
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let (stream, chunk) = tokio::select! {
                chunk = stdout_rx.recv(), if out_open => (run_stream::STDOUT, chunk),
                chunk = stderr_rx.recv(), if err_open => (run_stream::STDERR, chunk),
            };
            match chunk {
                Some(bytes) => {
                    if writer
                        .write_all(&Frame::data(stream, &bytes).encode())
                        .await
                        .is_err()
                    {
                        return Err(());
                    }
                }
                None if stream == run_stream::STDOUT => out_open = false,
                None => err_open = false,
            }
        }
        Ok(())
    };
    let finished = tokio::select! {
        (status, relayed) = async { tokio::join!(runtime.run(prepared, io), relay_output) } => {
            relayed.ok().map(|()| status)
        }
        () = client_gone => None,
    };
    let Some(status) = finished else {
        debug!("run client went away; its VM was stopped");
        return;
    };
    let event = match status {
        Ok(status) => RunEvent::Exited {
            code: status.code(),
        },
        Err(err) => RunEvent::Failed {
            code: err.exit_code(),
            message: error_chain(&err),
        },
    };
    let frame = Frame::json(FrameKind::Event, 0, &event);
    let _ = writer.write_all(&frame.encode()).await;
    let _ = writer.shutdown().await;
}

/// Feeds the client's stdin and control frames to the run until the client disconnects.
async fn read_client<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    stdin: mpsc::Sender<Bytes>,
    control: mpsc::Sender<RunControl>,
) {
    let mut stdin = Some(stdin);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut decoder = hull_proto::FrameDecoder::new();
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.extend(&buffer[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => {
                    warn!(error = %err, "malformed frame from a run client");
                    return;
                }
            };
            match frame.kind {
                FrameKind::Data if frame.channel == run_stream::STDIN => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(Bytes::from(frame.payload)).await;
                    }
                }
                FrameKind::Eof if frame.channel == run_stream::STDIN => stdin = None,
                FrameKind::Event => match frame.parse::<RunControlMessage>() {
                    Ok(RunControlMessage::Signal { signal }) => {
                        let _ = control.send(RunControl::Signal(signal)).await;
                    }
                    Ok(RunControlMessage::Resize { rows, cols }) => {
                        let _ = control.send(RunControl::Resize { rows, cols }).await;
                    }
                    Err(err) => debug!(error = %err, "ignoring a malformed control message"),
                },
                _ => debug!(kind = ?frame.kind, "ignoring an unexpected frame from a run client"),
            }
        }
    }
}
