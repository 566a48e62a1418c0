//! A minimal client of QEMU's machine protocol (QMP): one command at a
//! time, and the events QEMU sends meanwhile kept for a caller that waits
//! for one. QEMU is not trusted to answer: every command has a deadline
//! ([`deadline`]), and a connection that failed one way or another (a
//! deadline, a message past its bound, a broken stream) is given up, so
//! an answer that comes late is never read as the next command's.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

mod deadline;
pub use deadline::{deadline, GREETING};

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP connection failed")]
    Io(#[from] std::io::Error),
    #[error("QEMU closed its QMP connection")]
    Closed,
    #[error("QEMU sent malformed QMP: {0}")]
    Malformed(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QEMU sent no {event} event within {waited:?}")]
    NoEvent { event: String, waited: Duration },
    #[error("QEMU sent a QMP message longer than {0} bytes: its QMP connection is given up")]
    TooLong(usize),
    #[error("the QEMU of VM {vm} sent no answer to QMP {command} within {}s: its QMP connection is given up", .waited.as_secs())]
    Deadline {
        vm: String,
        command: String,
        waited: Duration,
    },
    #[error("cannot run QMP {command}: the QMP connection of VM {vm} was given up ({why})")]
    GivenUp {
        vm: String,
        command: String,
        why: String,
    },
}

impl QmpError {
    /// Whether the connection may carry another command after this: only
    /// when QEMU answered, with an error of its own, or the wait was for
    /// an event (which reads whole lines only). After anything else a
    /// reply may be half read, or still to come.
    fn leaves_connection_usable(&self) -> bool {
        matches!(self, Self::Command { .. } | Self::NoEvent { .. })
    }
}

/// The longest QMP message read. QEMU's answers to Hull's commands and its
/// events are a few KiB; a confined QEMU is not trusted with more of
/// hulld's memory than this.
const MAX_MESSAGE: usize = 1 << 20;

/// Events kept for [`Qmp::wait_event`]; older ones are dropped, as nobody
/// waits for them.
const EVENTS_KEPT: usize = 64;

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The line being read, kept across a cancelled read so no byte is
    /// lost (`read_until` appends what it read before it was cancelled;
    /// `read_line` gives no such promise).
    line: Vec<u8>,
    /// Events read while no one waited for them, oldest first.
    events: VecDeque<Value>,
    /// The VM this QEMU runs, for errors.
    vm: String,
    /// Why the connection was given up, once it was.
    given_up: Option<String>,
}

impl Qmp {
    /// Reads QEMU's greeting and leaves capability negotiation mode; `vm`
    /// names the VM in errors. The greeting too has a deadline.
    pub async fn handshake(stream: UnixStream, vm: &str) -> Result<Self, QmpError> {
        let (read, writer) = stream.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer,
            line: Vec::new(),
            events: VecDeque::new(),
            vm: vm.to_owned(),
            given_up: None,
        };
        let greeted = tokio::time::timeout(GREETING, qmp.read_message()).await;
        let greeting = qmp.settle("greeting", GREETING, greeted)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Malformed(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value; events in between
    /// are kept for [`Qmp::wait_event`]. Fails at the command's
    /// [`deadline`] if QEMU has not answered.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.usable(command)?;
        let line = request_line(command, arguments);
        let waited = deadline(command);
        let answer = tokio::time::timeout(waited, async {
            self.writer.write_all(line.as_bytes()).await?;
            self.reply(command).await
        })
        .await;
        self.settle(command, waited, answer)
    }

    /// Fails at once if the connection was given up.
    fn usable(&self, command: &str) -> Result<(), QmpError> {
        match &self.given_up {
            Some(why) => Err(QmpError::GivenUp {
                vm: self.vm.clone(),
                command: command.to_owned(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The outcome of an exchange with QEMU bounded by `waited`; one that
    /// leaves the stream in an unknown place gives the connection up.
    fn settle(
        &mut self,
        command: &str,
        waited: Duration,
        answer: Result<Result<Value, QmpError>, tokio::time::error::Elapsed>,
    ) -> Result<Value, QmpError> {
        let err = match answer {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) => err,
            Err(_) => QmpError::Deadline {
                vm: self.vm.clone(),
                command: command.to_owned(),
                waited,
            },
        };
        if !err.leaves_connection_usable() {
            tracing::warn!(vm = %self.vm, command, error = %err, "giving up QEMU's QMP connection");
            self.given_up = Some(format!("{command} failed: {err}"));
            // What QEMU sent of a line is never completed.
            self.line = Vec::new();
        }
        Err(err)
    }

    /// Runs a command that takes a descriptor (`getfd`, `add-fd`): `fd`
    /// travels with the command's first bytes (`SCM_RIGHTS`), and QEMU
    /// holds its own copy once the command returns.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> Result<Value, QmpError> {
        self.usable(command)?;
        let line = request_line(command, arguments);
        let waited = deadline(command);
        let answer = tokio::time::timeout(waited, async {
            let stream: &UnixStream = self.writer.as_ref();
            let sent = loop {
                stream.writable().await?;
                let sent = stream.try_io(Interest::WRITABLE, || {
                    send_with_fd(stream.as_raw_fd(), line.as_bytes(), fd.as_raw_fd())
                });
                match sent {
                    Ok(sent) => break sent,
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(err) => return Err(err.into()),
                }
            };
            self.writer.write_all(&line.as_bytes()[sent..]).await?;
            self.reply(command).await
        })
        .await;
        self.settle(command, waited, answer)
    }

    /// Reads up to the answer to `command`, keeping events.
    async fn reply(&mut self, command: &str) -> Result<Value, QmpError> {
        loop {
            let message = self.read_message().await?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| error[name].as_str().unwrap_or("?").to_string();
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            // Anything else is an asynchronous event.
            self.keep_event(message);
        }
    }

    /// Waits up to `timeout` for the event `name` whose `data` satisfies
    /// `wanted`, and returns that data. It may have come already, while a
    /// command ran (QEMU sends `DEVICE_DELETED` before it answers the
    /// `device_del` of a device that goes at once).
    pub async fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, QmpError> {
        self.usable(name)?;
        let is_it = |event: &Value| event["event"] == name && wanted(&event["data"]);
        if let Some(index) = self.events.iter().position(is_it) {
            let event = self.events.remove(index).expect("found at this index");
            return Ok(event["data"].clone());
        }
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let message = self.read_message().await?;
                if is_it(&message) {
                    return Ok(message["data"].clone());
                }
                self.keep_event(message);
            }
        });
        let waited = waited.await.unwrap_or_else(|_| {
            Err(QmpError::NoEvent {
                event: name.to_owned(),
                waited: timeout,
            })
        });
        self.settle(name, timeout, Ok(waited))
    }

    fn keep_event(&mut self, message: Value) {
        if message.get("event").is_none() {
            return;
        }
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(message);
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        loop {
            // Cancellation-safe: bytes move from the buffer to the line
            // with no await between.
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Err(QmpError::Closed);
            }
            let end = available.iter().position(|&b| b == b'\n');
            let taken = end.map_or(available.len(), |i| i + 1);
            if self.line.len() + taken > MAX_MESSAGE {
                self.line = Vec::new();
                return Err(QmpError::TooLong(MAX_MESSAGE));
            }
            self.line.extend_from_slice(&available[..taken]);
            self.reader.consume(taken);
            if end.is_some() {
                break;
            }
        }
        let line = std::mem::take(&mut self.line);
        serde_json::from_slice(&line)
            .map_err(|_| QmpError::Malformed(String::from_utf8_lossy(&line).trim().to_string()))
    }
}

fn request_line(command: &str, arguments: Option<Value>) -> String {
    let mut request = json!({ "execute": command });
    if let Some(arguments) = arguments {
        request["arguments"] = arguments;
    }
    let mut line = request.to_string();
    line.push('\n');
    line
}

/// Sends `bytes` (at least one) on the socket `socket` with `fd` attached,
/// and returns how many bytes went.
fn send_with_fd(socket: RawFd, bytes: &[u8], fd: RawFd) -> std::io::Result<usize> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty message.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    message.msg_controllen = space as _;
    // SAFETY: the control buffer is CMSG_SPACE bytes for one descriptor, so
    // CMSG_FIRSTHDR is non-null and its data holds one RawFd; sendmsg reads
    // `bytes` and `control`, which outlive the call, and writes nothing.
    let sent = unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut RawFd, fd);
        libc::sendmsg(socket, &message, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests;
