//! `GET /containers/{id}/attach/ws`: attach over a WebSocket, as docker
//! serves browsers and docker-py's `attach_socket(ws=True)`. The
//! container's output goes out raw (never framed by stream), a binary
//! message a chunk; what the client sends, text or binary, is its stdin.

use futures_util::{SinkExt, StreamExt};
use hull_runtime::container::{OutputChunk, StdinMessage};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

use super::containers::Query;
use super::{full, ApiError, Body, RequestBody};
use crate::daemon::Daemon;

/// The largest message a client may send: input arrives in small pieces,
/// and a bigger one would only grow hulld's memory.
const MAX_MESSAGE: usize = 1 << 20;

pub(super) async fn attach(
    daemon: &Daemon,
    reference: &str,
    mut request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    let accept = accept_key(&request)?;
    let query = Query::of(&request);
    let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
    // Subscribed before answering, as the plain attach does.
    let live = query
        .flag("stream")
        .then(|| container.attach_output(stdout, stderr));
    let history = if query.flag("logs") {
        super::attach::history(&container, stdout, stderr).await
    } else {
        Vec::new()
    };
    let stdin = query.flag("stdin").then(|| container.stdin()).flatten();
    let once = container.config().stdin_once;
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig {
                    max_message_size: Some(MAX_MESSAGE),
                    max_frame_size: Some(MAX_MESSAGE),
                    ..WebSocketConfig::default()
                };
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(socket, history, live, stdin, once).await;
            }
            Err(err) => warn!(error = %err, "websocket attach upgrade failed"),
        }
    });
    let mut response = Response::new(full(bytes::Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a header value"),
    );
    Ok(response)
}

/// The `Sec-WebSocket-Accept` for a well-formed WebSocket upgrade (RFC 6455,
/// version 13); anything else is refused, saying what was missing.
fn accept_key<B>(request: &Request<B>) -> Result<String, ApiError> {
    let bad = |what: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a websocket attach needs {what}"),
        )
    };
    let headers = request.headers();
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(bad("'Connection: Upgrade' and 'Upgrade: websocket'"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(bad("'Sec-WebSocket-Version: 13'"));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty() && k.len() <= 64)
        .ok_or_else(|| bad("a Sec-WebSocket-Key"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

async fn serve<S>(
    socket: WebSocketStream<S>,
    history: Vec<OutputChunk>,
    live: Option<mpsc::Receiver<OutputChunk>>,
    stdin: Option<mpsc::Sender<StdinMessage>>,
    once: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut source) = socket.split();
    let output = async {
        for (_, bytes) in history {
            sink.send(Message::binary(bytes)).await?;
        }
        if let Some(mut live) = live {
            while let Some((_, bytes)) = live.recv().await {
                sink.send(Message::binary(bytes)).await?;
            }
        }
        sink.send(Message::Close(None)).await
    };
    // Ends, and with it the connection, when the client closes, breaks the
    // protocol or sends a message past the bound.
    let input = async {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Text(text) => text.into_bytes(),
                Message::Close(_) => break,
                _ => continue,
            };
            if let Some(tx) = &stdin {
                if !data.is_empty() && tx.send(StdinMessage::Data(data.into())).await.is_err() {
                    break;
                }
            }
        }
        if let (Some(tx), true) = (&stdin, once) {
            let _ = tx.send(StdinMessage::Close).await;
        }
    };
    tokio::select! {
        result = output => if let Err(err) = result {
            debug!(error = %err, "the websocket client went away");
        },
        () = input => {}
    }
}
