//! The host side of the control channel: requests, stdio streams and exit
//! events multiplexed over one connection to the guest agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hull_proto::{
    Event, ExitStatus, Frame, FrameError, FrameKind, Hello, Request, RequestError, Response,
    StreamId, INITIAL_WINDOW, MAX_DATA_CHUNK, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the guest agent speaks protocol version {agent} ({software}) but hulld speaks {host}: rebuild the agent so both match")]
    VersionMismatch {
        agent: u32,
        host: u32,
        software: String,
    },
    #[error("the guest agent opened with a {0:?} frame instead of a hello")]
    NoHello(FrameKind),
    #[error("the connection to the guest agent was lost")]
    Disconnected,
    #[error("the guest agent sent a malformed frame")]
    Frame(#[from] FrameError),
    #[error("the guest agent refused the request: {0}")]
    Refused(#[source] RequestError),
    #[error("the guest agent answered {0:?} unexpectedly")]
    UnexpectedResponse(Response),
}

type ProcessKey = (String, String);

#[derive(Default)]
struct Shared {
    pending: HashMap<u32, oneshot::Sender<Response>>,
    outputs: HashMap<StreamId, mpsc::UnboundedSender<Bytes>>,
    input_credit: HashMap<StreamId, Arc<Semaphore>>,
    exits: HashMap<ProcessKey, oneshot::Sender<ExitStatus>>,
    closed: bool,
}

/// A connection to one guest agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentClient {
    frames: mpsc::UnboundedSender<Frame>,
    shared: Arc<Mutex<Shared>>,
    next_id: Arc<AtomicU32>,
}

impl AgentClient {
    /// Waits for the agent's hello, answers it, and starts serving the channel.
    pub async fn handshake<S>(stream: S) -> Result<Self, AgentError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        expect_hello(&mut reader).await?;
        send_hello(&mut writer).await?;

        Ok(Self::serve_channel(reader, writer))
    }

    /// Connects to the agent of a VM that an earlier hulld started. The host
    /// speaks first; what the agent wrote before it noticed the new host
    /// (perhaps half a frame) precedes its resync marker and is skipped.
    /// Ask it [`Request::Reattach`] next, after registering the streams and
    /// exits to watch.
    pub async fn reconnect<S>(stream: S) -> Result<Self, AgentError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, mut writer) = tokio::io::split(stream);
        send_hello(&mut writer).await?;
        let mut reader = tokio::io::BufReader::new(reader);
        skip_to_resync(&mut reader).await?;
        expect_hello(&mut reader).await?;
        Ok(Self::serve_channel(reader, writer))
    }

    /// Takes over the channel of a VM cloned from a template: the agent in
    /// it greeted the template's host already, so no hello is exchanged.
    pub fn resumed<S>(stream: S) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        Self::serve_channel(reader, writer)
    }

    fn serve_channel<R, W>(mut reader: R, mut writer: W) -> Self
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (frames, mut outgoing) = mpsc::unbounded_channel::<Frame>();
        tokio::spawn(async move {
            while let Some(frame) = outgoing.recv().await {
                if writer.write_all(&frame.encode()).await.is_err() {
                    break;
                }
            }
        });
        let shared = Arc::new(Mutex::new(Shared::default()));
        let client = Self {
            frames,
            shared: shared.clone(),
            next_id: Arc::new(AtomicU32::new(1)),
        };
        let dispatcher = client.clone();
        tokio::spawn(async move {
            let result = dispatcher.serve(&mut reader).await;
            if let Err(err) = result {
                warn!(error = %err, "control channel failed");
            }
            dispatcher.close();
        });
        client
    }

    async fn serve<R: AsyncRead + Unpin>(&self, reader: &mut R) -> Result<(), AgentError> {
        while let Some(frame) = read_frame(reader).await? {
            self.dispatch(frame)?;
        }
        Ok(())
    }

    fn dispatch(&self, frame: Frame) -> Result<(), AgentError> {
        let mut shared = self.shared.lock().expect("agent state lock");
        match frame.kind {
            FrameKind::Response => {
                let response: Response = frame.parse()?;
                if let Some(waiter) = shared.pending.remove(&frame.channel) {
                    let _ = waiter.send(response);
                }
            }
            FrameKind::Data => {
                if let Some(output) = shared.outputs.get(&frame.channel) {
                    let _ = output.send(Bytes::from(frame.payload));
                }
            }
            FrameKind::Eof => {
                shared.outputs.remove(&frame.channel);
            }
            FrameKind::Credit => {
                let granted = frame.credit_bytes()?;
                if let Some(credit) = shared.input_credit.get(&frame.channel) {
                    credit.add_permits(granted as usize);
                }
            }
            FrameKind::Event => match frame.parse::<Event>()? {
                Event::ProcessExited {
                    container,
                    process,
                    status,
                } => {
                    if let Some(waiter) = shared.exits.remove(&(container, process)) {
                        let _ = waiter.send(status);
                    }
                }
            },
            FrameKind::Hello | FrameKind::Request => {
                debug!(kind = ?frame.kind, "ignoring an unexpected frame from the agent");
            }
        }
        Ok(())
    }

    /// Fails everything still waiting: the channel is gone.
    fn close(&self) {
        let mut shared = self.shared.lock().expect("agent state lock");
        shared.closed = true;
        shared.pending.clear();
        shared.outputs.clear();
        shared.exits.clear();
        for credit in shared.input_credit.values() {
            credit.close();
        }
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, request: &Request) -> Result<Response, AgentError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut shared = self.shared.lock().expect("agent state lock");
            if shared.closed {
                return Err(AgentError::Disconnected);
            }
            shared.pending.insert(id, tx);
        }
        self.send(Frame::json(FrameKind::Request, id, request))?;
        match rx.await.map_err(|_| AgentError::Disconnected)? {
            Response::Failed(error) => Err(AgentError::Refused(error)),
            response => Ok(response),
        }
    }

    /// Sends a request that must be answered with `Done`.
    pub async fn request_done(&self, request: &Request) -> Result<(), AgentError> {
        match self.request(request).await? {
            Response::Done => Ok(()),
            other => Err(AgentError::UnexpectedResponse(other)),
        }
    }

    fn send(&self, frame: Frame) -> Result<(), AgentError> {
        self.frames
            .send(frame)
            .map_err(|_| AgentError::Disconnected)
    }

    /// Registers interest in a process's exit; call before starting it.
    pub fn watch_exit(&self, container: &str, process: &str) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        let mut shared = self.shared.lock().expect("agent state lock");
        if !shared.closed {
            shared
                .exits
                .insert((container.to_string(), process.to_string()), tx);
        }
        rx
    }

    /// Receives a stream the agent writes (a process's stdout or stderr).
    pub fn open_output(&self, stream: StreamId) -> OutputStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut shared = self.shared.lock().expect("agent state lock");
        if !shared.closed {
            shared.outputs.insert(stream, tx);
        }
        OutputStream {
            stream,
            data: rx,
            client: self.clone(),
        }
    }

    /// A stream the host writes (a process's stdin).
    pub fn open_input(&self, stream: StreamId) -> InputStream {
        let credit = Arc::new(Semaphore::new(INITIAL_WINDOW as usize));
        let mut shared = self.shared.lock().expect("agent state lock");
        shared.input_credit.insert(stream, credit.clone());
        InputStream {
            stream,
            credit,
            client: self.clone(),
        }
    }
}

/// Output of a guest process. Bytes are credited back to the agent as they are
/// taken, so a slow consumer slows the process instead of filling memory.
pub struct OutputStream {
    stream: StreamId,
    data: mpsc::UnboundedReceiver<Bytes>,
    client: AgentClient,
}

impl OutputStream {
    /// The next chunk, or `None` once the agent sent EOF (or the channel died).
    pub async fn recv(&mut self) -> Option<Bytes> {
        let chunk = self.data.recv().await?;
        let granted = u32::try_from(chunk.len()).expect("chunks are small");
        let _ = self.client.send(Frame::credit(self.stream, granted));
        Some(chunk)
    }
}

impl Drop for OutputStream {
    /// A stream the agent never opened (its request was refused) gets no
    /// `Eof`: forget it here, so refused copies leave nothing behind.
    fn drop(&mut self) {
        let mut shared = self.client.shared.lock().expect("agent state lock");
        shared.outputs.remove(&self.stream);
    }
}

/// Input to a guest process, sent only as far as the agent granted credit.
pub struct InputStream {
    stream: StreamId,
    credit: Arc<Semaphore>,
    client: AgentClient,
}

impl InputStream {
    pub async fn write(&self, mut bytes: &[u8]) -> Result<(), AgentError> {
        while !bytes.is_empty() {
            let chunk = &bytes[..bytes.len().min(MAX_DATA_CHUNK)];
            let permits = u32::try_from(chunk.len()).expect("chunks are small");
            self.credit
                .acquire_many(permits)
                .await
                .map_err(|_| AgentError::Disconnected)?
                .forget();
            self.client.send(Frame::data(self.stream, chunk))?;
            bytes = &bytes[chunk.len()..];
        }
        Ok(())
    }

    /// Tells the agent no more input follows.
    pub fn close(self) -> Result<(), AgentError> {
        self.client.send(Frame::eof(self.stream))
    }
}

/// Reads the agent's hello and checks that it speaks our version.
async fn expect_hello<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(), AgentError> {
    let first = read_frame(reader).await?.ok_or(AgentError::Disconnected)?;
    if first.kind != FrameKind::Hello {
        return Err(AgentError::NoHello(first.kind));
    }
    let hello: Hello = first.parse()?;
    if hello.version != PROTOCOL_VERSION {
        return Err(AgentError::VersionMismatch {
            agent: hello.version,
            host: PROTOCOL_VERSION,
            software: hello.software,
        });
    }
    Ok(())
}

async fn send_hello<W: AsyncWrite + Unpin>(writer: &mut W) -> Result<(), AgentError> {
    let ours = Hello {
        version: PROTOCOL_VERSION,
        software: format!("hulld {}", env!("CARGO_PKG_VERSION")),
    };
    writer
        .write_all(&Frame::json(FrameKind::Hello, 0, &ours).encode())
        .await
        .map_err(|_| AgentError::Disconnected)
}

/// Reads until just past the agent's resync marker.
async fn skip_to_resync<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(), AgentError> {
    let marker = hull_proto::RESYNC;
    let mut recent = [0u8; 16];
    let mut seen = 0usize;
    loop {
        let byte = reader
            .read_u8()
            .await
            .map_err(|_| AgentError::Disconnected)?;
        recent.rotate_left(1);
        recent[15] = byte;
        seen += 1;
        if seen >= marker.len() && recent == marker {
            return Ok(());
        }
    }
}

async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Option<Frame>, AgentError> {
    let mut header = [0u8; hull_proto::HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(_) => return Err(AgentError::Disconnected),
    }
    let (kind, channel, len) = hull_proto::parse_header(&header)?;
    let mut payload = vec![0u8; len as usize];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|_| AgentError::Disconnected)?;
    Ok(Some(Frame {
        kind,
        channel,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hull_proto::ProcessSpec;
    use tokio::io::DuplexStream;

    /// A scripted agent on the other end of an in-memory pipe.
    struct FakeAgent {
        stream: DuplexStream,
    }

    impl FakeAgent {
        async fn send(&mut self, frame: Frame) {
            self.stream.write_all(&frame.encode()).await.unwrap();
        }
        async fn recv(&mut self) -> Frame {
            read_frame(&mut self.stream).await.unwrap().unwrap()
        }
    }

    async fn connect(version: u32) -> (Result<AgentClient, AgentError>, FakeAgent) {
        let (host, guest) = tokio::io::duplex(1 << 20);
        let mut agent = FakeAgent { stream: guest };
        let hello = Hello {
            version,
            software: "fake-agent".into(),
        };
        agent.send(Frame::json(FrameKind::Hello, 0, &hello)).await;
        let client = AgentClient::handshake(host).await;
        (client, agent)
    }

    #[tokio::test]
    async fn a_version_mismatch_is_refused_by_name() {
        let (client, _agent) = connect(PROTOCOL_VERSION + 1).await;
        let err = client.err().unwrap().to_string();
        assert!(err.contains("fake-agent"), "{err}");
    }

    #[tokio::test]
    async fn requests_are_matched_to_responses_and_exits_follow_output() {
        let (client, mut agent) = connect(PROTOCOL_VERSION).await;
        let client = client.unwrap();
        assert_eq!(agent.recv().await.kind, FrameKind::Hello);

        let exit = client.watch_exit("c", "init");
        let mut stdout = client.open_output(2);
        let spec = ProcessSpec {
            container: "c".into(),
            id: "init".into(),
            args: vec!["echo".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            terminal: false,
            stdin: None,
            stdout: 2,
            stderr: None,
            rlimits: Vec::new(),
        };
        let request = tokio::spawn({
            let client = client.clone();
            async move { client.request(&Request::StartProcess(spec)).await }
        });
        let asked = agent.recv().await;
        assert_eq!(asked.kind, FrameKind::Request);
        agent
            .send(Frame::json(
                FrameKind::Response,
                asked.channel,
                &Response::Started { pid: 9 },
            ))
            .await;
        assert_eq!(
            request.await.unwrap().unwrap(),
            Response::Started { pid: 9 }
        );

        agent.send(Frame::data(2, b"hello\n")).await;
        agent.send(Frame::eof(2)).await;
        agent
            .send(Frame::json(
                FrameKind::Event,
                0,
                &Event::ProcessExited {
                    container: "c".into(),
                    process: "init".into(),
                    status: ExitStatus::Code(3),
                },
            ))
            .await;
        assert_eq!(stdout.recv().await.unwrap(), Bytes::from_static(b"hello\n"));
        let credit = agent.recv().await;
        assert_eq!(
            (credit.kind, credit.credit_bytes().unwrap()),
            (FrameKind::Credit, 6)
        );
        assert!(stdout.recv().await.is_none());
        assert_eq!(exit.await.unwrap(), ExitStatus::Code(3));
    }

    #[tokio::test]
    async fn input_waits_for_credit() {
        let (client, mut agent) = connect(PROTOCOL_VERSION).await;
        let client = client.unwrap();
        agent.recv().await; // hello
        let input = client.open_input(1);
        let big = vec![7u8; INITIAL_WINDOW as usize + 10];
        let writer = tokio::spawn(async move {
            input.write(&big).await.unwrap();
            input.close().unwrap();
        });
        let mut received = 0;
        while received < INITIAL_WINDOW as usize {
            received += agent.recv().await.payload.len();
        }
        tokio::task::yield_now().await;
        assert!(!writer.is_finished(), "sent past the window");
        agent.send(Frame::credit(1, 10)).await;
        let rest = agent.recv().await;
        assert_eq!(rest.payload.len(), 10);
        assert_eq!(agent.recv().await.kind, FrameKind::Eof);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_lost_channel_fails_waiters() {
        let (client, agent) = connect(PROTOCOL_VERSION).await;
        let client = client.unwrap();
        let exit = client.watch_exit("c", "init");
        drop(agent);
        assert!(exit.await.is_err());
        assert!(matches!(
            client.request(&Request::Ping).await,
            Err(AgentError::Disconnected)
        ));
    }
}
