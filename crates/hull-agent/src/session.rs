//! The agent's hosts, one after another on the control port: the first
//! handshake, a host going away, and a restarted host taking over (its
//! `Hello` answered with [`RESYNC`] and the agent's, then `Reattach`).
//!
//! With the port's chardev a listening socket on the host, a read returns
//! end of file at once while no host is connected (and a write blocks), so
//! the end of a host is seen as end of file and a new one as bytes again.

use std::convert::Infallible;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Duration;

use hull_proto::{
    Frame, FrameError, FrameKind, Hello, ProcessState, Response, INITIAL_WINDOW, PROTOCOL_VERSION,
    RESYNC,
};

use crate::agent::{lock, Agent, Stream};
use crate::channel::Channel;
use crate::{error_chain, log};

/// How often the port is read while no host is connected: virtio-serial
/// tells of a host connecting by nothing but reads that block again.
const IDLE_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot duplicate the control port descriptor")]
    Duplicate(#[source] io::Error),
    #[error("cannot start the child reaper")]
    Reaper(#[source] io::Error),
    #[error("the host sent a {0:?} frame instead of its hello")]
    NotHello(FrameKind),
    #[error("the host's hello is malformed")]
    BadHello(#[source] FrameError),
    #[error(
        "the host ({software}) speaks protocol version {version}, this agent {PROTOCOL_VERSION}"
    )]
    VersionMismatch { version: u32, software: String },
    #[error("cannot read the control channel")]
    Read(#[source] FrameError),
}

/// Greets the first host on `port`, then serves it and every host after it;
/// returns only if the agent cannot start.
pub fn serve(port: File) -> Result<Infallible, SessionError> {
    let writer = port.try_clone().map_err(SessionError::Duplicate)?;
    let agent = Arc::new(Agent::new(Channel::new(writer)));
    crate::reaper::start(agent.clone()).map_err(SessionError::Reaper)?;
    // Blocks until the first host connects: virtio-serial holds writes until then.
    agent.channel.send(&hello_frame());
    agent.serve_hosts(&mut PortReader::new(port, IDLE_POLL))
}

fn hello_frame() -> Frame {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        software: format!("hull-agent {}", env!("CARGO_PKG_VERSION")),
    };
    Frame::json(FrameKind::Hello, 0, &hello)
}

/// The reading half of the port, across hosts.
pub(crate) struct PortReader<R> {
    inner: BufReader<R>,
    poll: Duration,
}

impl<R: Read> PortReader<R> {
    pub(crate) fn new(port: R, poll: Duration) -> Self {
        Self {
            inner: BufReader::new(port),
            poll,
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        Frame::read_from(&mut self.inner)
    }

    /// Returns once a host is connected and has sent something.
    fn wait_for_host(&mut self) {
        loop {
            match self.inner.fill_buf() {
                Ok(bytes) if !bytes.is_empty() => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => log!("cannot read the control port: {e}"),
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Skips what a refused host sends until it goes away: its bytes may not
    /// even be frames.
    fn discard_until_eof(&mut self) {
        loop {
            match self.inner.fill_buf() {
                Ok([]) => return,
                Ok(bytes) => {
                    let taken = bytes.len();
                    self.inner.consume(taken);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log!("cannot read the control port: {e}");
                    std::thread::sleep(self.poll);
                }
            }
        }
    }
}

/// What the agent expects of the host's next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The agent greeted the first host: its hello is the answer.
    FirstReply,
    /// A host is served. A hello now comes from a new host whose
    /// predecessor's end the agent missed: the end of file is seen only by
    /// a read made while no host is connected, and the reader may have been
    /// writing then.
    Serving,
    /// A host connected after the last one went away.
    NewHost,
}

impl Agent {
    /// Serves hosts one after another, for good.
    pub(crate) fn serve_hosts<R: Read>(self: &Arc<Self>, port: &mut PortReader<R>) -> ! {
        let mut phase = Phase::FirstReply;
        loop {
            let step = match port.next_frame() {
                Ok(Some(frame)) => self.on_frame(phase, frame).map(Some),
                // A host that died inside a frame left only its beginning.
                Ok(None) | Err(FrameError::Truncated) => Ok(None),
                Err(e) => Err(SessionError::Read(e)),
            };
            phase = match step {
                Ok(Some(next)) => next,
                Ok(None) => self.between_hosts(port),
                Err(e) => {
                    log!("{}; ignoring this host until it goes", error_chain(&e));
                    port.discard_until_eof();
                    self.between_hosts(port)
                }
            };
        }
    }

    /// Holds output until a host connects and asks for it again.
    fn between_hosts<R: Read>(&self, port: &mut PortReader<R>) -> Phase {
        log!("the host went away; waiting for the next one");
        // Output waits in the pipes rather than being written to no one.
        self.set_output_windows(0);
        port.wait_for_host();
        log!("a host connected");
        Phase::NewHost
    }

    fn on_frame(self: &Arc<Self>, phase: Phase, frame: Frame) -> Result<Phase, SessionError> {
        match (phase, frame.kind) {
            (Phase::FirstReply, FrameKind::Hello) => {
                check_hello(&frame)?;
                log!(
                    "the host said hello; serving ({:?} after boot)",
                    crate::boot::since_boot()
                );
            }
            (Phase::FirstReply, kind) => return Err(SessionError::NotHello(kind)),
            (_, FrameKind::Hello) => self.greet(&frame)?,
            (Phase::NewHost, _) => {
                // A clone's host takes over the template's channel this way.
                log!("a host carried on without a hello; serving it as the one before");
                self.set_output_windows(INITIAL_WINDOW);
                self.dispatch(frame);
            }
            (Phase::Serving, _) => self.dispatch(frame),
        }
        Ok(Phase::Serving)
    }

    /// Answers a new host's hello. The marker and the agent's hello go out
    /// in one write with the channel held, so no other frame lands between
    /// or inside them; output stays held until the host's `Reattach`.
    fn greet(&self, frame: &Frame) -> Result<(), SessionError> {
        let answered = self.channel.write_with(|| {
            self.set_output_windows(0);
            let mut bytes = RESYNC.to_vec();
            bytes.extend_from_slice(&hello_frame().encode());
            bytes
        });
        if let Err(e) = answered {
            log!("cannot answer the host's hello: {}", error_chain(&e));
        }
        // Answered even when refused, so the host can say which versions differ.
        check_hello(frame)?;
        log!("a new host said hello");
        Ok(())
    }

    /// Lists every process for a host that took over and gives every output
    /// stream a fresh window, with the channel held: data written after the
    /// answer counts against that window, and an exit is either listed or
    /// its event follows the answer.
    pub(crate) fn reattach(&self, request: u32) {
        self.channel.send_with(|| {
            self.set_output_windows(INITIAL_WINDOW);
            let listing = self.process_states();
            log!("a host reattached; processes listed: {}", listing.len());
            Frame::json(FrameKind::Response, request, &Response::Reattached(listing))
        });
    }

    fn process_states(&self) -> Vec<ProcessState> {
        let table = lock(&self.processes);
        let mut states: Vec<_> = table.by_name.values().map(|p| p.state(None)).collect();
        states.sort_by_key(|state| state.pid);
        states.extend(table.exited.iter().cloned());
        states
    }

    /// Sets the credit of every output stream; input streams go on as they were.
    fn set_output_windows(&self, credit: u32) {
        for stream in lock(&self.streams).values() {
            if let Stream::Output(window) = stream {
                window.reset(credit);
            }
        }
    }
}

fn check_hello(frame: &Frame) -> Result<(), SessionError> {
    let host: Hello = frame.parse().map_err(SessionError::BadHello)?;
    if host.version != PROTOCOL_VERSION {
        return Err(SessionError::VersionMismatch {
            version: host.version,
            software: host.software,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{ExitTracker, Process};
    use crate::testutil::{Script, Step, Wire};
    use hull_proto::{ExitStatus, Request, StreamId};
    use std::sync::Mutex;
    use std::time::Instant;

    const V: u32 = PROTOCOL_VERSION;

    fn hello(version: u32) -> Step {
        let hello = Hello {
            version,
            software: "hulld test".into(),
        };
        Step::Bytes(Frame::json(FrameKind::Hello, 0, &hello).encode())
    }

    fn request(id: u32, request: &Request) -> Step {
        Step::Bytes(Frame::json(FrameKind::Request, id, request).encode())
    }

    fn ping(id: u32) -> Step {
        request(id, &Request::Ping)
    }

    fn agent() -> (Arc<Agent>, Wire) {
        let wire = Wire::default();
        (Arc::new(Agent::new(Channel::new(wire.clone()))), wire)
    }

    /// Serves the hosts of `steps` on a thread that stays behind.
    fn serve(agent: &Arc<Agent>, steps: Vec<Step>) {
        let agent = agent.clone();
        let mut port = PortReader::new(Script::new(steps), Duration::from_millis(1));
        std::thread::spawn(move || agent.serve_hosts(&mut port));
    }

    /// What each host was sent: `Hello` for the agent's hello, the response
    /// (with its request id) for a response.
    fn summary(sessions: &[Vec<Frame>]) -> Vec<Vec<String>> {
        let describe = |frame: &Frame| match frame.kind {
            FrameKind::Hello => {
                let hello: Hello = frame.parse().unwrap();
                assert_eq!(hello.version, V);
                "Hello".to_owned()
            }
            FrameKind::Response => {
                let response: Response = frame.parse().unwrap();
                format!("{}:{response:?}", frame.channel)
            }
            kind => format!("{kind:?}"),
        };
        let summary = |session: &Vec<Frame>| session.iter().map(describe).collect();
        sessions.iter().map(summary).collect()
    }

    fn served(steps: Vec<Step>, expected: &[&[&str]]) {
        let (agent, wire) = agent();
        serve(&agent, steps);
        let frames = expected.iter().map(|s| s.len()).sum::<usize>();
        let sessions = wire.wait_for_sessions(|sessions| {
            sessions.len() >= expected.len()
                && sessions.iter().map(Vec::len).sum::<usize>() >= frames
        });
        // Anything else would have been written by now.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(summary(&wire.sessions()), summary(&sessions));
        assert_eq!(summary(&sessions), expected);
    }

    #[test]
    fn the_end_of_the_channel_leaves_the_agent_waiting_for_the_next_host() {
        served(
            vec![
                hello(V),
                ping(1),
                Step::Eof,
                Step::Eof,
                Step::Eof,
                hello(V),
                request(2, &Request::Reattach),
            ],
            &[&["1:Done"], &["Hello", "2:Reattached([])"]],
        );
    }

    #[test]
    fn a_hello_whose_hosts_predecessor_left_unseen_is_answered_with_the_marker() {
        served(
            vec![hello(V), ping(1), hello(V), ping(2)],
            &[&["1:Done"], &["Hello", "2:Done"]],
        );
    }

    #[test]
    fn a_first_host_of_another_version_is_ignored_until_it_goes() {
        served(
            vec![hello(V - 1), ping(1), Step::Eof, hello(V), ping(2)],
            &[&[], &["Hello", "2:Done"]],
        );
    }

    #[test]
    fn a_new_host_of_another_version_gets_the_agents_hello_and_nothing_more() {
        served(
            vec![
                hello(V),
                Step::Eof,
                hello(99),
                ping(1),
                Step::Eof,
                hello(V),
                ping(2),
            ],
            &[&[], &["Hello"], &["Hello", "2:Done"]],
        );
    }

    #[test]
    fn a_host_that_died_inside_a_frame_leaves_nothing_behind() {
        let Step::Bytes(ping) = ping(1) else {
            unreachable!()
        };
        served(
            vec![
                hello(V),
                Step::Bytes(ping[..5].to_vec()),
                Step::Eof,
                hello(V),
                self::ping(2),
            ],
            &[&[], &["Hello", "2:Done"]],
        );
    }

    #[test]
    fn a_host_that_sends_no_frames_is_ignored_until_it_goes() {
        served(
            vec![
                hello(V),
                Step::Bytes(vec![0xee; 20]),
                ping(1),
                Step::Eof,
                hello(V),
                ping(2),
            ],
            &[&[], &["Hello", "2:Done"]],
        );
    }

    #[test]
    fn a_host_that_carries_on_without_a_hello_is_served_as_the_one_before() {
        let (agent, wire) = agent();
        agent.register(&[(5, false)]).unwrap();
        let window = output_window(&agent, 5);
        window.consume(1000);
        serve(&agent, vec![hello(V), Step::Eof, ping(1)]);
        let sessions = wire.wait_for_sessions(|s| s[0].len() == 1);
        assert_eq!(summary(&sessions), [["1:Done"]]);
        assert_eq!(window.available(), u64::from(INITIAL_WINDOW));
    }

    fn output_window(agent: &Agent, id: StreamId) -> Arc<crate::flow::CreditWindow> {
        match agent.stream(id) {
            Some(Stream::Output(window)) => window,
            _ => panic!("no output stream {id}"),
        }
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn output_waits_while_no_host_listens() {
        let (agent, _wire) = agent();
        agent.register(&[(5, false)]).unwrap();
        serve(&agent, vec![hello(V), Step::Eof]);
        let window = output_window(&agent, 5);
        wait_until("the window closes", || window.available() == 0);
    }

    #[test]
    fn a_reattach_gives_output_a_fresh_window_and_leaves_input_alone() {
        let (agent, wire) = agent();
        agent.register(&[(5, false), (6, true)]).unwrap();
        agent.on_data(6, b"typed".to_vec());
        let reattach = request(2, &Request::Reattach);
        serve(&agent, vec![hello(V), Step::Eof, hello(V), reattach]);
        wire.wait_for_sessions(|s| s.len() == 2 && s[1].len() == 2);
        assert_eq!(
            output_window(&agent, 5).available(),
            u64::from(INITIAL_WINDOW)
        );
        let Some(Stream::Input(queue)) = agent.stream(6) else {
            panic!("no input stream")
        };
        assert_eq!(queue.pop().as_deref(), Some(&b"typed"[..]));
    }

    fn process(id: &str, pid: i32, stdout: StreamId) -> Arc<Process> {
        Arc::new(Process {
            container: "c".into(),
            id: id.into(),
            pid,
            pty: None,
            stdin: Some(stdout + 2),
            stdout,
            stderr: Some(stdout + 1),
            tracker: Mutex::new(ExitTracker::new(0)),
        })
    }

    fn listing(wire: &Wire, agent: &Agent, request: u32) -> Vec<ProcessState> {
        agent.reattach(request);
        let frames = wire.frames();
        let last = frames.last().unwrap();
        assert_eq!((last.kind, last.channel), (FrameKind::Response, request));
        match last.parse().unwrap() {
            Response::Reattached(states) => states,
            other => panic!("expected a listing, got {other:?}"),
        }
    }

    #[test]
    fn a_listing_names_running_processes_by_pid_then_exited_ones() {
        let (agent, wire) = agent();
        let (a, b, c) = (
            process("a", 30, 1),
            process("b", 20, 4),
            process("c", 40, 7),
        );
        {
            let mut table = lock(&agent.processes);
            for p in [&a, &b, &c] {
                let key = (p.container.clone(), p.id.clone());
                table.by_name.insert(key, p.clone());
            }
        }
        agent.report_exit(&c, ExitStatus::Code(3));
        let states = listing(&wire, &agent, 9);
        assert_eq!(
            states,
            [
                b.state(None),
                a.state(None),
                c.state(Some(ExitStatus::Code(3)))
            ]
        );
        assert_eq!(states[0].stdout, 4);
        assert_eq!(states[0].stderr, Some(5));
        assert_eq!(states[0].stdin, Some(6));
        assert_eq!(wire.frames()[0].kind, FrameKind::Event);
    }

    #[test]
    fn a_listing_keeps_only_the_last_exits() {
        let (agent, wire) = agent();
        for pid in 0..300 {
            agent.report_exit(&process(&format!("p{pid}"), pid, 1), ExitStatus::Code(0));
        }
        let states = listing(&wire, &agent, 1);
        assert_eq!(states.len(), crate::agent::EXITED_KEPT);
        assert_eq!(states[0].pid, 300 - crate::agent::EXITED_KEPT as i32);
        assert_eq!(states.last().unwrap().pid, 299);
    }

    #[test]
    fn no_frame_lands_inside_the_marker_and_the_agents_hello() {
        let (agent, wire) = agent();
        let spammer = {
            let channel = agent.channel.clone();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    channel.send(&Frame::data(i, &[7u8; 100]));
                }
            })
        };
        let Step::Bytes(bytes) = hello(V) else {
            unreachable!()
        };
        let hello = Frame::read_from(&mut bytes.as_slice()).unwrap().unwrap();
        for _ in 0..50 {
            agent.greet(&hello).unwrap();
        }
        spammer.join().unwrap();
        let sessions = wire.sessions();
        assert_eq!(sessions.len(), 51);
        for session in &sessions[1..] {
            assert_eq!(session[0].kind, FrameKind::Hello);
        }
        let data: usize = sessions
            .iter()
            .flatten()
            .filter(|f| f.kind == FrameKind::Data)
            .count();
        assert_eq!(data, 2000);
    }
}
