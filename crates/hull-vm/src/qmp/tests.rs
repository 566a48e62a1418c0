use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

/// The VM the fake QEMUs run, as errors name it.
const VM: &str = "c-4f2a";

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
    let mut qmp = Qmp::handshake(client, VM).await.unwrap();
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
    // The rest of the flood is never read as an answer.
    let next = qmp.execute("query-status", None).await.unwrap_err();
    assert!(matches!(next, QmpError::GivenUp { .. }), "{next}");
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
    let qmp = Qmp::handshake(client, VM).await.unwrap();
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

/// A fake QEMU listening on a Unix socket as QEMU's QMP does: it greets,
/// takes `qmp_capabilities`, then plays `rest` on the accepted stream.
/// Returns the connected client.
async fn qemu_on_a_socket<F, Fut>(rest: F) -> (Qmp, tokio::task::JoinHandle<()>)
where
    F: FnOnce(UnixStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp");
    let listener = UnixListener::bind(&path).unwrap();
    let qemu = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        stream.write_all(b"{\"QMP\": {}}\n").await.unwrap();
        let _ = stream.read(&mut buf).await.unwrap();
        stream.write_all(b"{\"return\": {}}\n").await.unwrap();
        rest(stream).await;
    });
    let stream = UnixStream::connect(&path).await.unwrap();
    let qmp = Qmp::handshake(stream, VM).await.unwrap();
    drop(dir);
    (qmp, qemu)
}

#[tokio::test(start_paused = true)]
async fn a_qemu_that_never_answers_fails_the_command_at_its_deadline_naming_it_and_the_vm() {
    let (mut qmp, qemu) = qemu_on_a_socket(|mut stream| async move {
        // Reads the command, and holds the connection open without a word.
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        std::future::pending::<()>().await;
    })
    .await;
    let started = tokio::time::Instant::now();
    let err = qmp
        .execute("balloon", Some(json!({ "value": 1 })))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, QmpError::Deadline { command, vm, waited }
            if command == "balloon" && vm == VM && *waited == deadline("balloon")),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("balloon") && message.contains(VM),
        "{message}"
    );
    // On the test's paused clock: it waited the deadline, and no longer.
    assert_eq!(started.elapsed().as_secs(), deadline("balloon").as_secs());
    // The connection is given up: the next command fails at once.
    let again = qmp.execute("query-status", None).await.unwrap_err();
    assert!(matches!(again, QmpError::GivenUp { .. }), "{again}");
    assert!(again.to_string().contains(VM), "{again}");
    assert_eq!(started.elapsed().as_secs(), deadline("balloon").as_secs());
    qemu.abort();
}

#[tokio::test(start_paused = true)]
async fn an_answer_after_the_deadline_is_never_read_as_the_next_commands() {
    let late = deadline("device_del") + Duration::from_secs(1);
    let (mut qmp, qemu) = qemu_on_a_socket(move |mut stream| async move {
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await.unwrap();
        tokio::time::sleep(late).await;
        // Half an answer, then the rest: a reader that took either for
        // the next command's answer would be fooled.
        stream.write_all(b"{\"return\": {\"sta").await.unwrap();
        stream
            .write_all(b"tus\": \"running\"}}\n{\"return\": {}}\n")
            .await
            .unwrap();
        // Whatever comes next is never answered.
        let _ = stream.read(&mut buf).await;
        std::future::pending::<()>().await;
    })
    .await;
    let err = qmp
        .execute("device_del", Some(json!({ "id": "dev-rootfs1" })))
        .await
        .unwrap_err();
    assert!(matches!(err, QmpError::Deadline { .. }), "{err}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    for command in ["query-status", "blockdev-del"] {
        let err = qmp.execute(command, None).await.unwrap_err();
        assert!(
            matches!(&err, QmpError::GivenUp { why, .. } if why.contains("device_del")),
            "{err}"
        );
    }
    let waited = qmp.wait_event("DEVICE_DELETED", Duration::from_secs(1), deleted("x"));
    assert!(matches!(waited.await, Err(QmpError::GivenUp { .. })));
    qemu.abort();
}

#[tokio::test(start_paused = true)]
async fn a_migration_answered_late_but_within_its_longer_deadline_succeeds() {
    let slow = deadline("balloon") + Duration::from_secs(20);
    let (mut qmp, qemu) = qemu_on_a_socket(move |mut stream| async move {
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await.unwrap();
        tokio::time::sleep(slow).await;
        stream.write_all(b"{\"return\": {}}\n").await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    qmp.execute("migrate", Some(json!({ "uri": "fd:migration" })))
        .await
        .unwrap();
    qemu.abort();
}

#[tokio::test(start_paused = true)]
async fn a_qemu_that_never_greets_fails_the_handshake_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp");
    let listener = UnixListener::bind(&path).unwrap();
    let qemu = tokio::spawn(async move {
        let (_stream, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    let stream = UnixStream::connect(&path).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = match Qmp::handshake(stream, VM).await {
        Ok(_) => panic!("a silent QEMU was greeted"),
        Err(err) => err,
    };
    assert!(
        matches!(&err, QmpError::Deadline { command, .. } if command == "greeting"),
        "{err}"
    );
    assert_eq!(started.elapsed(), GREETING);
    qemu.abort();
}

#[tokio::test]
async fn an_error_answer_leaves_the_connection_usable() {
    let (mut qmp, mut qemu) = connected().await;
    qemu.write_all(
        b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n{\"return\": 7}\n",
    )
    .await
    .unwrap();
    let err = qmp.execute("device_del", None).await.unwrap_err();
    assert!(matches!(err, QmpError::Command { .. }), "{err}");
    assert_eq!(qmp.execute("query-status", None).await.unwrap(), 7);
}
