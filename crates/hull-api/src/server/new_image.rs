//! What `POST /commit` and an import (`POST /images/create?fromSrc=…`)
//! share: the name the new image is to have, its Dockerfile `changes`, the
//! staging of its layer, and where the image is kept: the store's tags for
//! the operator, the tenant's own table (within its images quota) for a
//! tenant.

use hull_cloud::images::ImagesError;
use hull_image::limits::LimitError;
use hull_image::{CommitError, ImageConfig, Reference, StoreError};
use hyper::{Request, StatusCode};

use super::scope::Scope;
use super::{blocking, error_chain, tenant_images, ApiError};
use crate::daemon::Daemon;

/// Every value of a query parameter given more than once, as docker's
/// clients send `changes`.
pub(super) fn query_all<B>(request: &Request<B>, key: &str) -> Vec<String> {
    form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The normalized `repository:tag` of `repo` and `tag` (docker's CLI may
/// put the tag in `repo` and leave `tag` empty); `None` without a `repo`.
pub(super) fn target(repo: Option<&str>, tag: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(repo) = repo.filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let name = match tag.filter(|t| !t.is_empty()) {
        Some(tag) => format!("{repo}:{tag}"),
        None => repo.to_owned(),
    };
    let reference = Reference::parse(&name).map_err(StoreError::from)?;
    if reference.digest().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{name} names a digest: a new image takes a repository and a tag"),
        ));
    }
    Ok(Some(reference.with_default_tag().to_string()))
}

/// Applies the `changes` (Dockerfile instructions) to `config`.
pub(super) fn apply_changes(config: &mut ImageConfig, changes: &[String]) -> Result<(), ApiError> {
    hull_image::changes::apply(config, changes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid change: {}", error_chain(&e)),
        )
    })
}

/// Now, as image configs write it.
pub(super) fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Refuses up front a new image that a tenant's full images quota could
/// not hold, unless its name replaces one the tenant has.
pub(super) fn check_room(
    daemon: &Daemon,
    scope: Scope<'_>,
    target: Option<&str>,
) -> Result<(), ApiError> {
    let Scope::Tenant(tenant) = scope else {
        return Ok(());
    };
    let cloud = daemon.tenants();
    let Some(limit) = cloud.tenant(tenant)?.quota.images else {
        return Ok(());
    };
    let used = cloud.tenant_image_count(tenant)?;
    let replaces = match target {
        Some(name) => cloud.tenant_image_named(tenant, name)?.is_some(),
        None => false,
    };
    if used >= limit && !replaces {
        return Err(ImagesError::Quota {
            tenant: tenant.to_owned(),
            used,
            asked: 1,
            limit,
        }
        .into());
    }
    Ok(())
}

/// A staging directory of the image store, where a layer is spooled so
/// that it moves into the store with a rename.
pub(super) async fn staging(
    daemon: &Daemon,
    prefix: &'static str,
) -> Result<tempfile::TempDir, ApiError> {
    let images = daemon.images().clone();
    blocking(move || images.staging_dir(prefix)).await
}

/// A new layer's refusal: the client's archive (or the container's files)
/// is at fault, not the host.
pub(super) fn layer_error(what: &str, error: StoreError) -> ApiError {
    let status = match &error {
        StoreError::Commit(CommitError::Limit {
            source: LimitError::Disk { .. },
            ..
        }) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::Layer(_)
        | StoreError::Limit { .. }
        | StoreError::Commit(CommitError::Limit { .. }) => StatusCode::BAD_REQUEST,
        _ => return error.into(),
    };
    ApiError::new(status, format!("{what}: {}", error_chain(&error)))
}

/// Names the new image `id` in `scope` (`target`, or only its id), and
/// builds its rootfs ahead of its first run.
pub(super) async fn keep(
    daemon: &Daemon,
    scope: Scope<'_>,
    id: &str,
    target: Option<String>,
) -> Result<(), ApiError> {
    match scope {
        Scope::Operator => {
            if let Some(target) = target {
                let images = daemon.images().clone();
                let source = id.to_owned();
                blocking(move || images.tag(&source, &target)).await?;
            }
        }
        Scope::Tenant(tenant) => tenant_images::adopt(daemon, tenant, id, target).await?,
    }
    super::prebuild_rootfs(daemon.images().clone(), vec![id.to_owned()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_takes_a_tag_in_repo_or_beside_it() {
        let target = |repo, tag| target(repo, tag).unwrap();
        assert_eq!(target(None, Some("1")), None);
        assert_eq!(
            target(Some("app"), None).as_deref(),
            Some("docker.io/library/app:latest")
        );
        assert_eq!(
            target(Some("app:2"), Some("")).as_deref(),
            Some("docker.io/library/app:2")
        );
        assert_eq!(
            target(Some("reg:5000/me/app"), Some("3")).as_deref(),
            Some("reg:5000/me/app:3")
        );
        assert!(super::target(Some("Bad Name"), None).is_err());
        let digest = format!("app@sha256:{}", "a".repeat(64));
        assert!(super::target(Some(&digest), None).is_err());
    }

    #[test]
    fn changes_come_from_every_value_of_the_parameter() {
        let request = Request::builder()
            .uri("/commit?changes=CMD%20x&container=c&changes=ENV%20A%3D1")
            .body(())
            .unwrap();
        assert_eq!(query_all(&request, "changes"), ["CMD x", "ENV A=1"]);
        let mut config = ImageConfig::default();
        apply_changes(&mut config, &query_all(&request, "changes")).unwrap();
        assert_eq!(config.env, ["A=1"]);
        let err = apply_changes(&mut config, &["RUN x".into()]).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
    }
}
