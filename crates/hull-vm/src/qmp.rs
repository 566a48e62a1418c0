//! A minimal client of QEMU's machine protocol (QMP): one command at a
//! time, and the events QEMU sends meanwhile kept for a caller that waits
//! for one.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

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
    #[error("QEMU sent a QMP message longer than {0} bytes: its connection is closed")]
    TooLong(usize),
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
}

impl Qmp {
    /// Reads QEMU's greeting and leaves capability negotiation mode.
    pub async fn handshake(stream: UnixStream) -> Result<Self, QmpError> {
        let (read, writer) = stream.into_split();
        let mut qmp = Self {
            reader: BufReader::new(read),
            writer,
            line: Vec::new(),
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Malformed(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs a command and returns its `return` value; events in between
    /// are kept for [`Qmp::wait_event`].
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let line = request_line(command, arguments);
        self.writer.write_all(line.as_bytes()).await?;
        self.reply(command).await
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
        let line = request_line(command, arguments);
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
        waited.await.unwrap_or_else(|_| {
            Err(QmpError::NoEvent {
                event: name.to_owned(),
                waited: timeout,
            })
        })
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
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn commands_skip_events_and_surface_errors() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            server
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("qmp_capabilities"));
            server.write_all(b"{\"return\": {}}\n").await.unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("query-status"));
            server
                .write_all(b"{\"event\": \"RESUME\"}\n{\"return\": {\"status\": \"running\"}}\n")
                .await
                .unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server
                .write_all(
                    b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no such device\"}}\n",
                )
                .await
                .unwrap();
        });
        let mut qmp = Qmp::handshake(client).await.unwrap();
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "running");
        let err = qmp
            .execute("device_del", Some(json!({"id": "x"})))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no such device"));
        peer.await.unwrap();
    }

    #[tokio::test]
    async fn a_qemu_that_floods_its_answer_is_cut_off_at_the_bound() {
        let (mut qmp, mut qemu) = connected().await;
        let flood = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let _ = qemu.read(&mut buf).await.unwrap();
            let chunk = vec![b' '; 64 * 1024];
            // Past the bound, and no newline: the client must stop reading.
            for _ in 0..(2 * MAX_MESSAGE / chunk.len()) {
                if qemu.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            qemu
        });
        let err = qmp.execute("query-status", None).await.unwrap_err();
        assert!(matches!(err, QmpError::TooLong(MAX_MESSAGE)), "{err}");
        assert!(qmp.line.capacity() <= MAX_MESSAGE);
        drop(qmp);
        flood.await.unwrap();
    }

    /// A client past its handshake, and the socket of its "QEMU".
    async fn connected() -> (Qmp, UnixStream) {
        let (client, mut server) = UnixStream::pair().unwrap();
        let greeter = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            server.write_all(b"{\"QMP\": {}}\n").await.unwrap();
            let _ = server.read(&mut buf).await.unwrap();
            server.write_all(b"{\"return\": {}}\n").await.unwrap();
            server
        });
        let qmp = Qmp::handshake(client).await.unwrap();
        (qmp, greeter.await.unwrap())
    }

    fn deleted(id: &'static str) -> impl Fn(&Value) -> bool {
        move |data| data["device"] == id
    }

    #[tokio::test]
    async fn an_event_sent_before_the_answer_is_kept_for_its_waiter() {
        let (mut qmp, mut qemu) = connected().await;
        let reply = concat!(
            r#"{"event": "DEVICE_DELETED", "data": {"device": "other"}}"#,
            "\n",
            r#"{"event": "DEVICE_DELETED", "data": {"device": "dev-rootfs1"}}"#,
            "\n",
            r#"{"return": {}}"#,
            "\n"
        );
        qemu.write_all(reply.as_bytes()).await.unwrap();
        qmp.execute("device_del", Some(json!({"id": "dev-rootfs1"})))
            .await
            .unwrap();
        let (second, moment) = (Duration::from_secs(1), Duration::from_millis(50));
        let data = qmp
            .wait_event("DEVICE_DELETED", second, deleted("dev-rootfs1"))
            .await
            .unwrap();
        assert_eq!(data["device"], "dev-rootfs1");
        // Taken once; the other device's event is still there.
        let again = qmp.wait_event("DEVICE_DELETED", moment, deleted("dev-rootfs1"));
        assert!(matches!(again.await, Err(QmpError::NoEvent { .. })));
        let other = qmp.wait_event("DEVICE_DELETED", second, deleted("other"));
        assert_eq!(other.await.unwrap()["device"], "other");
    }

    #[tokio::test]
    async fn a_wait_that_times_out_mid_line_loses_no_byte() {
        let (mut qmp, mut qemu) = connected().await;
        qemu.write_all(b"{\"event\": \"RESUME\"}\n{\"event\": \"DEVICE_DEL")
            .await
            .unwrap();
        let early = qmp.wait_event("DEVICE_DELETED", Duration::from_millis(100), deleted("d"));
        assert!(matches!(early.await, Err(QmpError::NoEvent { .. })));
        qemu.write_all(b"ETED\", \"data\": {\"device\": \"d\"}}\n")
            .await
            .unwrap();
        let data = qmp
            .wait_event("DEVICE_DELETED", Duration::from_secs(5), deleted("d"))
            .await
            .unwrap();
        assert_eq!(data["device"], "d");
        assert_eq!(qmp.events.len(), 1, "the RESUME event is kept");
    }

    /// Receives one message and the descriptor that came with it, as QEMU does.
    fn receive_with_fd(socket: RawFd) -> (String, RawFd) {
        let mut data = vec![0u8; 4096];
        let mut control = vec![0u8; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: an all-zero msghdr is valid; recvmsg writes within the
        // buffers it is given, which outlive the call; the first header is
        // read only when the kernel filled it.
        unsafe {
            let mut message: libc::msghdr = std::mem::zeroed();
            message.msg_iov = &mut iov;
            message.msg_iovlen = 1;
            message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            message.msg_controllen = control.len() as _;
            let n = libc::recvmsg(socket, &mut message, 0);
            assert!(n > 0);
            let header = libc::CMSG_FIRSTHDR(&message);
            assert!(!header.is_null(), "no descriptor came");
            assert_eq!((*header).cmsg_type, libc::SCM_RIGHTS);
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header) as *const RawFd);
            (
                String::from_utf8_lossy(&data[..n as usize]).into_owned(),
                fd,
            )
        }
    }

    #[tokio::test]
    async fn a_descriptor_travels_with_its_command() {
        use std::io::{Read, Seek, Write};
        let (mut qmp, qemu) = connected().await;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"state").unwrap();
        let qemu = qemu.into_std().unwrap();
        qemu.set_nonblocking(false).unwrap();
        let peer = std::thread::spawn(move || {
            let (line, fd) = receive_with_fd(qemu.as_raw_fd());
            assert!(line.contains("\"getfd\"") && line.ends_with('\n'), "{line}");
            (&qemu).write_all(b"{\"return\": {}}\n").unwrap();
            // SAFETY: the descriptor just received is ours alone.
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        });
        let fdname = json!({ "fdname": "migration" });
        qmp.execute_with_fd("getfd", Some(fdname), std::os::fd::AsFd::as_fd(&file))
            .await
            .unwrap();
        let mut received = peer.join().unwrap();
        received.rewind().unwrap();
        let mut text = String::new();
        received.read_to_string(&mut text).unwrap();
        assert_eq!(text, "state", "the same file");
    }
}
