//! `GET /events`: container events as docker streams them, one JSON object
//! per line, from `since` (kept history) until `until` or the client leaves.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::RequestBody;
use bytes::Bytes;
use hull_runtime::container::events::ContainerEvent;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::containers::{parse_filters, timestamp, Query};
use super::scope::{Scope, OWNER_LABEL};
use super::stream::channel_body;
use super::{ApiError, Body};
use crate::daemon::Daemon;

#[derive(Serialize)]
struct EventMessage<'a> {
    status: &'a str,
    id: &'a str,
    from: &'a str,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "Action")]
    action: &'a str,
    #[serde(rename = "Actor")]
    actor: Actor<'a>,
    scope: &'static str,
    time: u64,
    #[serde(rename = "timeNano")]
    time_nano: u128,
}

#[derive(Serialize)]
struct Actor<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    #[serde(rename = "Attributes")]
    attributes: &'a BTreeMap<String, String>,
}

/// Docker's event filters that apply to containers, and the tenant whose
/// containers' events alone pass.
struct EventFilter {
    filters: BTreeMap<String, Vec<String>>,
    owner: Option<String>,
}

impl EventFilter {
    fn parse(text: Option<&str>) -> Result<Self, ApiError> {
        Ok(Self {
            filters: parse_filters(text)?,
            owner: None,
        })
    }

    fn accepts(&self, event: &ContainerEvent) -> bool {
        // An event carries its container's labels, the owner's among them.
        if let Some(owner) = &self.owner {
            if event.attributes.get(OWNER_LABEL) != Some(owner) {
                return false;
            }
        }
        self.filters.iter().all(|(key, values)| {
            values.iter().any(|value| match key.as_str() {
                "type" => value == "container",
                // `exec_start: sh` matches `exec_start`, as in docker.
                "event" => event.action.split(':').next() == Some(value.as_str()),
                "container" => {
                    event.id.starts_with(value.as_str())
                        || event.attributes.get("name") == Some(value)
                }
                "image" => event.attributes.get("image") == Some(value),
                "label" => match value.split_once('=') {
                    Some((k, v)) => event.attributes.get(k).is_some_and(|a| a == v),
                    None => event.attributes.contains_key(value.as_str()),
                },
                _ => false,
            })
        })
    }
}

fn encode(event: &ContainerEvent) -> Bytes {
    let since_epoch = event.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let image = event.attributes.get("image").map_or("", String::as_str);
    let message = EventMessage {
        status: &event.action,
        id: &event.id,
        from: image,
        kind: "container",
        action: &event.action,
        actor: Actor {
            id: &event.id,
            attributes: &event.attributes,
        },
        scope: "local",
        time: since_epoch.as_secs(),
        time_nano: since_epoch.as_nanos(),
    };
    let mut line = serde_json::to_vec(&message).expect("events serialize");
    line.push(b'\n');
    Bytes::from(line)
}

/// `GET /events?since=…&until=…&filters=…`.
/// A tenant gets the events of its own containers only.
pub(super) async fn events(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    scope: Scope<'_>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request);
    let since = timestamp(query.get("since"))?;
    let until = timestamp(query.get("until"))?;
    let mut filter = EventFilter::parse(query.get("filters"))?;
    filter.owner = match scope {
        Scope::Operator => None,
        Scope::Tenant(tenant) => Some(tenant.to_owned()),
    };
    let (past, mut live) = daemon.containers().events().subscribe(since);
    let (tx, mut response) = channel_body(64);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    tokio::spawn(async move {
        let in_window = |event: &ContainerEvent| until.is_none_or(|until| event.time <= until);
        for event in past.iter().filter(|e| in_window(e) && filter.accepts(e)) {
            if tx.send(encode(event)).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|until| {
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        loop {
            let next = async {
                match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, live.recv()).await.ok(),
                    None => Some(live.recv().await),
                }
            };
            let event = tokio::select! {
                event = next => event,
                () = tx.closed() => return,
            };
            match event {
                None | Some(Err(RecvError::Closed)) => return,
                // A reader too slow for the feed misses events, as with docker.
                Some(Err(RecvError::Lagged(_))) => continue,
                Some(Ok(event)) => {
                    if filter.accepts(&event) && tx.send(encode(&event)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str) -> ContainerEvent {
        ContainerEvent {
            id: "abc123".into(),
            action: action.into(),
            attributes: BTreeMap::from([
                ("name".to_owned(), "web".to_owned()),
                ("image".to_owned(), "busybox".to_owned()),
            ]),
            time: UNIX_EPOCH + std::time::Duration::from_nanos(1_700_000_000_123_456_789),
        }
    }

    #[test]
    fn events_read_like_dockers() {
        let line = String::from_utf8(encode(&event("start")).to_vec()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["Action"], "start");
        assert_eq!(value["Actor"]["Attributes"]["name"], "web");
        assert_eq!(value["from"], "busybox");
        assert_eq!(value["time"], 1_700_000_000);
        assert_eq!(value["timeNano"], 1_700_000_000_123_456_789u64);
    }

    #[test]
    fn filters_match_type_event_container_and_image() {
        let filter = EventFilter::parse(Some(
            r#"{"type":["container"],"event":["exec_start"],"container":["web"]}"#,
        ))
        .unwrap();
        assert!(filter.accepts(&event("exec_start: sh -c true")));
        assert!(!filter.accepts(&event("start")));
        let images = EventFilter::parse(Some(r#"{"type":{"image":true}}"#)).unwrap();
        assert!(!images.accepts(&event("start")));
    }

    #[test]
    fn a_tenant_sees_only_its_own_containers_events() {
        let mut filter = EventFilter::parse(None).unwrap();
        filter.owner = Some("acme".into());
        let owned = |owner: Option<&str>| {
            let mut e = event("start");
            if let Some(owner) = owner {
                e.attributes.insert(OWNER_LABEL.into(), owner.into());
            }
            e
        };
        assert!(filter.accepts(&owned(Some("acme"))));
        assert!(!filter.accepts(&owned(Some("beta"))));
        assert!(!filter.accepts(&owned(None)), "the operator's own");
        // A filter cannot widen what the tenant sees.
        let mut widened = EventFilter::parse(Some(r#"{"label":["sh.hull.tenant=beta"]}"#)).unwrap();
        widened.owner = Some("acme".into());
        assert!(!widened.accepts(&owned(Some("beta"))));
    }
}
