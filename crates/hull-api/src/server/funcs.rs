//! `/funcs`: Hyper Func's API, for the operator and for each tenant.
//!
//! `POST /funcs/create?name=` (a `FuncSpec` body), `GET /funcs`,
//! `GET|DELETE /funcs/{name}`, `POST /funcs/{name}/update?refresh=1` (the
//! fields to change, or none), `POST /funcs/{name}/call?sync=1` (the
//! call's stdin), `GET /funcs/{name}/output/{call}?wait=1`,
//! `GET /funcs/{name}/status` (calls counted), `GET /funcs/{name}/logs?
//! callid=&tail=&follow=1` (call events, a JSON object per line). A tenant sees
//! its own functions only; another's answers 404 as a missing one does.

use hull_cloud::funcs::{FuncRow, FuncsError};
use hull_cron::record::check_name;
use hull_cron::rfc3339;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::containers::{no_content, Query};
use super::{json_response, not_found, split_resource, ApiError, Body, RequestBody};
use crate::daemon::Daemon;
use crate::func::events::LogsRequest;
use crate::func::{self, plane, FuncSpec, FuncView};

/// The largest function definition read.
const MAX_SPEC_BODY: usize = 64 * 1024;

/// Routes `/funcs…` for `owner` (`None`: the operator).
pub(super) async fn route(
    daemon: &Daemon,
    owner: Option<&str>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let path = super::strip_version(request.uri().path()).to_owned();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::POST, "/funcs/create") => create(daemon, owner, request).await,
        (&Method::GET, "/funcs" | "/funcs/json") => list(daemon, owner, &request),
        (_, p) if p.starts_with("/funcs/") => {
            let (name, action) = split_resource(p, "/funcs/");
            match (&method, action) {
                (&Method::GET, "" | "json") => {
                    let row = daemon.tenants().func(owner, &name).map_err(funcs_error)?;
                    Ok(json_response(StatusCode::OK, &view(daemon, row, owner)?))
                }
                (&Method::DELETE, "") => {
                    func::remove(daemon, owner, &name)
                        .await
                        .map_err(func_error)?;
                    Ok(no_content())
                }
                (&Method::GET, "status") => {
                    let row = daemon.tenants().func(owner, &name).map_err(funcs_error)?;
                    let status = func::status(daemon, &row).map_err(func_error)?;
                    Ok(json_response(StatusCode::OK, &status))
                }
                (&Method::GET, "logs") => {
                    let row = daemon.tenants().func(owner, &name).map_err(funcs_error)?;
                    let request = LogsRequest::parse(&Query::of(&request)).map_err(bad)?;
                    Ok(func::events::logs(daemon, &row, request))
                }
                (&Method::POST, "update") => update(daemon, owner, &name, request).await,
                (&Method::POST, "call") => {
                    let row = daemon.tenants().func(owner, &name).map_err(funcs_error)?;
                    let sync = Query::of(&request).flag("sync");
                    // Not the signed request's headers: they are the API's, not the call's.
                    let env = vec![
                        "HULL_FUNC_METHOD=POST".to_owned(),
                        format!("HULL_FUNC_PATH=/call/{name}"),
                    ];
                    let max = daemon.funcs().config().max_input;
                    Ok(match plane::read_body(request.into_body(), max).await {
                        Ok(body) => plane::submit_and_answer(daemon, &row, &env, &body, sync).await,
                        Err(response) => response,
                    })
                }
                (&Method::GET, a) if a.starts_with("output/") => {
                    let row = daemon.tenants().func(owner, &name).map_err(funcs_error)?;
                    let wait = Query::of(&request).flag("wait");
                    let id = a.trim_start_matches("output/");
                    Ok(plane::fetch(daemon, &row, id, wait).await)
                }
                _ => Err(not_found(&method, &path)),
            }
        }
        _ => Err(not_found(&method, &path)),
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

async fn read_spec(request: Request<RequestBody>) -> Result<Value, ApiError> {
    let body = plane::read_body(request.into_body(), MAX_SPEC_BODY)
        .await
        .map_err(|_| {
            bad(format!(
                "cannot read the function's definition: at most {MAX_SPEC_BODY} bytes"
            ))
        })?;
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&body).map_err(|e| bad(format!("invalid function definition: {e}")))
}

fn checked(value: Value) -> Result<FuncSpec, ApiError> {
    let spec: FuncSpec = serde_json::from_value(value)
        .map_err(|e| bad(format!("invalid function definition: {e}")))?;
    spec.check().map_err(|e| bad(e.to_string()))?;
    Ok(spec)
}

async fn create(
    daemon: &Daemon,
    owner: Option<&str>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let name = Query::of(&request)
        .get("name")
        .unwrap_or_default()
        .to_owned();
    check_name(&name).map_err(|e| bad(e.to_string()))?;
    let spec = checked(read_spec(request).await?)?;
    let stored = serde_json::to_string(&spec).expect("a function serializes");
    let row = daemon
        .tenants()
        .create_func(owner, &name, &stored)
        .map_err(funcs_error)?;
    Ok(json_response(
        StatusCode::CREATED,
        &view(daemon, row, owner)?,
    ))
}

async fn update(
    daemon: &Daemon,
    owner: Option<&str>,
    name: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let refresh = Query::of(&request).flag("refresh");
    let row = daemon.tenants().func(owner, name).map_err(funcs_error)?;
    let Value::Object(changes) = read_spec(request).await? else {
        return Err(bad("the changes must be a JSON object"));
    };
    let spec = if changes.is_empty() {
        None
    } else {
        let mut merged = serde_json::to_value(func::definition(&row).map_err(internal)?)
            .expect("a function serializes");
        for (key, value) in changes {
            merged[key] = value;
        }
        Some(serde_json::to_string(&checked(merged)?).expect("a function serializes"))
    };
    let row = daemon
        .tenants()
        .update_func(owner, name, spec.as_deref(), refresh)
        .map_err(funcs_error)?;
    Ok(json_response(StatusCode::OK, &view(daemon, row, owner)?))
}

fn list(
    daemon: &Daemon,
    owner: Option<&str>,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    // The operator may list every owner's functions.
    let all = owner.is_none() && Query::of(request).flag("all");
    let rows = daemon.tenants().funcs(owner, all).map_err(funcs_error)?;
    let views = rows
        .into_iter()
        .map(|row| view(daemon, row, owner))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json_response(StatusCode::OK, &views))
}

fn view(daemon: &Daemon, row: FuncRow, owner: Option<&str>) -> Result<FuncView, ApiError> {
    let spec = func::definition(&row).map_err(internal)?;
    let (running, queued) = daemon.funcs().load(row.id);
    let call_url = daemon
        .funcs()
        .base_url()
        .map(|base| format!("{base}/call/{}/{}", row.name, row.uuid));
    Ok(FuncView {
        name: row.name,
        tenant: row.tenant.filter(|_| owner.is_none()),
        spec,
        uuid: row.uuid,
        call_url,
        running,
        queued,
        created: rfc3339(row.created as i64),
    })
}

fn func_error(error: func::FuncError) -> ApiError {
    match error {
        func::FuncError::Store(error) => funcs_error(error),
        other => internal(other),
    }
}

fn internal(error: func::FuncError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

fn funcs_error(error: FuncsError) -> ApiError {
    let status = match &error {
        FuncsError::NoFunc(_) | FuncsError::NoTenant(_) => StatusCode::NOT_FOUND,
        FuncsError::Exists(_) => StatusCode::CONFLICT,
        FuncsError::TooMany { .. } => StatusCode::FORBIDDEN,
        FuncsError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
        FuncsError::Db(_) | FuncsError::Random => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, hull_runtime::error_chain(&error))
}
