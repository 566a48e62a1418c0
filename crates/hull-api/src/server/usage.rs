//! `GET /hull/usage` and `GET /hull/admin/usage`: the runs metering
//! recorded, a tenant's own on the tenant listener, everyone's on the
//! operator's socket.

use hull_cloud::usage::{self, Owner, UsageError, UsageReport};
use hyper::{Request, Response, StatusCode};

use super::containers::Query;
use super::{json_response, ApiError, Body, RequestBody};
use crate::daemon::Daemon;

impl From<UsageError> for ApiError {
    fn from(error: UsageError) -> Self {
        let status = match error {
            UsageError::BadSince(_) | UsageError::FutureSince(_) | UsageError::TooMany => {
                StatusCode::BAD_REQUEST
            }
            UsageError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, super::error_chain(&error))
    }
}

/// The runs of `tenant` (`None`: the operator, who may pick one with
/// `?tenant=`) since `?since=` (seconds since the epoch).
pub(super) async fn report(
    daemon: &Daemon,
    request: &Request<RequestBody>,
    tenant: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let query = Query::of(request);
    let now = usage::now_ms();
    let since = usage::parse_since(query.get("since").unwrap_or(""), now)?;
    let owner: Option<String> = match tenant {
        Some(tenant) => Some(tenant.to_owned()),
        None => query
            .get("tenant")
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
    };
    let usage = daemon.metering().usage().clone();
    // SQLite blocks: off the async workers.
    let report = tokio::task::spawn_blocking(move || {
        let owner = owner.as_deref().map_or(Owner::Everyone, Owner::Tenant);
        Ok::<_, UsageError>(UsageReport {
            runs: usage.report(owner, since, now)?,
            storage: usage.storage_report(owner, since)?,
        })
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(json_response(StatusCode::OK, &report))
}
