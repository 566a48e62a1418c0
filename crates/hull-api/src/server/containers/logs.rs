//! `GET /containers/{id}/logs`.

use super::*;

/// `GET /containers/{id}/logs?follow&stdout&stderr&since&until&timestamps&tail`.
pub(in crate::server) async fn logs(
    daemon: &Daemon,
    reference: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let container = container(daemon, reference)?;
    if container.config().log.disabled {
        // docker's answer for a driver that keeps nothing.
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "configured logging driver does not support reading",
        ));
    }
    let query = Query::of(request);
    let (stdout, stderr) = (query.flag("stdout"), query.flag("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail =
        match query.get("tail").unwrap_or("all") {
            "all" | "" => None,
            n => Some(n.parse::<usize>().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("invalid tail: {n:?}"))
            })?),
        };
    let filter = LogFilter {
        stdout,
        stderr,
        since: timestamp(query.get("since"))?,
        until: timestamp(query.get("until"))?,
        tail,
    };
    let timestamps = query.flag("timestamps");
    let tty = container.config().process.tty;
    let mut entries = container.logs(filter, query.flag("follow"));
    let (tx, mut response) = channel_body(16);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(if tty {
            CONTENT_RAW
        } else {
            CONTENT_MULTIPLEXED
        }),
    );
    tokio::spawn(async move {
        while let Some(entry) = entries.recv().await {
            let Ok(entry) = entry else { return };
            let mut line = Vec::with_capacity(entry.line.len() + 32);
            if timestamps {
                line.extend_from_slice(
                    humantime::format_rfc3339_nanos(entry.time)
                        .to_string()
                        .as_bytes(),
                );
                line.push(b' ');
            }
            line.extend_from_slice(&entry.line);
            let chunk = if tty {
                Bytes::from(line)
            } else {
                stdcopy(entry.stream, &line)
            };
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

/// Docker's `since`/`until`: Unix seconds with an optional fraction.
pub(in crate::server) fn timestamp(value: Option<&str>) -> Result<Option<SystemTime>, ApiError> {
    let Some(value) = value.filter(|v| !v.is_empty() && *v != "0") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid timestamp: {value:?}"),
        )
    };
    let (seconds, fraction) = value.split_once('.').unwrap_or((value, "0"));
    let seconds: u64 = seconds.parse().map_err(|_| invalid())?;
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: u32 = format!("{digits:0<9}").parse().map_err(|_| invalid())?;
    Ok(Some(UNIX_EPOCH + Duration::new(seconds, nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_take_fractions() {
        let at = timestamp(Some("1700000000.5")).unwrap().unwrap();
        assert_eq!(at, UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000));
        assert_eq!(timestamp(Some("0")).unwrap(), None);
        assert!(timestamp(Some("soon")).is_err());
    }
}
