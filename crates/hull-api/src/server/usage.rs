//! `GET /hull/usage` and `GET /hull/admin/usage`: the runs metering
//! recorded, a tenant's own on the tenant listener, everyone's on the
//! operator's socket.

use hull_cloud::usage::{self, Owner, UsageError, UsageReport};
use hyper::{Request, Response, StatusCode};

use super::containers::Query;
use super::scope::Scope;
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
    let owner = owner(tenant, query.get("tenant"));
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
    Ok(json_response(StatusCode::OK, &shown_to(report, tenant)))
}

/// The report as `tenant` reads it: its stored items (`data@acme`,
/// `sha256:…@acme` in the records) by its own names.
fn shown_to(mut report: UsageReport, tenant: Option<&str>) -> UsageReport {
    if let Some(tenant) = tenant {
        let scope = Scope::Tenant(tenant);
        for item in &mut report.storage {
            if let Some(name) = scope.unqualify(&item.name) {
                item.name = name.to_owned();
            }
        }
    }
    report
}

/// Whose records a report holds: a tenant's own whatever it asks for; the
/// operator's pick (`?tenant=`), or everyone's.
fn owner(tenant: Option<&str>, asked: Option<&str>) -> Option<String> {
    match tenant {
        Some(tenant) => Some(tenant.to_owned()),
        None => asked.filter(|t| !t.is_empty()).map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_own_records_whatever_it_asks_for() {
        assert_eq!(owner(Some("acme"), Some("beta")).as_deref(), Some("acme"));
        assert_eq!(owner(Some("acme"), Some("")).as_deref(), Some("acme"));
        assert_eq!(owner(None, Some("beta")).as_deref(), Some("beta"));
        assert_eq!(owner(None, Some("")), None);
        assert_eq!(owner(None, None), None);
    }

    #[test]
    fn a_tenant_reads_its_stored_items_by_its_own_names() {
        let item = |name: &str| hull_cloud::storage::StorageUse {
            kind: "volume".into(),
            name: name.into(),
            tenant: Some("acme".into()),
            bytes: 1,
            first: 0,
            last: 0,
            gone: None,
            gb_seconds: 0.0,
        };
        let report = || UsageReport {
            runs: Vec::new(),
            storage: vec![item("data@acme"), item("sha256:ab@acme")],
        };
        let names = |report: UsageReport| -> Vec<String> {
            report.storage.into_iter().map(|s| s.name).collect()
        };
        assert_eq!(
            names(shown_to(report(), Some("acme"))),
            ["data", "sha256:ab"]
        );
        assert_eq!(
            names(shown_to(report(), None)),
            ["data@acme", "sha256:ab@acme"]
        );
    }

    #[test]
    fn bad_or_future_sinces_are_bad_requests() {
        for since in ["soon", "1800000000000"] {
            let error = ApiError::from(usage::parse_since(since, 0).unwrap_err());
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{since}");
        }
    }
}
