//! The host side of the channel against a guest played by the test over a
//! socketpair: an honest one, and hostile ones that flood past their
//! credit, send oversized frames, lie about request ids or go silent.

use std::time::Duration;

use bytes::Bytes;
use hull_proto::{
    Event, ExitStatus, Frame, FrameKind, Hello, ProcessSpec, Request, Response, HEADER_LEN,
    INITIAL_WINDOW, MAX_DATA_CHUNK, MAX_PAYLOAD, PROTOCOL_VERSION,
};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::handshake::read_frame;
use super::*;

const VM: &str = "c-test-vm";

/// The guest's end of the channel.
struct Guest {
    stream: UnixStream,
}

impl Guest {
    async fn send(&mut self, frame: Frame) {
        self.stream.write_all(&frame.encode()).await.unwrap();
    }
    async fn recv(&mut self) -> Frame {
        read_frame(&mut self.stream).await.unwrap().unwrap()
    }
    /// Sends `len` bytes of stdout on `stream` in chunks of `chunk`.
    async fn flood(&mut self, stream: u32, len: usize, chunk: usize) {
        let data = vec![b'x'; chunk];
        let mut sent = 0;
        while sent < len {
            let n = chunk.min(len - sent);
            // The host may close the channel mid-flood: that is the point.
            if self
                .stream
                .write_all(&Frame::data(stream, &data[..n]).encode())
                .await
                .is_err()
            {
                return;
            }
            sent += n;
        }
    }
}

async fn connect(version: u32) -> (Result<AgentClient, AgentError>, Guest) {
    let (host, guest) = UnixStream::pair().unwrap();
    let mut guest = Guest { stream: guest };
    let hello = Hello {
        version,
        software: "test-guest".into(),
    };
    guest.send(Frame::json(FrameKind::Hello, 0, &hello)).await;
    let client = AgentClient::handshake(VM, host).await;
    (client, guest)
}

/// A client whose guest already got the host's hello.
async fn connected() -> (AgentClient, Guest) {
    let (client, mut guest) = connect(PROTOCOL_VERSION).await;
    assert_eq!(guest.recv().await.kind, FrameKind::Hello);
    (client.unwrap(), guest)
}

/// Waits until the host closed the channel.
async fn closed(client: &AgentClient) {
    let watched = client.watch_exit("c", "never");
    tokio::time::timeout(Duration::from_secs(10), async {
        while !client.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the host closed the channel");
    assert!(watched.await.is_err());
}

fn spec() -> ProcessSpec {
    ProcessSpec {
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
        groups: Vec::new(),
        terminal_size: None,
    }
}

#[tokio::test]
async fn a_version_mismatch_is_refused_by_name() {
    let (client, _guest) = connect(PROTOCOL_VERSION + 1).await;
    let err = client.err().unwrap().to_string();
    assert!(err.contains("test-guest"), "{err}");
}

#[tokio::test]
async fn requests_are_matched_to_responses_and_exits_follow_output() {
    let (client, mut guest) = connected().await;
    let exit = client.watch_exit("c", "init");
    let mut stdout = client.open_output(2);
    let request = tokio::spawn({
        let client = client.clone();
        async move { client.request(&Request::StartProcess(spec())).await }
    });
    let asked = guest.recv().await;
    assert_eq!(asked.kind, FrameKind::Request);
    let started = Response::Started { pid: 9 };
    guest
        .send(Frame::json(FrameKind::Response, asked.channel, &started))
        .await;
    assert_eq!(request.await.unwrap().unwrap(), started);

    guest.send(Frame::data(2, b"hello\n")).await;
    guest.send(Frame::eof(2)).await;
    let exited = Event::ProcessExited {
        container: "c".into(),
        process: "init".into(),
        status: ExitStatus::Code(3),
    };
    guest.send(Frame::json(FrameKind::Event, 0, &exited)).await;
    assert_eq!(stdout.recv().await.unwrap(), Bytes::from_static(b"hello\n"));
    let credit = guest.recv().await;
    assert_eq!(
        (credit.kind, credit.credit_bytes().unwrap()),
        (FrameKind::Credit, 6)
    );
    assert!(stdout.recv().await.is_none());
    assert_eq!(exit.await.unwrap(), ExitStatus::Code(3));
}

#[tokio::test]
async fn input_waits_for_credit() {
    let (client, mut guest) = connected().await;
    let input = client.open_input(1);
    let big = vec![7u8; INITIAL_WINDOW as usize + 10];
    let writer = tokio::spawn(async move {
        input.write(&big).await.unwrap();
        input.close().await.unwrap();
    });
    let mut received = 0;
    while received < INITIAL_WINDOW as usize {
        received += guest.recv().await.payload.len();
    }
    tokio::task::yield_now().await;
    assert!(!writer.is_finished(), "sent past the window");
    guest.send(Frame::credit(1, 10)).await;
    assert_eq!(guest.recv().await.payload.len(), 10);
    assert_eq!(guest.recv().await.kind, FrameKind::Eof);
    writer.await.unwrap();
}

#[tokio::test]
async fn a_lost_channel_fails_waiters() {
    let (client, guest) = connected().await;
    let exit = client.watch_exit("c", "init");
    drop(guest);
    assert!(exit.await.is_err());
    assert!(matches!(
        client.request(&Request::Ping).await,
        Err(AgentError::Disconnected)
    ));
}

#[tokio::test]
async fn a_guest_that_sends_past_its_credit_has_its_channel_closed() {
    let (client, mut guest) = connected().await;
    let exit = client.watch_exit("c", "init");
    let _stdout = client.open_output(2);
    // Nobody reads the output, so no credit comes back: 4 windows is a flood.
    let flood = 4 * INITIAL_WINDOW as usize;
    tokio::spawn(async move { guest.flood(2, flood, MAX_DATA_CHUNK).await });
    assert!(exit.await.is_err(), "the channel was closed");
    let lost = client.lost().to_string();
    assert!(lost.contains(VM) && lost.contains("past"), "{lost}");
    assert!(client.buffered() <= INITIAL_WINDOW as usize);
    assert!(matches!(
        client.request(&Request::Ping).await,
        Err(AgentError::Closed { .. })
    ));
}

#[tokio::test]
async fn output_within_credit_is_all_delivered_and_buffered_no_further() {
    let (client, mut guest) = connected().await;
    let mut stdout = client.open_output(2);
    let total = 3 * INITIAL_WINDOW as usize;
    let guest = tokio::spawn(async move {
        let mut credit = INITIAL_WINDOW as usize;
        let mut sent = 0;
        while sent < total {
            while credit == 0 {
                let frame = guest.recv().await;
                assert_eq!(frame.kind, FrameKind::Credit);
                credit += frame.credit_bytes().unwrap() as usize;
            }
            // Tiny frames: a host that kept one buffer per frame would hold
            // many times the bytes.
            let n = credit.min(total - sent).min(7);
            guest.send(Frame::data(2, &b"0123456"[..n])).await;
            credit -= n;
            sent += n;
        }
        guest.send(Frame::eof(2)).await;
        guest
    });
    let mut received = 0;
    while let Some(chunk) = stdout.recv().await {
        assert!(chunk.len() <= MAX_DATA_CHUNK);
        assert!(client.buffered() <= INITIAL_WINDOW as usize);
        received += chunk.len();
    }
    assert_eq!(received, total);
    let _guest = guest.await.unwrap();
    assert!(!client.is_closed());
}

#[tokio::test]
async fn an_oversized_frame_closes_the_channel_before_it_is_read() {
    let (client, mut guest) = connected().await;
    let mut header = [0u8; HEADER_LEN];
    header[0] = FrameKind::Response as u8;
    header[5..9].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    guest.stream.write_all(&header).await.unwrap();
    closed(&client).await;
    let lost = client.lost().to_string();
    assert!(lost.contains("exceeds"), "{lost}");
}

#[tokio::test]
async fn a_data_frame_larger_than_the_credit_is_refused_unread() {
    let (client, mut guest) = connected().await;
    let _stdout = client.open_output(2);
    let mut header = [0u8; HEADER_LEN];
    header[0] = FrameKind::Data as u8;
    header[1..5].copy_from_slice(&2u32.to_le_bytes());
    header[5..9].copy_from_slice(&(INITIAL_WINDOW + 1).to_le_bytes());
    // Only the header: the host must not wait for a payload it would refuse.
    guest.stream.write_all(&header).await.unwrap();
    closed(&client).await;
    assert_eq!(client.buffered(), 0);
}

#[tokio::test(start_paused = true)]
async fn answers_to_ids_never_asked_hold_nothing_and_the_real_request_meets_its_deadline() {
    let (client, mut guest) = connected().await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request(&Request::Ping).await }
    });
    let asked = guest.recv().await;
    for lie in (1..10_000u32).filter(|id| *id != asked.channel) {
        guest
            .send(Frame::json(FrameKind::Response, lie, &Response::Done))
            .await;
    }
    let err = asking.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("Ping") && err.contains(VM), "{err}");
    assert_eq!(client.in_flight(), 0);
    assert!(!client.is_closed(), "late answers are no violation");
}

#[tokio::test(start_paused = true)]
async fn a_silent_agent_fails_each_request_at_its_deadline_and_keeps_no_waiter() {
    let (client, _guest) = connected().await;
    let signal = Request::Signal {
        container: "c".into(),
        process: "init".into(),
        signal: 9,
    };
    let err = client.request(&signal).await.unwrap_err();
    assert!(
        matches!(err, AgentError::Deadline { request: "Signal", ref vm, .. } if vm == VM),
        "{err}"
    );
    assert_eq!(client.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_stops_reading_holds_requests_in_a_bounded_queue() {
    let (client, _guest) = connected().await;
    // Big requests fill the socket's buffer, then the queue; the rest wait
    // for room and fail at their deadline.
    let big = Request::StatPath {
        container: "c".into(),
        path: "x".repeat(64 * 1024),
    };
    let asks: Vec<_> = (0..4 * OUTGOING_FRAMES)
        .map(|_| {
            let (client, big) = (client.clone(), big.clone());
            tokio::spawn(async move { client.request(&big).await })
        })
        .collect();
    for ask in asks {
        assert!(matches!(
            ask.await.unwrap(),
            Err(AgentError::Deadline { .. })
        ));
    }
    assert_eq!(client.in_flight(), 0);
    assert_eq!(
        client.inner.frames.capacity(),
        0,
        "the queue stayed full, and bounded"
    );
}

#[tokio::test]
async fn credit_a_guest_grants_never_lets_more_than_a_window_be_on_its_way() {
    let (client, mut guest) = connected().await;
    let input = client.open_input(1);
    for _ in 0..4 {
        guest.send(Frame::credit(1, u32::MAX)).await;
    }
    // Let the grants arrive before the host writes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let big = vec![7u8; 2 * INITIAL_WINDOW as usize];
    let writer = tokio::spawn(async move { input.write(&big).await });
    let mut received = 0;
    while received < INITIAL_WINDOW as usize {
        received += guest.recv().await.payload.len();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!writer.is_finished(), "sent past one window");
    assert_eq!(received, INITIAL_WINDOW as usize);
}

#[tokio::test]
async fn after_a_reattach_the_window_is_fresh_and_late_credit_still_counts() {
    let (client, mut guest) = connected().await;
    let mut stdout = client.open_output(2);
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.request(&Request::Reattach).await }
    });
    let asked = guest.recv().await;
    // One chunk read before the agent knew of the new host, which the host
    // reads and credits before the answer.
    guest.send(Frame::data(2, &[1; MAX_DATA_CHUNK])).await;
    assert_eq!(stdout.recv().await.unwrap().len(), MAX_DATA_CHUNK);
    let answer = Response::Reattached(Vec::new());
    guest
        .send(Frame::json(FrameKind::Response, asked.channel, &answer))
        .await;
    asking.await.unwrap().unwrap();
    // The agent's window is fresh, and the credit came after its reset.
    guest
        .flood(2, INITIAL_WINDOW as usize + MAX_DATA_CHUNK, MAX_DATA_CHUNK)
        .await;
    guest.send(Frame::data(2, b"!")).await;
    closed(&client).await;
    assert!(client.lost().to_string().contains("past"));
}
