//! Pushing an image: its blobs (those the registry lacks, uploaded whole),
//! then its manifest under the tag.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};

use super::auth::Credentials;
use super::client::{ClientError, RegistryClient, Repository};
use super::pull::PullEvent;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::{
    Descriptor, Manifest, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_TAR, MEDIA_TYPE_LAYER_ZSTD,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::store::{Image, ImageStore, StoreError};

/// Errors of pushing an image.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot push {reference}: name a tag to push")]
    NoTag { reference: String },
    #[error(
        "registry {registry} accepted the upload of blob {digest} without saying where it goes"
    )]
    NoLocation { registry: String, digest: Digest },
    #[error("cannot read blob {digest} of the store")]
    ReadBlob {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("the image store task of the push of {reference} failed")]
    Task { reference: String },
}

/// What a push left in the registry.
#[derive(Clone, Debug)]
pub struct Pushed {
    pub digest: Digest,
    pub size: u64,
}

type Events<'a> = &'a (dyn Fn(PullEvent) + Send + Sync);

fn event(id: Option<&str>, status: impl Into<String>) -> PullEvent {
    PullEvent {
        id: id.map(str::to_owned),
        status: status.into(),
        progress: None,
    }
}

/// The OCI layer media type of a layer recorded under an OCI or Docker name.
fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MEDIA_TYPE_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => MEDIA_TYPE_LAYER_TAR,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => MEDIA_TYPE_LAYER_ZSTD,
        other => other,
    }
}

/// The manifest to push: the one the image came with, else an OCI manifest
/// made from its record. Returns its media type and bytes.
pub fn manifest_of(store: &ImageStore, image: &Image) -> Result<(String, Vec<u8>), StoreError> {
    if let Some(manifest) = &image.record.manifest {
        if store.has_blob(&manifest.digest) {
            return Ok((
                manifest.media_type.clone(),
                store.read_blob(&manifest.digest)?,
            ));
        }
    }
    let descriptor = |media_type: &str, digest: &Digest, size: u64| Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size,
        annotations: None,
        platform: None,
    };
    let config = &image.record.config;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        config: descriptor(MEDIA_TYPE_OCI_CONFIG, &config.digest, config.size),
        layers: image
            .record
            .layers
            .iter()
            .map(|l| descriptor(oci_layer_type(&l.media_type), &l.digest, l.size))
            .collect(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("manifests serialize");
    Ok((MEDIA_TYPE_OCI_MANIFEST.to_owned(), bytes))
}

/// Pushes the stored image `reference` names to the registry it names.
pub async fn push(
    store: &ImageStore,
    client: &RegistryClient,
    reference: &Reference,
    credentials: Option<Credentials>,
    events: Events<'_>,
) -> Result<Pushed, PushError> {
    let reference = reference.clone().with_default_tag();
    let shown = reference.familiar();
    let tag = reference
        .tag()
        .ok_or_else(|| PushError::NoTag {
            reference: shown.clone(),
        })?
        .to_owned();
    let resolving = store.clone();
    let name = reference.to_string();
    let (image, (media_type, manifest)) = tokio::task::spawn_blocking(move || {
        let image = resolving.resolve(&name)?;
        let manifest = manifest_of(&resolving, &image)?;
        Ok::<_, StoreError>((image, manifest))
    })
    .await
    .map_err(|_| PushError::Task {
        reference: shown.clone(),
    })??;
    let repository = client.repository(&reference, credentials);
    events(event(
        None,
        format!(
            "The push refers to repository [{}]",
            reference.familiar_name()
        ),
    ));
    let blobs: Vec<(Digest, u64)> = image
        .record
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .chain([(image.record.config.digest.clone(), image.record.config.size)])
        .collect();
    // Like docker, name the layers only; the config goes up silently.
    let config = &image.record.config.digest;
    let id_of = |digest: &Digest| (digest != config).then(|| digest.short().to_owned());
    for (digest, _) in &blobs {
        if let Some(id) = id_of(digest) {
            events(event(Some(&id), "Preparing"));
        }
    }
    for (digest, size) in &blobs {
        let id = id_of(digest);
        let id = id.as_deref();
        let events = |e: PullEvent| {
            if e.id.is_some() {
                events(e)
            }
        };
        if blob_exists(&repository, digest).await? {
            events(event(id, "Layer already exists"));
            continue;
        }
        events(PullEvent {
            id: id.map(str::to_owned),
            status: "Pushing".to_owned(),
            progress: Some((0, *size)),
        });
        upload(store, &repository, digest, *size).await?;
        events(event(id, "Pushed"));
    }
    let digest = Digest::of(&manifest);
    let size = manifest.len() as u64;
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_str(&media_type).expect("ascii"),
    );
    let url = repository.manifest_url(&tag);
    let response = repository
        .send_with(Method::PUT, &url, headers, Some(Bytes::from(manifest)))
        .await?;
    repository
        .check(response, &format!("the manifest of {shown}"))
        .await?;
    events(event(None, format!("{tag}: digest: {digest} size: {size}")));
    Ok(Pushed { digest, size })
}

async fn blob_exists(repository: &Repository, digest: &Digest) -> Result<bool, ClientError> {
    let response = repository
        .send_with(
            Method::HEAD,
            &repository.blob_url(digest),
            HeaderMap::new(),
            None,
        )
        .await?;
    match response.status() {
        StatusCode::NOT_FOUND => Ok(false),
        s if s.is_success() => Ok(true),
        _ => repository
            .check(response, &format!("blob {digest}"))
            .await
            .map(|_| false),
    }
}

/// A monolithic upload: `POST …/blobs/uploads/`, then `PUT <location>&digest=…` with the blob.
async fn upload(
    store: &ImageStore,
    repository: &Repository,
    digest: &Digest,
    size: u64,
) -> Result<(), PushError> {
    let start = repository.upload_url();
    let response = repository
        .send_with(Method::POST, &start, HeaderMap::new(), Some(Bytes::new()))
        .await?;
    let response = repository
        .check(response, &format!("the upload of blob {digest}"))
        .await?;
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| PushError::NoLocation {
            registry: repository.domain().to_owned(),
            digest: digest.clone(),
        })?;
    let url = upload_put_url(&start, location, digest);
    let path = store.blob_file(digest);
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|source| PushError::ReadBlob {
            digest: digest.clone(),
            source,
        })?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    let response = repository
        .send_stream(Method::PUT, &url, headers, body)
        .await?;
    repository
        .check(response, &format!("the upload of blob {digest}"))
        .await?;
    Ok(())
}

/// Where to `PUT` a blob: the upload's `Location` (absolute, or relative to
/// the registry) with the digest added to its query.
pub(crate) fn upload_put_url(start: &str, location: &str, digest: &Digest) -> String {
    let absolute = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        let origin_end = start
            .find("://")
            .and_then(|i| start[i + 3..].find('/').map(|j| i + 3 + j))
            .unwrap_or(start.len());
        format!(
            "{}/{}",
            &start[..origin_end],
            location.trim_start_matches('/')
        )
    };
    let separator = if absolute.contains('?') { '&' } else { '?' };
    format!("{absolute}{separator}digest={digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_get_the_digest_in_their_query() {
        let start = "http://127.0.0.1:5000/v2/me/bb/blobs/uploads/";
        let d = Digest::of(b"");
        assert_eq!(
            upload_put_url(start, "/v2/me/bb/blobs/uploads/u1?_state=x", &d),
            format!("http://127.0.0.1:5000/v2/me/bb/blobs/uploads/u1?_state=x&digest={d}")
        );
        assert_eq!(
            upload_put_url(start, "https://s3.example/u2", &d),
            format!("https://s3.example/u2?digest={d}")
        );
    }

    #[test]
    fn docker_layer_types_become_oci_ones() {
        assert_eq!(
            oci_layer_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            MEDIA_TYPE_LAYER_GZIP
        );
        assert_eq!(oci_layer_type(MEDIA_TYPE_LAYER_ZSTD), MEDIA_TYPE_LAYER_ZSTD);
    }
}
