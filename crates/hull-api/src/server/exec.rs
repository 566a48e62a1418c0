//! `/containers/{id}/exec` and `/exec/{id}/...`: processes run beside a
//! container's main process, over a taken-over connection.

use super::RequestBody;
use bytes::Bytes;
use hull_runtime::container::{ExecConfig, ExecIo, LogStream};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::attach::write_chunk;
use super::containers::{read_json, terminal_size, Query};
use super::detach::{self, DetachWatch, Input};
use super::stream::{upgraded_response, wants_upgrade, CONTENT_MULTIPLEXED, CONTENT_RAW};
use super::{error_chain, full, json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::container::{ExecCreate, ExecInspect, ExecProcessConfig, ExecStart, IdResponse};

/// `POST /containers/{id}/exec`.
pub(super) async fn create(
    daemon: &Daemon,
    reference: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    let body: ExecCreate = read_json(request).await?;
    let args = body.cmd.unwrap_or_default();
    if args.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "No exec command specified",
        ));
    }
    detach::parse(&body.detach_keys)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, err.to_string()))?;
    let config = ExecConfig {
        args,
        env: body.env.unwrap_or_default(),
        workdir: Some(body.working_dir).filter(|w| !w.is_empty()),
        user: Some(body.user).filter(|u| !u.is_empty()),
        tty: body.tty,
        attach_stdin: body.attach_stdin,
        attach_stdout: body.attach_stdout,
        attach_stderr: body.attach_stderr,
        detach_keys: body.detach_keys,
    };
    let id = daemon
        .containers()
        .create_exec(&container, config)
        .map_err(|err| match err {
            hull_runtime::ContainerError::NotRunning(id) => ApiError::new(
                StatusCode::CONFLICT,
                format!("container {id} is not running"),
            ),
            other => other.into(),
        })?;
    Ok(json_response(StatusCode::CREATED, &IdResponse { id }))
}

/// `POST /exec/{id}/start`: detached, or over the taken-over connection.
pub(super) async fn start(
    daemon: &Daemon,
    id: &str,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let info = daemon.containers().exec_info(id)?;
    if info.started {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("exec {id} has already run"),
        ));
    }
    let upgrade = wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    let body: ExecStart = read_json(request).await?;
    let containers = daemon.containers().clone();
    let id = id.to_owned();
    if body.detach || upgrade.is_none() {
        let (output, mut drain) = mpsc::channel(16);
        tokio::spawn(async move {
            tokio::spawn(async move { while drain.recv().await.is_some() {} });
            let io = ExecIo {
                stdin: None,
                output,
            };
            if let Err(err) = containers.start_exec(&id, io).await {
                debug!(exec = %id, error = %err, "detached exec failed");
            }
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::OK;
        return Ok(response);
    }
    // As docker's: the start's `Tty` frames the output, whatever the
    // exec's own (a terminal's output sent multiplexed, all as stdout).
    let tty = body.tty;
    let upgrade = upgrade.expect("checked above");
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => return warn!(error = %err, "exec upgrade failed"),
        };
        let (mut reader, writer) = tokio::io::split(TokioIo::new(upgraded));
        let (output_tx, mut output_rx) = mpsc::channel(16);
        let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
        let io = ExecIo {
            stdin: info.config.attach_stdin.then_some(stdin_rx),
            output: output_tx,
        };
        // Checked when the exec was created.
        let keys = detach::parse(&info.config.detach_keys).unwrap_or_default();
        let mut watch = DetachWatch::new(keys);
        let detached = tokio_util::sync::CancellationToken::new();
        let input = async {
            let mut buffer = vec![0u8; 32 * 1024];
            while let Ok(n) = reader.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                let (chunk, detach) = match watch.filter(&buffer[..n]) {
                    Input::Data(chunk) => (chunk, false),
                    Input::Detach(chunk) => (chunk, true),
                };
                if !chunk.is_empty() && stdin_tx.send(chunk).await.is_err() {
                    break;
                }
                if detach {
                    // The client goes; the process keeps its stdin and runs on.
                    detached.cancel();
                    let _stdin = stdin_tx;
                    return std::future::pending::<()>().await;
                }
            }
            drop(stdin_tx);
            std::future::pending::<()>().await
        };
        let run = async {
            let ran = containers.start_exec(&id, io);
            tokio::pin!(ran);
            let mut writer = writer;
            let mut write_failed = false;
            let mut ran_result = None;
            loop {
                tokio::select! {
                    result = &mut ran, if ran_result.is_none() => ran_result = Some(result),
                    () = detached.cancelled(), if !write_failed => {
                        write_failed = true;
                        let _ = writer.shutdown().await;
                    }
                    chunk = output_rx.recv() => match chunk {
                        Some((stream, bytes)) => {
                            if !write_failed && write_chunk(&mut writer, tty, stream, &bytes).await.is_err() {
                                write_failed = true;
                            }
                        }
                        None => break,
                    },
                }
            }
            let ran = match ran_result {
                Some(ran) => ran,
                None => ran.await,
            };
            if write_failed {
                return;
            }
            if let Err(err) = ran {
                let message = format!("{}\n", error_chain(&err));
                let _ = write_chunk(&mut writer, tty, LogStream::Stderr, message.as_bytes()).await;
            }
            let _ = writer.shutdown().await;
        };
        tokio::select! {
            () = run => {}
            () = input => {}
        }
    });
    Ok(upgraded_response(if tty {
        CONTENT_RAW
    } else {
        CONTENT_MULTIPLEXED
    }))
}

/// `GET /exec/{id}/json`.
pub(super) fn inspect(daemon: &Daemon, id: &str) -> Result<Response<Body>, ApiError> {
    let info = daemon.containers().exec_info(id)?;
    let mut args = info.config.args.clone();
    let entrypoint = if args.is_empty() {
        String::new()
    } else {
        args.remove(0)
    };
    let body = ExecInspect {
        id: info.id,
        running: info.running,
        exit_code: info.exit_code,
        open_stdin: info.config.attach_stdin,
        open_stderr: info.config.attach_stderr,
        open_stdout: info.config.attach_stdout,
        container_id: info.container_id,
        pid: info.pid,
        process_config: ExecProcessConfig {
            tty: info.config.tty,
            entrypoint,
            arguments: args,
            privileged: false,
            user: info.config.user.unwrap_or_default(),
        },
        can_remove: false,
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `POST /exec/{id}/resize?h=…&w=…`.
pub(super) async fn resize(
    daemon: &Daemon,
    id: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (rows, cols) = terminal_size(&Query::of(request))?;
    daemon.containers().resize_exec(id, rows, cols).await?;
    Ok(json_response(StatusCode::OK, &serde_json::json!({})))
}
