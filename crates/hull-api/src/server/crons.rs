//! `/crons`: Hyper Cron's API, for the operator and for each tenant.
//!
//! `POST /crons/create?name=` (a `CronSpec` body), `GET /crons`,
//! `GET|DELETE /crons/{name}`, `GET /crons/{name}/history?since=&tail=`,
//! `POST /crons/{name}/suspend|resume|run`. A tenant sees its own crons
//! only; another's answers 404 as a missing one does.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hull_cloud::crons::{CronRow, CronsError};
use hull_cron::record::check_name;
use hull_cron::{rfc3339, CronSpec, CronView, Run, Schedule};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::containers::{no_content, Query};
use super::tenant::Tenant;
use super::{full, json_response, not_found, split_resource, ApiError, Body, RequestBody};
use crate::cron::{self, notify, unix_now};
use crate::daemon::Daemon;

/// The largest cron definition read.
const MAX_SPEC_BODY: usize = 64 * 1024;
/// The most of an internal answer read (a run's output tail, an error).
const MAX_ANSWER: usize = 256 * 1024;

/// Routes `/crons…` for `owner` (`None`: the operator).
pub(super) async fn route(
    daemon: &Daemon,
    owner: Option<&str>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let path = super::strip_version(request.uri().path()).to_owned();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::POST, "/crons/create") => create(daemon, owner, request).await,
        (&Method::GET, "/crons" | "/crons/json") => list(daemon, owner, &request),
        (_, p) if p.starts_with("/crons/") => {
            let (name, action) = split_resource(p, "/crons/");
            match (&method, action) {
                (&Method::GET, "" | "json") => inspect(daemon, owner, &name),
                (&Method::DELETE, "") => remove(daemon, owner, &name),
                (&Method::GET, "history") => history(daemon, owner, &name, &request),
                (&Method::POST, "suspend") => suspend(daemon, owner, &name, true),
                (&Method::POST, "resume") => suspend(daemon, owner, &name, false),
                (&Method::POST, "run") => run_now(daemon, owner, &name),
                _ => Err(not_found(&method, &path)),
            }
        }
        _ => Err(not_found(&method, &path)),
    }
}

async fn create(
    daemon: &Daemon,
    owner: Option<&str>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, message);
    let name = Query::of(&request)
        .get("name")
        .unwrap_or_default()
        .to_owned();
    check_name(&name).map_err(|e| bad(e.to_string()))?;
    let body = read_bounded(request.into_body(), MAX_SPEC_BODY)
        .await
        .map_err(|e| bad(format!("cannot read the cron's definition: {e}")))?;
    let spec: CronSpec =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid cron definition: {e}")))?;
    let schedule = Schedule::parse(&spec.schedule, &spec.time_zone)
        .map_err(|e| bad(format!("invalid schedule: {e}")))?;
    let image = spec.config.get("Image").and_then(Value::as_str);
    if image.unwrap_or_default().is_empty() {
        return Err(bad("the cron's Config names no Image".to_owned()));
    }
    if let Some(tenant) = owner {
        // Refused now rather than at each run: what the tenant's own
        // `containers/create` refuses.
        super::tenant_containers::refuse_host_access(
            &spec.config,
            &super::tenant_net::network_name(tenant),
        )?;
    }
    if let Some(url) = &spec.notify_url {
        notify::check_url(url, owner.is_some())
            .await
            .map_err(|e| bad(e.to_string()))?;
    }
    let stored = serde_json::to_string(&spec).expect("a cron serializes");
    let next = schedule.next_after(unix_now());
    let row = daemon
        .tenants()
        .create_cron(owner, &name, &stored, next)
        .map_err(crons_error)?;
    daemon.crons().changed();
    let mut response = json_response(StatusCode::CREATED, &view(daemon, row, owner.is_none())?);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

fn list(
    daemon: &Daemon,
    owner: Option<&str>,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    // The operator may list every owner's crons.
    let all = owner.is_none() && Query::of(request).flag("all");
    let rows = daemon.tenants().crons(owner, all).map_err(crons_error)?;
    let views = rows
        .into_iter()
        .map(|row| view(daemon, row, owner.is_none()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(StatusCode::OK, &views))
}

fn inspect(daemon: &Daemon, owner: Option<&str>, name: &str) -> Result<Response<Body>, ApiError> {
    let row = daemon.tenants().cron(owner, name).map_err(crons_error)?;
    Ok(json_response(
        StatusCode::OK,
        &view(daemon, row, owner.is_none())?,
    ))
}

fn remove(daemon: &Daemon, owner: Option<&str>, name: &str) -> Result<Response<Body>, ApiError> {
    daemon
        .tenants()
        .remove_cron(owner, name)
        .map_err(crons_error)?;
    daemon.crons().changed();
    Ok(no_content())
}

fn history(
    daemon: &Daemon,
    owner: Option<&str>,
    name: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let row = daemon.tenants().cron(owner, name).map_err(crons_error)?;
    let query = Query::of(request);
    let since: Option<i64> = query.number("since")?;
    let tail: Option<usize> = query.number("tail")?;
    let records = daemon
        .tenants()
        .cron_history(row.id, since, tail)
        .map_err(crons_error)?;
    let runs: Vec<Value> = records
        .iter()
        .filter_map(|r| serde_json::from_str::<Run>(r).ok())
        .map(|run| run_json(&run))
        .collect();
    Ok(json_response(StatusCode::OK, &runs))
}

/// A run's record with its times as RFC 3339 beside the Unix ones.
fn run_json(run: &Run) -> Value {
    let mut json = serde_json::to_value(run).expect("a run serializes");
    for (unix, text) in [
        (Some(run.scheduled), "ScheduledAt"),
        (run.started, "StartedAt"),
        (run.finished, "FinishedAt"),
    ] {
        if let Some(unix) = unix {
            json[text] = Value::String(rfc3339(unix));
        }
    }
    json
}

fn suspend(
    daemon: &Daemon,
    owner: Option<&str>,
    name: &str,
    suspended: bool,
) -> Result<Response<Body>, ApiError> {
    let row = daemon.tenants().cron(owner, name).map_err(crons_error)?;
    // A resumed cron fires next after now, not at the times it slept through.
    let next = if suspended {
        None
    } else {
        cron::definition(&row).and_then(|(_, schedule)| schedule.next_after(unix_now()))
    };
    daemon
        .tenants()
        .suspend_cron(owner, name, suspended, next)
        .map_err(crons_error)?;
    daemon.crons().changed();
    Ok(no_content())
}

fn run_now(daemon: &Daemon, owner: Option<&str>, name: &str) -> Result<Response<Body>, ApiError> {
    let row = daemon.tenants().cron(owner, name).map_err(crons_error)?;
    let (spec, _) = cron::definition(&row).ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the stored definition of cron {name} is unreadable"),
        )
    })?;
    if !cron::fire(daemon, &row, &spec, unix_now()) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cron scheduler is not running on this hulld",
        ));
    }
    let mut response = no_content();
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

fn view(daemon: &Daemon, row: CronRow, operator: bool) -> Result<CronView, ApiError> {
    let spec: CronSpec = serde_json::from_str(&row.spec).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the stored definition of cron {} is unreadable: {e}",
                row.name
            ),
        )
    })?;
    Ok(CronView {
        running: daemon.crons().running(row.id),
        name: row.name,
        tenant: row.tenant.filter(|_| operator),
        spec,
        suspended: row.suspended,
        success_count: row.success_count,
        error_count: row.error_count,
        last_run: row.last_run.map(rfc3339),
        next_run: row.next_run.filter(|_| !row.suspended).map(rfc3339),
        created: rfc3339(row.created as i64),
    })
}

/// A request's body, refused past `max` bytes.
async fn read_bounded(mut body: RequestBody, max: usize) -> Result<Vec<u8>, String> {
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > max {
                return Err(format!("it is longer than {max} bytes"));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(read)
}

fn crons_error(error: CronsError) -> ApiError {
    let status = match &error {
        CronsError::NoCron(_) => StatusCode::NOT_FOUND,
        CronsError::Exists(_) => StatusCode::CONFLICT,
        CronsError::TooMany { .. } => StatusCode::FORBIDDEN,
        CronsError::NoTenant(_) => StatusCode::NOT_FOUND,
        CronsError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, hull_runtime::error_chain(&error))
}

/// Calls the API as `owner` would (`None`: the operator), in process: a
/// cron's run goes through the same routes, checks and quotas. The answer's
/// body is read up to a bound.
pub(crate) async fn call(
    daemon: &Arc<Daemon>,
    owner: Option<&str>,
    method: Method,
    path: &str,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let mut builder = Request::builder().method(method).uri(path);
    if !body.is_empty() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(
            full(body)
                .map_err(|e| -> super::BodyError { Box::new(e) })
                .boxed(),
        )
        .expect("a request to a valid path builds");
    let response = match owner {
        None => super::route(daemon.clone(), request).await,
        Some(tenant) => super::tenant::route(daemon, &Tenant(tenant.to_owned()), request)
            .await
            .unwrap_or_else(ApiError::into_response),
    };
    let status = response.status();
    let mut body = response.into_body();
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = MAX_ANSWER - read.len();
            read.extend_from_slice(&data[..data.len().min(room)]);
            if read.len() >= MAX_ANSWER {
                break;
            }
        }
    }
    (status, Bytes::from(read))
}
