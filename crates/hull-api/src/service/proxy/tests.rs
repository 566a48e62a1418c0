//! The proxy on the host's loopback: replicas are small servers on
//! 127.0.0.2 and 127.0.0.3 (one port, as a service's replicas share
//! theirs), clients are plain sockets.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hull_net::service::{Algorithm, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{serve, Limits, Pool, Target};

/// How a test replica behaves.
#[derive(Clone, Copy)]
enum Replica {
    /// Answers with its address and the request's head; `GET /slow`
    /// after a while.
    Echo,
    /// Closes without answering.
    Fails,
}

async fn replica(listener: TcpListener, behaviour: Replica) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            if head.starts_with(b"GET /trickle ") {
                // Half the body now, the rest in a while.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nfirst-")
                    .await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let _ = stream.write_all(b"second").await;
                return;
            }
            if head.starts_with(b"POST /upload ") {
                // Answers on the body's first bytes, before the rest is sent.
                let body_start = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let mut got = head.len() - body_start;
                while got < 5 {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ngot!",
                    )
                    .await;
                return;
            }
            match behaviour {
                Replica::Fails => return,
                Replica::Echo if head.starts_with(b"GET /slow ") => {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                Replica::Echo => {}
            }
            let me = stream.local_addr().unwrap().ip();
            let body = format!("{me}\n{}", String::from_utf8_lossy(&head));
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        });
    }
}

struct Fixture {
    proxy: SocketAddr,
    pool: Arc<Pool>,
    replicas: Vec<Ipv4Addr>,
}

/// Replicas on 127.0.0.2.. behaving as `behaviours`, and a proxy before
/// them on 127.0.0.1.
async fn fixture(
    protocol: Protocol,
    algorithm: Algorithm,
    behaviours: &[Replica],
    limits: Limits,
) -> Fixture {
    let mut port = 0;
    let mut replicas = Vec::new();
    for (i, behaviour) in behaviours.iter().enumerate() {
        let address = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i).unwrap());
        let listener = TcpListener::bind((address, port)).await.unwrap();
        port = listener.local_addr().unwrap().port();
        tokio::spawn(replica(listener, *behaviour));
        replicas.push(address);
    }
    let pool = Arc::new(Pool::new(algorithm, false));
    pool.set(replicas.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let target = Target {
        name: "web".into(),
        protocol,
        port,
        pool: pool.clone(),
        limits: Arc::new(limits),
    };
    tokio::spawn(serve(listener, target));
    Fixture {
        proxy,
        pool,
        replicas,
    }
}

/// Sends `request` on a new connection: the whole answer.
async fn exchange(proxy: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn requests_spread_and_carry_the_client() {
    let f = fixture(
        Protocol::Http,
        Algorithm::Roundrobin,
        &[Replica::Echo, Replica::Echo],
        Limits::default(),
    )
    .await;
    let mut counts = [0; 2];
    for _ in 0..6 {
        let answer = exchange(f.proxy, b"GET /x HTTP/1.1\r\nHost: web\r\nX-Forwarded-For: 192.0.2.7\r\nConnection: close, x-secret\r\nX-Secret: 1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let who: Ipv4Addr = body.lines().next().unwrap().parse().unwrap();
        counts[f.replicas.iter().position(|r| *r == who).unwrap()] += 1;
        let head = body.to_ascii_lowercase();
        assert!(
            head.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1\r\n"),
            "{body}"
        );
        assert!(!head.contains("x-secret"), "a hop's header went on: {body}");
    }
    assert_eq!(counts, [3, 3]);
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_proxy_goes_on() {
    let f = fixture(
        Protocol::Http,
        Algorithm::Roundrobin,
        &[Replica::Echo],
        Limits::default(),
    )
    .await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = exchange(f.proxy, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let mut many = String::from("GET / HTTP/1.1\r\nHost: web\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let answer = exchange(f.proxy, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(exchange(f.proxy, GET).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_failing_replica_is_a_502_that_says_so_and_none_is_a_503() {
    let f = fixture(
        Protocol::Http,
        Algorithm::Roundrobin,
        &[Replica::Fails],
        Limits::default(),
    )
    .await;
    let answer = exchange(f.proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(
        answer.contains("replica 127.0.0.2:") && answer.contains("of service web failed"),
        "{answer}"
    );
    f.pool.set(Vec::new());
    let answer = exchange(f.proxy, GET).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("service web has no healthy replica"),
        "{answer}"
    );
    // Nothing stays counted in flight.
    assert!(f.pool.open().iter().all(|(_, open)| *open == 0));
}

#[tokio::test]
async fn leastconn_sends_past_a_busy_replica() {
    let f = fixture(
        Protocol::Http,
        Algorithm::Leastconn,
        &[Replica::Echo, Replica::Echo],
        Limits::default(),
    )
    .await;
    let proxy = f.proxy;
    let held = tokio::spawn(async move {
        exchange(
            proxy,
            b"GET /slow HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy: Vec<Ipv4Addr> = f
        .pool
        .open()
        .iter()
        .filter(|(_, open)| *open == 1)
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(busy.len(), 1, "{:?}", f.pool.open());
    // One after another, each while the first is still held.
    for _ in 0..4 {
        let answer = exchange(f.proxy, GET).await;
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        let who: Ipv4Addr = body.lines().next().unwrap().parse().unwrap();
        assert_ne!(who, busy[0], "{:?}", f.pool.open());
    }
    assert!(held.await.unwrap().starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_source_over_its_share_is_turned_away_and_idle_clients_are_closed() {
    let limits = Limits {
        per_source: 2,
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let f = fixture(
        Protocol::Http,
        Algorithm::Roundrobin,
        &[Replica::Echo],
        limits,
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(f.proxy).await.unwrap());
    }
    let mut third = TcpStream::connect(f.proxy).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a third connection was let in"
    );
    // The idle ones are closed once their time to send headers is over,
    // and the source gets its share back.
    for stream in &mut idle {
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle client stayed"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(exchange(f.proxy, GET).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn tcp_is_spliced_to_the_replica_with_fewest_connections() {
    let f = fixture(
        Protocol::Tcp,
        Algorithm::Leastconn,
        &[Replica::Echo, Replica::Echo],
        Limits::default(),
    )
    .await;
    // One held open, not yet a whole request.
    let mut held = TcpStream::connect(f.proxy).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = f.pool.open().iter().find(|(_, o)| *o == 1).unwrap().0;
    for _ in 0..3 {
        let answer = exchange(f.proxy, GET).await;
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_ne!(body.lines().next().unwrap(), busy.to_string());
    }
    held.write_all(b"Host: web\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    held.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains(&busy.to_string()));
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let f = fixture(
        Protocol::Http,
        Algorithm::Roundrobin,
        &[Replica::Echo],
        Limits::default(),
    )
    .await;
    // A response's first bytes arrive before the replica sent the rest.
    let mut stream = TcpStream::connect(f.proxy).await.unwrap();
    stream
        .write_all(b"GET /trickle HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(1000), async {
        while !seen.ends_with(b"first-") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(early.is_ok(), "{}", String::from_utf8_lossy(&seen));
    // A request's body reaches the replica before the client sent it all.
    let mut stream = TcpStream::connect(f.proxy).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 1000000\r\n\r\nhello")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(3), async {
        while !answer.ends_with(b"got!") {
            let n = stream.read(&mut buffer).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
