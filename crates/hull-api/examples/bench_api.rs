//! Requests per second of `GET /containers/json`: over hulld's Unix socket
//! (the operator's, unsigned) and over the tenant listener (TLS, every
//! request signed and verified), in the same run. One connection per
//! request, as the CLI makes them. Used by scripts/bench-api.sh.
//!
//!   bench_api SOCKET HOST:PORT CA ACCESS_KEY SECRET_KEY [REQUESTS] [CONCURRENCY]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hull_api::Client;
use hull_cloud::sign::Credentials;

async fn measure(client: Arc<Client>, requests: usize, concurrency: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let share = requests / concurrency + usize::from(worker < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let listed: Vec<serde_json::Value> = client
                    .get_json("/containers/json")
                    .await
                    .expect("the request succeeds");
                std::hint::black_box(listed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("a worker ends");
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, authority, ca, access_key, secret_key, rest @ ..] = &args[..] else {
        eprintln!(
            "usage: bench_api SOCKET HOST:PORT CA ACCESS_KEY SECRET_KEY [REQUESTS] [CONCURRENCY]"
        );
        std::process::exit(2);
    };
    let requests: usize = rest.first().map_or(2000, |n| n.parse().expect("a count"));
    let concurrency: usize = rest.get(1).map_or(4, |n| n.parse().expect("a count"));
    let unix = Arc::new(Client::new(PathBuf::from(socket)));
    let credentials = Credentials {
        access_key: access_key.clone(),
        secret_key: secret_key.clone(),
        region: "us-west-1".to_owned(),
    };
    let tls = Arc::new(Client::tls(authority, ca.as_ref(), credentials).expect("a TLS client"));
    // Warm both paths up (page cache, TLS session setup code, SQLite).
    measure(unix.clone(), 50, 1).await;
    measure(tls.clone(), 50, 1).await;

    println!("| GET /containers/json, {requests} requests | concurrency | req/s | × Unix socket |");
    println!("|---|---|---|---|");
    for workers in [1, concurrency] {
        let base = measure(unix.clone(), requests, workers).await;
        let signed = measure(tls.clone(), requests, workers).await;
        let rate = |d: Duration| requests as f64 / d.as_secs_f64();
        println!(
            "| Unix socket, unsigned (reference) | {workers} | {:.0} | 1× |",
            rate(base)
        );
        println!(
            "| TLS listener, signed and verified | {workers} | {:.0} | {:.2}× |",
            rate(signed),
            rate(signed) / rate(base)
        );
    }
}
