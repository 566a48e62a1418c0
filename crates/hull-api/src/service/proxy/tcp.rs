//! TCP through the proxy: each connection spliced to the replica the
//! pool picks (the fewest open, or the client's own with affinity), both
//! ways until both sides are done or nothing moves for the idle time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::Target;

/// Bytes copied at a time each way.
const CHUNK: usize = 16 * 1024;

pub async fn serve(client: TcpStream, peer: SocketAddr, target: &Target) {
    let Some(lease) = target.pool.pick(peer.ip()) else {
        debug!(service = %target.name, client = %peer, "no healthy replica");
        return;
    };
    let address = SocketAddr::from((lease.address, target.port));
    let replica = match tokio::time::timeout(
        target.limits.connect_timeout,
        TcpStream::connect(address),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            debug!(service = %target.name, replica = %address, error = %err, "cannot reach a replica");
            return;
        }
        Err(_) => {
            debug!(service = %target.name, replica = %address, "a replica did not answer in time");
            return;
        }
    };
    let _ = replica.set_nodelay(true);
    splice(client, replica, target.limits.idle).await;
    drop(lease);
}

/// Copies both ways; ends when both are done, or on the first error, or
/// once nothing moved either way for `idle`.
pub async fn splice<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    // Milliseconds since `start` of the last byte either way.
    let last = AtomicU64::new(0);
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let both = async {
        tokio::join!(
            pump(&mut a_read, &mut b_write, &last, start),
            pump(&mut b_read, &mut a_write, &last, start)
        )
    };
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(since);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        _ = both => {}
        () = watchdog => {}
    }
}

async fn pump<R, W>(from: &mut R, to: &mut W, last: &AtomicU64, start: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
    // The other side reads what is left, then its end.
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_go_both_ways_and_an_idle_splice_ends() {
        let (mut client, proxy_a) = tokio::io::duplex(1024);
        let (proxy_b, mut replica) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice(proxy_a, proxy_b, Duration::from_millis(300)));
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        replica.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        replica.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        // Nothing more either way: the splice ends, closing both.
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("an idle splice ends")
            .unwrap();
        assert_eq!(client.read(&mut got).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_half_close_still_gets_the_answer() {
        let (mut client, proxy_a) = tokio::io::duplex(1024);
        let (proxy_b, mut replica) = tokio::io::duplex(1024);
        let task = tokio::spawn(splice(proxy_a, proxy_b, Duration::from_secs(30)));
        client.write_all(b"question").await.unwrap();
        client.shutdown().await.unwrap();
        let mut asked = Vec::new();
        replica.read_to_end(&mut asked).await.unwrap();
        assert_eq!(asked, b"question");
        replica.write_all(b"answer").await.unwrap();
        drop(replica);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        task.await.unwrap();
    }
}
