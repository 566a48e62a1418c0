//! `/images/...` for a tenant: its own view of the shared image store.
//!
//! Blobs and image records stay shared (a layer is stored once); what a
//! tenant may name is only what its table in the cloud database lists
//! (`hull_cloud::images`). A name, id, id prefix or digest of an image that
//! is not in that table answers exactly as one that does not exist. A
//! tenant's pull always fetches the manifest from the registry with the
//! tenant's own credentials (never the operator's, never a mirror), so an
//! image another tenant pulled is usable only with access of one's own.

use std::sync::Arc;

use hull_cloud::images::{IdMatch, ImageRef, ImagesError, RefKind};
use hull_cloud::store::Store as CloudStore;
use hull_image::reference::familiar;
use hull_image::registry::{self, Credentials, PullEvent, PullOptions};
use hull_image::{ImageStore, Reference, StoreError, TagError};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Mutex;

use super::images::{self, name_in, query_value};
use super::pull::{self, Progress};
use super::scope::{self, Scope};
use super::{blocking, error_chain, full, json_response, ApiError, Body, RequestBody};
use crate::daemon::Daemon;
use crate::types::ImageDeleteItem;

/// Held while a tenant's name is recorded after a pull and while an image
/// nobody names any more is deleted from the shared store, so a deletion
/// cannot slip between another tenant's pull and its record.
static SHARED_IMAGES: Mutex<()> = Mutex::const_new(());

impl From<ImagesError> for ApiError {
    fn from(error: ImagesError) -> Self {
        let status = match error {
            ImagesError::Quota { .. } => StatusCode::FORBIDDEN,
            ImagesError::BadId(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, error_chain(&error))
    }
}

/// The id (`sha256:…`) of the image `reference` names among `tenant`'s own,
/// resolved as docker resolves a reference: a tag (`busybox` is
/// `docker.io/library/busybox:latest`), `name@sha256:…`, a full id or a
/// unique id prefix. Anything else answers as a missing image does.
pub(super) async fn resolve(
    daemon: &Daemon,
    tenant: &str,
    reference: &str,
) -> Result<String, ApiError> {
    let id = lookup(daemon.tenants(), tenant, reference)?;
    // The table may outlive a record the operator deleted by force.
    let images = daemon.images().clone();
    let wanted = id.clone();
    blocking(move || images.resolve(&wanted))
        .await
        .map_err(|_| not_found(reference))?;
    Ok(id)
}

/// [`scope::image_visible`] for a tenant: the one way these handlers
/// resolve a name, as the create path does.
async fn visible(daemon: &Daemon, tenant: &str, reference: &str) -> Result<String, ApiError> {
    scope::image_visible(daemon, Scope::Tenant(tenant), reference).await
}

fn lookup(cloud: &CloudStore, tenant: &str, reference: &str) -> Result<String, ApiError> {
    let by_prefix = |prefix: &str| -> Result<Option<String>, ApiError> {
        match cloud.tenant_image_by_id_prefix(tenant, prefix)? {
            IdMatch::None => Ok(None),
            IdMatch::One(id) => Ok(Some(id)),
            IdMatch::Many(count) => Err(StoreError::Ambiguous {
                reference: reference.to_owned(),
                count,
            }
            .into()),
        }
    };
    if let Some(prefix) = reference.strip_prefix("sha256:") {
        return by_prefix(prefix)?.ok_or_else(|| not_found(reference));
    }
    let parsed = Reference::parse(reference);
    if let Ok(parsed) = &parsed {
        let parsed = parsed.clone().with_default_tag();
        if let Some(id) = cloud.tenant_image_named(tenant, &parsed.to_string())? {
            return Ok(id);
        }
        // `name@<image id>`, as the store allows.
        if let Some(digest) = parsed.digest().map(|d| d.to_string()) {
            if cloud.tenant_holds_image(tenant, &digest)? {
                return Ok(digest);
            }
        }
    }
    let hex = reference
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex {
        if let Some(id) = by_prefix(reference)? {
            return Ok(id);
        }
    }
    parsed.map_err(StoreError::from)?;
    Err(not_found(reference))
}

/// The answer for an image that is not there, worded as the store words it.
fn not_found(reference: &str) -> ApiError {
    let shown = Reference::parse(reference).map_or_else(
        |_| reference.to_owned(),
        |r| r.with_default_tag().familiar(),
    );
    StoreError::NotFound(shown).into()
}

/// The tenant's (familiar) tags and digests of the image `id`.
fn names_of(refs: &[ImageRef], id: &str) -> (Vec<String>, Vec<String>) {
    let of = |kind| {
        refs.iter()
            .filter(|r| r.image == id && r.kind == kind)
            .map(|r| familiar(&r.name))
            .collect::<Vec<_>>()
    };
    (of(RefKind::Tag), of(RefKind::Digest))
}

/// `GET /images/json`: the tenant's images only.
pub(super) async fn list(daemon: &Daemon, tenant: &str) -> Result<Response<Body>, ApiError> {
    let refs = daemon.tenants().tenant_images(tenant)?;
    let images = daemon.images().clone();
    let all = blocking(move || images.list()).await?;
    let body: Vec<_> = all
        .into_iter()
        .filter(|image| refs.iter().any(|r| r.image == image.id))
        .map(|image| {
            let (tags, digests) = names_of(&refs, &image.id);
            images::summary(image, tags, digests)
        })
        .collect();
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /images/{name}/json`.
pub(super) async fn inspect(
    daemon: &Daemon,
    tenant: &str,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let id = visible(daemon, tenant, &name_in(path, "/json")?).await?;
    let refs = daemon.tenants().tenant_images(tenant)?;
    let images = daemon.images().clone();
    let wanted = id.clone();
    let image = blocking(move || images.resolve(&wanted)).await?;
    let (tags, digests) = names_of(&refs, &id);
    Ok(json_response(
        StatusCode::OK,
        &images::inspect_body(image, tags, digests),
    ))
}

/// `GET /images/{name}/history`.
pub(super) async fn history(
    daemon: &Daemon,
    tenant: &str,
    path: &str,
) -> Result<Response<Body>, ApiError> {
    let id = visible(daemon, tenant, &name_in(path, "/history")?).await?;
    let refs = daemon.tenants().tenant_images(tenant)?;
    let (tags, _) = names_of(&refs, &id);
    images::history_of(daemon, id, Some(tags)).await
}

/// `POST /images/{name}/tag?repo=…&tag=…`: a name in the tenant's table.
pub(super) async fn tag(
    daemon: &Daemon,
    tenant: &str,
    path: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let id = visible(daemon, tenant, &name_in(path, "/tag")?).await?;
    let target = super::images::tag_target(request)?;
    let reference = Reference::parse(&target).map_err(StoreError::from)?;
    if reference.digest().is_some() {
        return Err(StoreError::from(TagError::DigestTarget(target)).into());
    }
    let name = reference.with_default_tag().to_string();
    let released = daemon
        .tenants()
        .record_tenant_image(tenant, &id, &[(RefKind::Tag, name)])?;
    release(daemon, released).await;
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// `DELETE /images/{name}?force=…`: removes the tenant's name; the shared
/// image goes only when nobody (no tenant, no operator tag, no container)
/// uses it any more. What the tenant is told never says which.
pub(super) async fn remove(
    daemon: &Daemon,
    tenant: &str,
    path: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let name = name_in(path, "")?;
    let force = images::is_true(query_value(request, "force"));
    let id = visible(daemon, tenant, &name).await?;
    let cloud = daemon.tenants();
    let by_tag = Reference::parse(&name)
        .ok()
        .filter(|r| r.digest().is_none())
        .map(|r| r.with_default_tag().to_string())
        .filter(|tag| cloud.tenant_image_named(tenant, tag).ok().flatten() == Some(id.clone()));
    let removed = match by_tag {
        Some(tag) => cloud.forget_tenant_name(tenant, &tag)?,
        None => {
            let refs = cloud.tenant_images(tenant)?;
            let (tags, _) = names_of(&refs, &id);
            if tags.len() > 1 && !force {
                return Err(StoreError::from(TagError::MultipleTags {
                    image: id.trim_start_matches("sha256:")[..12].to_owned(),
                })
                .into());
            }
            cloud.forget_tenant_image(tenant, &id)?
        }
    };
    let mut body: Vec<ImageDeleteItem> = removed
        .iter()
        .filter(|r| r.kind != RefKind::Id)
        .map(|r| ImageDeleteItem {
            untagged: Some(familiar(&r.name)),
            ..Default::default()
        })
        .collect();
    if !cloud.tenant_holds_image(tenant, &id)? {
        body.push(ImageDeleteItem {
            deleted: Some(id.clone()),
            ..Default::default()
        });
        release(daemon, vec![id]).await;
    }
    Ok(json_response(StatusCode::OK, &body))
}

/// Deletes from the shared store those of `ids` that nobody uses: no
/// tenant names them, no operator tag, no container or run.
pub(super) async fn release(daemon: &Daemon, mut ids: Vec<String>) {
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return;
    }
    let _shared = SHARED_IMAGES.lock().await;
    let in_use = daemon.used_image_ids();
    let images = daemon.images().clone();
    let unused: Vec<String> = ids.into_iter().filter(|id| !in_use.contains(id)).collect();
    let deleted = blocking(move || {
        for id in unused {
            let Ok(image) = images.resolve(&id) else {
                continue;
            };
            if image.repo_tags.is_empty() {
                images.remove(&id, false, &in_use)?;
            }
        }
        Ok(())
    })
    .await;
    if let Err(err) = deleted {
        tracing::warn!(error = ?err, "cannot delete an image no one uses");
    }
}

/// Gives `tenant` an image made on its behalf (a commit, an import) under
/// `name`, or its id alone. One that its images quota cannot hold is
/// refused and deleted again, unless someone else uses it.
pub(super) async fn adopt(
    daemon: &Daemon,
    tenant: &str,
    id: &str,
    name: Option<String>,
) -> Result<(), ApiError> {
    let cloud = daemon.tenants();
    let names: Vec<_> = name.into_iter().map(|n| (RefKind::Tag, n)).collect();
    let recorded = {
        let _shared = SHARED_IMAGES.lock().await;
        let recorded = cloud.record_tenant_image(tenant, id, &names);
        if recorded.is_ok() {
            // As after a pull: a removal may have deleted the new image
            // between its making and its record.
            let store = daemon.images().clone();
            let wanted = id.to_owned();
            if blocking(move || Ok(store.resolve(&wanted).is_err())).await? {
                cloud.forget_tenant_image(tenant, id)?;
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "the new image was removed as it was made: try again",
                ));
            }
        }
        recorded
    };
    match recorded {
        Ok(released) => {
            release(daemon, released).await;
            Ok(())
        }
        Err(err) => {
            release(daemon, vec![id.to_owned()]).await;
            Err(err.into())
        }
    }
}

/// `POST /images/create?fromImage=…&tag=…` for a tenant.
pub(super) async fn pull(
    daemon: &Daemon,
    tenant: &str,
    request: &Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let (reference, insecure) = pull::parse_query(request.uri().query().unwrap_or(""))?;
    if insecure {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a tenant cannot pull over plain HTTP (insecure): which registries may be reached so is the operator's choice",
        ));
    }
    // Only what the tenant sends: never the credentials hulld keeps.
    let credentials = match request.headers().get(pull::REGISTRY_AUTH) {
        Some(value) => Credentials::from_header(value.to_str().unwrap_or(""))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, error_chain(&e)))?,
        None => None,
    };
    let reference = reference.with_default_tag();
    let cloud = daemon.tenants().clone();
    check_room(&cloud, tenant, &reference.to_string())?;
    let job = PullJob {
        store: daemon.images().clone(),
        client: daemon.tenant_registry().clone(),
        cloud,
        metrics: daemon.metrics().clone(),
        tenant: tenant.to_owned(),
        reference,
        credentials,
    };
    let (progress, response) = pull::progress_response();
    tokio::spawn(async move {
        if let Err(err) = job.run(&progress).await {
            tracing::warn!(tenant = %job.tenant, reference = %job.reference, error = %error_chain(err.as_ref()), "a tenant's pull failed");
            progress.error(err.as_ref());
        }
    });
    Ok(response)
}

/// Refuses a pull up front when the tenant's images quota is full, unless
/// the name is one it keeps already (a pull again of the same tag).
fn check_room(cloud: &CloudStore, tenant: &str, name: &str) -> Result<(), ApiError> {
    let Some(limit) = cloud.tenant(tenant)?.quota.images else {
        return Ok(());
    };
    let used = cloud.tenant_image_count(tenant)?;
    if used >= limit && cloud.tenant_image_named(tenant, name)?.is_none() {
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

/// A tenant's pull, run after its response has started.
struct PullJob {
    store: Arc<ImageStore>,
    client: registry::RegistryClient,
    cloud: Arc<CloudStore>,
    metrics: Arc<crate::metrics::Metrics>,
    tenant: String,
    reference: Reference,
    credentials: Option<Credentials>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl PullJob {
    async fn run(&self, progress: &Progress) -> Result<(), BoxError> {
        let shown = self.reference.familiar();
        // The shared store's own state is not the tenant's business:
        // whether a layer or the image was there already, or is being
        // fetched for someone else, is not told.
        let events = |mut event: PullEvent| {
            if event.status.starts_with("Status:") || event.status == "Waiting" {
                return;
            }
            if event.status == "Already exists" {
                event.status = "Pull complete".to_owned();
            }
            progress.event(event);
        };
        let options = PullOptions {
            tag: false,
            host_config: false,
        };
        let pulled = registry::pull_with(
            &self.store,
            &self.client,
            &self.reference,
            self.credentials.clone(),
            options,
            &events,
        )
        .await;
        self.metrics.pull(pulled.is_ok());
        let pulled = pulled?;
        let id = pulled.id.to_string();
        let mut names = vec![(
            RefKind::Digest,
            format!("{}@{}", self.reference.name(), pulled.digest),
        )];
        let tag = self.reference.tag().map(|_| self.reference.to_string());
        let before = match &tag {
            Some(tag) => self.cloud.tenant_image_named(&self.tenant, tag)?,
            None => None,
        };
        names.extend(tag.map(|tag| (RefKind::Tag, tag)));
        {
            let _shared = SHARED_IMAGES.lock().await;
            self.cloud.record_tenant_image(&self.tenant, &id, &names)?;
            // A removal may have deleted the shared image between the
            // commit and the record: then the record points at nothing.
            let store = self.store.clone();
            let wanted = id.clone();
            let there = tokio::task::spawn_blocking(move || store.resolve(&wanted).is_ok()).await?;
            if !there {
                self.cloud.forget_tenant_image(&self.tenant, &id)?;
                return Err(
                    format!("{shown} was removed while it was pulled: pull it again").into(),
                );
            }
        }
        super::prebuild_rootfs(self.store.clone(), vec![id.clone()]);
        let status = if before.as_deref() == Some(id.as_str()) {
            format!("Status: Image is up to date for {shown}")
        } else {
            format!("Status: Downloaded newer image for {shown}")
        };
        progress.event(PullEvent {
            id: None,
            status: format!("Digest: {}", pulled.digest),
            progress: None,
        });
        progress.event(PullEvent {
            id: None,
            status,
            progress: None,
        });
        Ok(())
    }
}

/// `POST /images/load` for a tenant. Its body was read (and, when signed,
/// checked against its signature) before any handler runs, so it is held
/// to the tenant listener's body limit.
pub(super) async fn load(
    daemon: &Daemon,
    tenant: &str,
    request: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    // Spooled whole (and, when signed, held to its hash) before any import.
    let spool = super::images::spool_upload(daemon, request).await?;
    let images = daemon.images().clone();
    let (lines, loaded) = blocking(move || {
        let archive =
            std::fs::File::open(spool.path()).map_err(|source| hull_image::StoreError::Read {
                path: spool.path().to_owned(),
                source,
            })?;
        let mut lines = Vec::new();
        let loaded = images.import(std::io::BufReader::new(archive), &mut |line| {
            lines.push(line.to_owned())
        })?;
        Ok((lines, loaded))
    })
    .await?;
    let cloud = daemon.tenants();
    if let Some(limit) = cloud.tenant(tenant)?.quota.images {
        let used = cloud.tenant_image_count(tenant)?;
        let mut new: Vec<&str> = Vec::new();
        for image in &loaded {
            if !cloud.tenant_holds_image(tenant, &image.id)? && !new.contains(&image.id.as_str()) {
                new.push(&image.id);
            }
        }
        if used + new.len() as u64 > limit {
            release(daemon, loaded.iter().map(|i| i.id.clone()).collect()).await;
            return Err(ImagesError::Quota {
                tenant: tenant.to_owned(),
                used,
                asked: new.len() as u64,
                limit,
            }
            .into());
        }
    }
    let mut released = Vec::new();
    {
        let _shared = SHARED_IMAGES.lock().await;
        for image in &loaded {
            let names: Vec<_> = image
                .repo_tags
                .iter()
                .map(|tag| (RefKind::Tag, tag.clone()))
                .collect();
            released.extend(cloud.record_tenant_image(tenant, &image.id, &names)?);
        }
        // As after a pull: a removal may have deleted a loaded image
        // between its import and its record.
        let store = daemon.images().clone();
        let ids: Vec<String> = loaded.iter().map(|i| i.id.clone()).collect();
        let gone = blocking(move || {
            Ok(ids
                .into_iter()
                .filter(|id| store.resolve(id).is_err())
                .collect::<Vec<_>>())
        })
        .await?;
        if !gone.is_empty() {
            for id in &gone {
                cloud.forget_tenant_image(tenant, id)?;
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "an image was removed while it was loaded: load the archive again",
            ));
        }
    }
    release(daemon, released).await;
    super::prebuild_rootfs(
        daemon.images().clone(),
        loaded.into_iter().map(|image| image.id).collect(),
    );
    Ok(images::stream_lines(lines))
}

#[cfg(test)]
#[path = "tenant_images_tests.rs"]
mod tests;
