use super::*;
use crate::testutil::Wire;
use hull_proto::ProcessSpec;

fn agent() -> (Arc<Agent>, Wire) {
    let wire = Wire::default();
    (Arc::new(Agent::new(Channel::new(wire.clone()))), wire)
}

fn request(id: u32, request: &Request) -> Frame {
    Frame::json(FrameKind::Request, id, request)
}

fn response(frame: &Frame) -> Response {
    assert_eq!(frame.kind, FrameKind::Response);
    frame.parse().unwrap()
}

fn spec(container: &str, stdin: Option<u32>, stdout: u32, stderr: Option<u32>) -> ProcessSpec {
    ProcessSpec {
        container: container.into(),
        id: "init".into(),
        args: vec!["true".into()],
        env: vec![],
        cwd: "/".into(),
        user: String::new(),
        terminal: false,
        stdin,
        stdout,
        stderr,
        rlimits: Vec::new(),
        groups: Vec::new(),
        terminal_size: None,
    }
}

fn failure_kind(response: Response) -> ErrorKind {
    match response {
        Response::Failed(e) => e.kind,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn ping_is_answered_on_the_requests_channel() {
    let (agent, wire) = agent();
    agent.on_request(&request(41, &Request::Ping));
    let frames = wire.frames();
    assert_eq!(frames[0].channel, 41);
    assert_eq!(response(&frames[0]), Response::Done);
}

#[test]
fn a_malformed_request_is_answered_not_fatal() {
    let (agent, wire) = agent();
    let frame = Frame {
        kind: FrameKind::Request,
        channel: 3,
        payload: br#"{"op":"reformat"}"#.to_vec(),
    };
    agent.on_request(&frame);
    agent.on_request(&request(4, &Request::Ping));
    let frames = wire.frames();
    assert_eq!(
        failure_kind(response(&frames[0])),
        ErrorKind::InvalidRequest
    );
    assert_eq!(response(&frames[1]), Response::Done);
}

#[test]
fn a_process_in_an_unknown_container_fails_and_frees_its_streams() {
    let (agent, wire) = agent();
    let start = Request::StartProcess(spec("nope", Some(1), 2, Some(3)));
    agent.on_request(&request(7, &start));
    let frames = wire.wait_for(1);
    assert_eq!(frames[0].channel, 7);
    assert_eq!(failure_kind(response(&frames[0])), ErrorKind::NotFound);
    assert!(lock(&agent.streams).is_empty());
}

#[test]
fn stream_ids_already_in_use_are_refused() {
    let (agent, wire) = agent();
    agent.register_streams(&spec("c", None, 5, None)).unwrap();
    agent.on_request(&request(
        1,
        &Request::StartProcess(spec("c", None, 5, None)),
    ));
    agent.on_request(&request(
        2,
        &Request::StartProcess(spec("c", Some(8), 8, None)),
    ));
    let frames = wire.frames();
    assert_eq!(
        failure_kind(response(&frames[0])),
        ErrorKind::InvalidRequest
    );
    assert_eq!(
        failure_kind(response(&frames[1])),
        ErrorKind::InvalidRequest
    );
    assert_eq!(lock(&agent.streams).len(), 1);
}

#[test]
fn data_eof_and_credit_reach_their_streams() {
    let (agent, _wire) = agent();
    agent
        .register_streams(&spec("c", Some(1), 2, None))
        .unwrap();
    agent.on_data(1, b"abc".to_vec());
    agent.on_eof(1);
    agent.on_credit(&Frame::credit(2, 100));
    agent.on_credit(&Frame::credit(99, 100));
    let Some(Stream::Input(queue)) = agent.stream(1) else {
        panic!("no input")
    };
    assert_eq!(queue.pop().as_deref(), Some(&b"abc"[..]));
    assert_eq!(queue.pop(), None);
    let Some(Stream::Output(window)) = agent.stream(2) else {
        panic!("no output")
    };
    assert_eq!(window.available(), u64::from(INITIAL_WINDOW) + 100);
}

#[test]
fn signals_and_resizes_of_unknown_processes_are_not_found() {
    let (agent, wire) = agent();
    let signal = Request::Signal {
        container: "c".into(),
        process: "init".into(),
        signal: 15,
    };
    let resize = Request::ResizeTerminal {
        container: "c".into(),
        process: "init".into(),
        rows: 1,
        cols: 1,
    };
    agent.on_request(&request(1, &signal));
    agent.on_request(&request(2, &resize));
    for frame in wire.frames() {
        assert_eq!(failure_kind(response(&frame)), ErrorKind::NotFound);
    }
}
