//! Whatever a guest sends on its control channel, the host's side of it
//! (dispatch of answers, output, credit and events) never panics, never
//! holds more of the guest's output than the credit it granted, and keeps
//! no waiter past the channel's end. The input is the guest's whole
//! stream after its hello, fed in pieces while the host reads its output.
#![no_main]

use hull_proto::{Frame, FrameKind, Hello, Request, INITIAL_WINDOW, PROTOCOL_VERSION};
use hull_runtime::agent::{AgentClient, MAX_IN_FLIGHT};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(serve(data));
});

async fn serve(data: &[u8]) {
    let (host, mut guest) = tokio::io::duplex(64 * 1024);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        software: "fuzz".into(),
    };
    guest
        .write_all(&Frame::json(FrameKind::Hello, 0, &hello).encode())
        .await
        .unwrap();
    let client = AgentClient::handshake("fuzz", host).await.unwrap();
    let exit = client.watch_exit("c", "init");
    let outputs = [1u32, 2, 3].map(|stream| client.open_output(stream));
    let input = client.open_input(4);
    let asks: Vec<_> = [Request::Ping, Request::Reattach]
        .into_iter()
        .map(|request| {
            let client = client.clone();
            tokio::spawn(async move { client.request(&request).await })
        })
        .collect();
    let readers: Vec<_> = outputs
        .into_iter()
        .map(|mut output| {
            let client = client.clone();
            tokio::spawn(async move {
                while output.recv().await.is_some() {
                    // Three streams, each within its window (doubled at most
                    // by a reattach's reset).
                    assert!(client.buffered() <= 3 * 2 * INITIAL_WINDOW as usize);
                }
            })
        })
        .collect();
    let writer = tokio::spawn(async move { input.write(&[0; 300_000]).await });
    // The guest's side: send the input in pieces, drain what the host sends.
    let (mut from_host, mut to_host) = tokio::io::split(guest);
    let drain = tokio::spawn(async move {
        let mut sink = vec![0; 64 * 1024];
        while from_host.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    for piece in data.chunks(4096) {
        if to_host.write_all(piece).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    // The guest's end: the host reads EOF and closes the channel.
    let _ = to_host.shutdown().await;
    for ask in asks {
        let _ = ask.await.unwrap();
    }
    for reader in readers {
        reader.await.unwrap();
    }
    assert!(client.in_flight() <= MAX_IN_FLIGHT);
    let _ = exit.await;
    writer.abort();
    drain.abort();
    assert_eq!(client.in_flight(), 0);
    assert!(client.is_closed());
}
