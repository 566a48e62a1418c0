//! `GET /containers/{id}/stats`: the figures of a container's VM in
//! docker's shape, once or every second.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::RequestBody;
use bytes::Bytes;
use hull_proto::GuestStats;
use hull_runtime::{Container, ContainerError};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::containers::Query;
use super::stream::channel_body;
use super::{json_response, ApiError, Body};
use crate::daemon::Daemon;
use crate::types::stats::{CpuStats, CpuUsage, MemoryStats, PidsStats, StatsResponse};

/// Between the samples of a stream, as docker's.
const INTERVAL: Duration = Duration::from_secs(1);
/// Between the two samples of a single answer. The docker CLI gives up on
/// an answer after 2 s, and CPU percentages do not depend on the interval.
const PRIMING: Duration = Duration::from_millis(500);
/// Go's zero time, which docker reports for a missing sample.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A sample of the VM's figures and when it was taken.
type Sample = (SystemTime, GuestStats);

/// `GET /containers/{id}/stats?stream=…&one-shot=…`.
pub(super) async fn stats(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = daemon.containers().get(reference)?;
    let query = Query::of(request);
    // Docker streams unless told not to.
    let stream = query.get("stream").is_none() || query.flag("stream");
    if !stream {
        let body = if query.flag("one-shot") {
            let current = sample(&container).await?;
            response(&container, current.as_ref(), None)
        } else {
            // A sample before the answer's, so CPU figures are not zero.
            let previous = sample(&container).await?;
            if previous.is_some() {
                tokio::time::sleep(PRIMING).await;
            }
            let current = sample(&container).await?;
            response(&container, current.as_ref(), previous.as_ref())
        };
        return Ok(json_response(StatusCode::OK, &body));
    }
    let (tx, mut response_body) = channel_body(1);
    response_body.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    tokio::spawn(async move {
        let mut previous: Option<Sample> = None;
        loop {
            let current = match sample(&container).await {
                Ok(current) => current,
                Err(err) => {
                    tracing::debug!(container = %container.id, error = %err, "stats stream ended");
                    return;
                }
            };
            let body = response(&container, current.as_ref(), previous.as_ref());
            let mut line = serde_json::to_vec(&body).expect("stats serialize");
            line.push(b'\n');
            // The stream ends with the client, or with the container's run.
            if tx.send(Bytes::from(line)).await.is_err() || current.is_none() {
                return;
            }
            previous = current;
            tokio::time::sleep(INTERVAL).await;
        }
    });
    Ok(response_body)
}

/// The VM's figures now; `None` when the container does not run.
async fn sample(container: &Container) -> Result<Option<Sample>, ContainerError> {
    match container.stats().await {
        Ok(stats) => Ok(Some((SystemTime::now(), stats))),
        Err(ContainerError::NotRunning(_)) => Ok(None),
        Err(err) => Err(err),
    }
}

fn response(
    container: &Container,
    current: Option<&Sample>,
    previous: Option<&Sample>,
) -> StatsResponse {
    let time = |sample: Option<&Sample>| {
        sample.map_or_else(
            || ZERO_TIME.to_owned(),
            |(at, _)| humantime::format_rfc3339_nanos(*at).to_string(),
        )
    };
    let stats = current.map(|(_, stats)| stats);
    StatsResponse {
        name: format!("/{}", container.name()),
        id: container.id.clone(),
        read: time(current),
        preread: time(previous),
        pids_stats: PidsStats {
            current: stats.map_or(0, |s| u64::from(s.pids)),
        },
        cpu_stats: cpu(stats),
        precpu_stats: cpu(previous.map(|(_, stats)| stats)),
        memory_stats: match stats {
            Some(stats) => MemoryStats {
                usage: Some(stats.memory_used_bytes),
                limit: Some(stats.memory_limit_bytes),
                stats: Some(BTreeMap::new()),
            },
            None => MemoryStats::default(),
        },
        networks: stats
            .filter(|s| !s.networks.is_empty())
            .map(|s| s.networks.clone()),
        ..StatsResponse::default()
    }
}

fn cpu(stats: Option<&GuestStats>) -> CpuStats {
    let Some(stats) = stats else {
        return CpuStats::default();
    };
    CpuStats {
        cpu_usage: CpuUsage {
            total_usage: stats.cpu_total_ns,
            ..CpuUsage::default()
        },
        system_cpu_usage: Some(stats.system_ns),
        online_cpus: Some(stats.online_cpus),
        ..CpuStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_figures_are_those_docker_computes_percentages_from() {
        let stats = GuestStats {
            cpu_total_ns: 3_000,
            system_ns: 10_000,
            online_cpus: 2,
            memory_used_bytes: 20 << 20,
            memory_limit_bytes: 128 << 20,
            pids: 1,
            networks: Default::default(),
        };
        let json = serde_json::to_value(cpu(Some(&stats))).unwrap();
        assert_eq!(json["cpu_usage"]["total_usage"], 3_000);
        assert_eq!(json["system_cpu_usage"], 10_000);
        assert_eq!(json["online_cpus"], 2);
        let none = serde_json::to_value(cpu(None)).unwrap();
        assert_eq!(none["cpu_usage"]["total_usage"], 0);
        assert!(none.get("system_cpu_usage").is_none());
    }
}
