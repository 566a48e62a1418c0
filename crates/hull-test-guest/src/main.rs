//! A hostile guest for the end-to-end tests, packed into an initramfs in
//! place of hull-agent (`HULL_AGENT`), so that the real agent carries no
//! hostile code. It greets the host and answers as an agent would; the
//! first argument of the process it is asked to start picks its attack:
//!
//! - `flood`: writes the process's stdout without end, ignoring the credit
//!   the host granted;
//! - `silent`: answers that start, then never reads or answers again;
//! - `console`: writes numbered lines to the serial console without end,
//!   and runs until it is signalled;
//! - anything else: a process that runs until it is signalled.

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hull_agent::{boot, log, port};
use hull_proto::{
    Event, ExitStatus, Frame, FrameKind, Hello, ProcessSpec, Request, Response, MAX_DATA_CHUNK,
    PROTOCOL_VERSION,
};

type Port = Arc<Mutex<File>>;

fn main() {
    if std::process::id() == 1 {
        if let Err(e) = boot::init_system() {
            log!("test guest: {e}");
        }
    }
    let file = match port::open(hull_proto::CONTROL_PORT_NAME, Duration::from_secs(10)) {
        Ok(file) => file,
        Err(e) => {
            log!("test guest: {e}");
            boot::power_off();
        }
    };
    let mut reader = file.try_clone().expect("the port's descriptor duplicates");
    let port: Port = Arc::new(Mutex::new(file));
    let hello = Hello {
        version: PROTOCOL_VERSION,
        software: "hull-test-guest".into(),
    };
    send(&port, &Frame::json(FrameKind::Hello, 0, &hello));
    let mut running: Option<ProcessSpec> = None;
    loop {
        // A host that goes away leaves the port to read nothing for a while.
        let frame = match Frame::read_from(&mut reader) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => {
                log!("test guest: {e}");
                continue;
            }
        };
        if frame.kind != FrameKind::Request {
            continue;
        }
        let Ok(request) = frame.parse::<Request>() else {
            continue;
        };
        match request {
            Request::StartProcess(spec) => {
                respond(&port, frame.channel, &Response::Started { pid: 100 });
                match spec.args.first().map(String::as_str) {
                    Some("flood") => flood(&port, spec.stdout),
                    Some("console") => {
                        flood_console();
                        running = Some(spec);
                    }
                    Some("silent") => {
                        log!("test guest: silent from now on");
                        loop {
                            std::thread::sleep(Duration::from_secs(3600));
                        }
                    }
                    _ => running = Some(spec),
                }
            }
            Request::Signal { signal, .. } => {
                respond(&port, frame.channel, &Response::Done);
                if let Some(spec) = running.take() {
                    exit(&port, &spec, ExitStatus::Signal(signal));
                }
            }
            Request::Reattach => respond(&port, frame.channel, &Response::Reattached(vec![])),
            Request::Shutdown => {
                respond(&port, frame.channel, &Response::Done);
                boot::power_off();
            }
            _ => respond(&port, frame.channel, &Response::Done),
        }
    }
}

/// Writes stdout past any credit, from a thread of its own, until the host
/// closes the channel (the port then takes nothing more).
fn flood(port: &Port, stream: u32) {
    let port = port.clone();
    std::thread::spawn(move || {
        let chunk = Frame::data(stream, &[b'x'; MAX_DATA_CHUNK]).encode();
        let mut sent: u64 = 0;
        loop {
            if port.lock().unwrap().write_all(&chunk).is_err() {
                break;
            }
            sent += MAX_DATA_CHUNK as u64;
            if sent.is_multiple_of(64 << 20) {
                log!("test guest: flooded {} MiB", sent >> 20);
            }
        }
        log!("test guest: the flood stopped after {sent} bytes");
    });
}

/// Writes numbered lines of 1 KiB to the console (stderr) without end, from
/// a thread of its own: the host's copy of the console must stay capped.
fn flood_console() {
    std::thread::spawn(|| {
        let padding = "x".repeat(1000);
        for line in 0u64.. {
            let mut console = std::io::stderr().lock();
            let _ = writeln!(console, "console flood {line:010} {padding}");
        }
    });
}

fn exit(port: &Port, spec: &ProcessSpec, status: ExitStatus) {
    for stream in std::iter::once(spec.stdout).chain(spec.stderr) {
        send(port, &Frame::eof(stream));
    }
    let exited = Event::ProcessExited {
        container: spec.container.clone(),
        process: spec.id.clone(),
        status,
    };
    send(port, &Frame::json(FrameKind::Event, 0, &exited));
}

fn respond(port: &Port, id: u32, response: &Response) {
    send(port, &Frame::json(FrameKind::Response, id, response));
}

fn send(port: &Port, frame: &Frame) {
    let mut port = port.lock().unwrap();
    if let Err(e) = port.write_all(&frame.encode()) {
        log!("test guest: cannot write to the port: {e}");
    }
    let _ = port.flush();
}
