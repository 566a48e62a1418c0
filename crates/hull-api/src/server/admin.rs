//! `/hull/admin/…`: the operator's endpoints for tenants and their keys.
//! Served on the Unix socket only; the tenant listener refuses them.

use hull_cloud::quota::Quota;
use hull_cloud::store::StoreError as CloudError;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::containers::{no_content, read_json, Query};
use super::{json_response, split_resource, ApiError, Body, RequestBody};
use crate::daemon::Daemon;

impl From<CloudError> for ApiError {
    fn from(error: CloudError) -> Self {
        let status = match error {
            CloudError::NoTenant(_) | CloudError::NoKey(_) => StatusCode::NOT_FOUND,
            CloudError::Exists(_) | CloudError::KeyExists(_) | CloudError::TooManyKeys(_) => {
                StatusCode::CONFLICT
            }
            CloudError::BadName(_) | CloudError::BadKey => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, super::error_chain(&error))
    }
}

/// `POST /hull/admin/tenants`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TenantCreate {
    name: String,
    /// `containers=20,memory=8g`, over Hyper.sh's defaults.
    quota: String,
}

/// A tenant with its keys, as `inspect` shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TenantDetail {
    #[serde(flatten)]
    tenant: hull_cloud::store::Tenant,
    keys: Vec<hull_cloud::store::KeyInfo>,
    /// What it holds now, as its quota counts it.
    used: super::tenancy::Use,
}

pub(super) async fn route(
    daemon: &Daemon,
    method: &Method,
    path: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let store = daemon.tenants();
    match (method, path) {
        (&Method::GET, "/hull/admin/tenants") => {
            Ok(json_response(StatusCode::OK, &store.tenants()?))
        }
        (&Method::POST, "/hull/admin/tenants") => {
            let create: TenantCreate = read_json(request).await?;
            let quota = Quota::default()
                .with_overrides(&create.quota)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
            let tenant = store.create_tenant(&create.name, quota)?;
            Ok(json_response(StatusCode::CREATED, &tenant))
        }
        (&Method::GET, "/hull/admin/keys") => {
            let query = Query::of(&request);
            Ok(json_response(
                StatusCode::OK,
                &store.keys(query.get("tenant"))?,
            ))
        }
        (&Method::DELETE, p) if p.starts_with("/hull/admin/keys/") => {
            let (key, _) = split_resource(p, "/hull/admin/keys/");
            store.remove_key(&key)?;
            Ok(no_content())
        }
        (method, p) if p.starts_with("/hull/admin/tenants/") => {
            let (name, action) = split_resource(p, "/hull/admin/tenants/");
            match (method, action) {
                (&Method::GET, "") => {
                    let detail = TenantDetail {
                        tenant: store.tenant(&name)?,
                        keys: store.keys(Some(&name))?,
                        used: super::tenancy::use_of(daemon, &name),
                    };
                    Ok(json_response(StatusCode::OK, &detail))
                }
                (&Method::DELETE, "") => {
                    store.tenant(&name)?;
                    // No create of the tenant's slips in between.
                    let _admitted = daemon.admission().lock(&name).await;
                    if Query::of(&request).flag("force") {
                        super::tenancy::remove_all(daemon, &name).await?;
                    } else {
                        super::tenancy::check_owns_nothing(daemon, &name)?;
                    }
                    let held = store.tenant_images(&name)?;
                    store.remove_tenant(&name)?;
                    super::tenant_net::forget_network(daemon, &name);
                    // Its image names went with it; images nobody else uses go too.
                    let ids = held.into_iter().map(|r| r.image).collect();
                    super::tenant_images::release(daemon, ids).await;
                    Ok(no_content())
                }
                (&Method::POST, "quota") => {
                    let spec: String = read_json(request).await?;
                    let quota = store
                        .tenant(&name)?
                        .quota
                        .with_overrides(&spec)
                        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
                    store.set_quota(&name, quota)?;
                    Ok(json_response(StatusCode::OK, &store.tenant(&name)?))
                }
                (&Method::POST, "certs") => {
                    store.tenant(&name)?;
                    let ca = crate::tls::OwnCa::open_or_create(&daemon.tls_dir()).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, super::error_chain(&e))
                    })?;
                    let bundle = ca.issue_client(&name).map_err(|e| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, super::error_chain(&e))
                    })?;
                    store.add_client_cert(&name, &bundle.fingerprint)?;
                    Ok(json_response(StatusCode::CREATED, &bundle))
                }
                (&Method::POST, "network") => {
                    store.tenant(&name)?;
                    let network = super::tenant_net::tenant_network(daemon, &name)?;
                    Ok(json_response(
                        StatusCode::OK,
                        &serde_json::json!({ "Name": network }),
                    ))
                }
                (&Method::POST, "keys") => {
                    // With a body, the operator brings the key; without, one is made.
                    let brought: Option<hull_cloud::store::NewKey> = read_json(request).await?;
                    let key = match brought {
                        Some(key) => store.import_key(&name, key)?,
                        None => store.create_key(&name)?,
                    };
                    Ok(json_response(StatusCode::CREATED, &key))
                }
                _ => Err(super::not_found(method, p)),
            }
        }
        _ => Err(super::not_found(method, path)),
    }
}
