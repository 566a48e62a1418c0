use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use super::*;

fn size(vcpus: u32, memory_mib: u32) -> VmSize {
    VmSize { vcpus, memory_mib }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn requests_are_counted_by_listener_method_class_and_code() {
    let metrics = Metrics::new();
    metrics.request(Listener::Unix, &Method::GET, StatusCode::OK);
    metrics.request(Listener::Unix, &Method::GET, StatusCode::OK);
    metrics.request(Listener::Tenant, &Method::POST, StatusCode::UNAUTHORIZED);
    let text = metrics.render(&Snapshot::default());
    let lines = lines(&text);
    assert!(
        lines.contains(&r#"hull_api_requests_total{listener="unix",method="GET",code="200"} 2"#),
        "{text}"
    );
    assert!(
        lines.contains(&r#"hull_api_requests_total{listener="tenant",method="POST",code="401"} 1"#),
        "{text}"
    );
    assert!(text.contains("# TYPE hull_api_requests counter"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn made_up_methods_share_one_label_value() {
    // Attack: a client sending a new method name per request must not
    // make a new series per request.
    let metrics = Metrics::new();
    for i in 0..100 {
        let method = Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
        metrics.request(Listener::Tenant, &method, StatusCode::NOT_FOUND);
    }
    let text = metrics.render(&Snapshot::default());
    let series: Vec<_> = lines(&text)
        .into_iter()
        .filter(|l| l.starts_with("hull_api_requests_total"))
        .collect();
    assert_eq!(
        series,
        vec![r#"hull_api_requests_total{listener="tenant",method="other",code="404"} 100"#]
    );
}

#[test]
fn starts_are_a_histogram_by_path() {
    let metrics = Metrics::new();
    metrics.start("pool", 40);
    metrics.start("template clone", 300);
    metrics.start("cold boot", 4000);
    metrics.start("something new", 1);
    let text = metrics.render(&Snapshot::default());
    let lines = lines(&text);
    assert!(
        text.contains("# TYPE hull_vm_start_seconds histogram"),
        "{text}"
    );
    for expected in [
        r#"hull_vm_start_seconds_count{path="pool"} 1"#,
        r#"hull_vm_start_seconds_sum{path="pool"} 0.04"#,
        r#"hull_vm_start_seconds_bucket{le="0.05",path="pool"} 1"#,
        r#"hull_vm_start_seconds_bucket{le="0.025",path="pool"} 0"#,
        r#"hull_vm_start_seconds_count{path="template_clone"} 1"#,
        r#"hull_vm_start_seconds_bucket{le="5.0",path="cold_boot"} 1"#,
        r#"hull_vm_start_seconds_bucket{le="2.5",path="cold_boot"} 0"#,
        r#"hull_vm_start_seconds_count{path="other"} 1"#,
    ] {
        assert!(lines.contains(&expected), "no {expected} in {text}");
    }
}

#[test]
fn pulls_are_counted_by_result() {
    let metrics = Metrics::new();
    metrics.pull(true);
    metrics.pull(false);
    metrics.pull(false);
    let text = metrics.render(&Snapshot::default());
    let lines = lines(&text);
    assert!(
        lines.contains(&r#"hull_image_pulls_total{result="ok"} 1"#),
        "{text}"
    );
    assert!(
        lines.contains(&r#"hull_image_pulls_total{result="error"} 2"#),
        "{text}"
    );
}

#[test]
fn refused_tenant_connections_are_counted_by_limit() {
    let metrics = Metrics::new();
    metrics.refused_connection("address");
    metrics.refused_connection("address");
    metrics.refused_connection("tenant");
    let text = metrics.render(&Snapshot::default());
    let lines = lines(&text);
    for line in [
        r#"hull_tenant_connections_refused_total{limit="address"} 2"#,
        r#"hull_tenant_connections_refused_total{limit="tenant"} 1"#,
    ] {
        assert!(lines.contains(&line), "{text}");
    }
}

#[test]
fn vms_templates_and_pools_are_read_from_the_snapshot() {
    let metrics = Metrics::new();
    let snapshot = Snapshot {
        sizes: vec![
            SizeState {
                size: size(1, 256),
                // 2 running, 3 pooled.
                held: 5,
                pool_idle: 3,
                pool_target: 4,
                template: Some("ready"),
            },
            SizeState {
                size: size(1, 1024),
                // One of them is the template's build.
                held: 2,
                pool_idle: 0,
                pool_target: 0,
                template: Some("building"),
            },
            SizeState {
                size: size(3, 300),
                held: 1,
                pool_idle: 0,
                pool_target: 0,
                template: None,
            },
        ],
        usage: Vec::new(),
    };
    let text = metrics.render(&snapshot);
    let lines = lines(&text);
    for expected in [
        r#"hull_vms{state="running",size="S3"} 2"#,
        r#"hull_vms{state="pooled",size="S3"} 3"#,
        r#"hull_vms{state="template",size="S3"} 1"#,
        r#"hull_vms{state="running",size="M1"} 1"#,
        r#"hull_vms{state="template",size="M1"} 0"#,
        r#"hull_vms{state="running",size="other"} 1"#,
        r#"hull_templates{state="ready",size="S3"} 1"#,
        r#"hull_templates{state="building",size="S3"} 0"#,
        r#"hull_templates{state="building",size="M1"} 1"#,
        r#"hull_pool_idle_vms{size="S3"} 3"#,
        r#"hull_pool_target_vms{size="S3"} 4"#,
    ] {
        assert!(lines.contains(&expected), "no {expected} in {text}");
    }
    assert!(!text.contains(r#"hull_pool_idle_vms{size="M1"}"#), "{text}");
    assert!(
        !text.contains(r#"hull_templates{state="ready",size="other"}"#),
        "{text}"
    );

    // A size gone from the runtime's answer leaves no stale series.
    let text = metrics.render(&Snapshot::default());
    assert!(!text.contains("hull_vms{"), "{text}");
    assert!(!text.contains("hull_pool_idle_vms{"), "{text}");
}

#[test]
fn tenants_usage_counts_up_to_the_records_and_never_down() {
    let metrics = Metrics::new();
    let usage = |tenant: Option<&str>, size: &str, seconds| TenantUsage {
        tenant: tenant.map(str::to_owned),
        size: size.to_owned(),
        seconds,
    };
    let snapshot = |entries| Snapshot {
        sizes: Vec::new(),
        usage: entries,
    };
    let text = metrics.render(&snapshot(vec![
        usage(Some("acme"), "S2", 40),
        usage(None, "S4", 10),
        // Made-up size names share one label.
        usage(Some("acme"), "3x300", 12),
        usage(Some("acme"), "7x7", 3),
    ]));
    let lines = lines(&text);
    for expected in [
        r#"hull_tenant_container_seconds_total{tenant="acme",size="S2"} 40"#,
        r#"hull_tenant_container_seconds_total{tenant="",size="S4"} 10"#,
        r#"hull_tenant_container_seconds_total{tenant="acme",size="other"} 15"#,
    ] {
        assert!(lines.contains(&expected), "no {expected} in {text}");
    }
    // A running run's estimate lowered by its recorded end is not taken back.
    let text = metrics.render(&snapshot(vec![usage(Some("acme"), "S2", 38)]));
    assert!(
        text.contains(r#"hull_tenant_container_seconds_total{tenant="acme",size="S2"} 40"#),
        "{text}"
    );
    let text = metrics.render(&snapshot(vec![usage(Some("acme"), "S2", 55)]));
    assert!(
        text.contains(r#"hull_tenant_container_seconds_total{tenant="acme",size="S2"} 55"#),
        "{text}"
    );
}

/// Serves `body` on a listener with room for `max` connections.
async fn listener(max: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(listener::serve_with(
        listener,
        Arc::new(|| "hull_test 1\n".to_owned()),
        max,
    ));
    address
}

use tokio::net::TcpListener;

/// Sends `request` and reads the answer, in a blocking thread.
async fn exchange(address: std::net::SocketAddr, request: Vec<u8>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&request).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_listener_serves_get_metrics_in_the_text_format() {
    let address = listener(2).await;
    let answer = exchange(address, b"GET /metrics HTTP/1.0\r\n\r\n".to_vec()).await;
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("content-type: text/plain; version=0.0.4"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\nhull_test 1\n"), "{answer}");
}

#[tokio::test]
async fn the_listener_answers_404_to_anything_else_and_reads_no_body() {
    let address = listener(2).await;
    for request in [
        "GET / HTTP/1.0\r\n\r\n",
        "GET /metrics/x HTTP/1.0\r\n\r\n",
        "HEAD /metrics HTTP/1.0\r\n\r\n",
        "DELETE /metrics HTTP/1.0\r\n\r\n",
    ] {
        let answer = exchange(address, request.as_bytes().to_vec()).await;
        assert!(answer.starts_with("HTTP/1.0 404"), "{request}: {answer}");
    }
    // Attack: a POST announcing a huge body is answered at once; the
    // body is never waited for.
    let answer = exchange(
        address,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nxxxx".to_vec(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_free_slot() {
    // Attack: idle connections hold every slot; the next one is not
    // served until one of them goes.
    let address = listener(2).await;
    let first = std::net::TcpStream::connect(address).unwrap();
    let _second = std::net::TcpStream::connect(address).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting = tokio::spawn(exchange(address, b"GET /metrics HTTP/1.0\r\n\r\n".to_vec()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection was served");
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}
