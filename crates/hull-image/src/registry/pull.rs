//! Pulling an image: resolve the reference to the platform's manifest, fetch
//! what the store lacks (a few layers at a time, each verified while it
//! streams), then commit the whole image at once.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use super::auth::Credentials;
use super::client::{ClientError, RegistryClient, Repository};
use super::download::{self, DownloadError};
use super::inflight;
use super::manifest::{self, Document, ManifestError};
use super::streamed::StreamedCheck;
use crate::digest::Digest;
use crate::layer::LayerInfo;
use crate::limits::{check_disk, LimitError, MAX_CONFIG};
use crate::reference::Reference;
use crate::spec::{Descriptor, Manifest};
use crate::store::{ImageStore, PulledImage, PulledLayer, StoreError};

/// Layers downloaded at the same time, as docker's default.
const CONCURRENT_DOWNLOADS: usize = 3;
/// Least time between two progress events of one layer.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Errors of pulling an image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] ClientError),
    #[error("cannot read the manifest of {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: ManifestError,
    },
    #[error("no matching manifest for {platform} in the manifest list entries of {reference}")]
    NoPlatform { reference: String, platform: String },
    #[error("manifest {digest} is {actual} bytes long, the index says {expected}")]
    ManifestSize {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("{what} {digest} of {reference} is refused")]
    Limit {
        what: &'static str,
        reference: String,
        digest: Digest,
        #[source]
        source: LimitError,
    },
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the image store task of the pull of {reference} failed")]
    Task { reference: String },
}

/// A step of a pull, shaped like a line of docker's progress stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullEvent {
    /// The layer (short digest) or tag the event is about.
    pub id: Option<String>,
    pub status: String,
    /// Bytes done and total, while downloading.
    pub progress: Option<(u64, u64)>,
}

impl PullEvent {
    fn new(id: Option<&str>, status: impl Into<String>) -> PullEvent {
        PullEvent {
            id: id.map(str::to_owned),
            status: status.into(),
            progress: None,
        }
    }
}

/// What a pull brought.
#[derive(Clone, Debug)]
pub struct Pulled {
    /// The reference as pulled, its tag defaulted.
    pub reference: Reference,
    /// Digest of what the reference named: the index or the manifest.
    pub digest: Digest,
    /// The image id (its config's digest).
    pub id: Digest,
    /// False when the store already had this image under this name.
    pub changed: bool,
}

type Events<'a> = &'a (dyn Fn(PullEvent) + Send + Sync);

/// How a pull treats the store's shared names and what the host configured.
#[derive(Clone, Copy, Debug)]
pub struct PullOptions {
    /// Point the store's own tag at the image (the operator's view).
    pub tag: bool,
    /// Try the configured mirrors before the registry, and fall back to the
    /// credentials configured for the registry when none are given.
    pub host_config: bool,
}

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            tag: true,
            host_config: true,
        }
    }
}

/// Pulls `reference` into `store`, reporting each step to `events`.
pub async fn pull(
    store: &ImageStore,
    client: &RegistryClient,
    reference: &Reference,
    credentials: Option<Credentials>,
    events: Events<'_>,
) -> Result<Pulled, PullError> {
    pull_with(
        store,
        client,
        reference,
        credentials,
        PullOptions::default(),
        events,
    )
    .await
}

/// [`pull`], as `options` say. Without the host's configuration, the
/// manifest always comes from the registry itself with exactly
/// `credentials`, so that the pull proves the caller's own access to the
/// image even when its blobs are already in the store.
pub async fn pull_with(
    store: &ImageStore,
    client: &RegistryClient,
    reference: &Reference,
    credentials: Option<Credentials>,
    options: PullOptions,
    events: Events<'_>,
) -> Result<Pulled, PullError> {
    let reference = reference.clone().with_default_tag();
    let shown = reference.familiar();
    let wanted = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => digest.to_string(),
        (None, tag) => tag.unwrap_or(crate::reference::DEFAULT_TAG).to_owned(),
    };
    events(PullEvent::new(
        Some(&wanted),
        format!("Pulling from {}", reference.path()),
    ));
    let (repository, (bytes, content_type, digest)) = first_source(
        client,
        &reference,
        credentials,
        options.host_config,
        &shown,
        &wanted,
    )
    .await?;
    let parse = |content_type: Option<&str>, bytes: &[u8]| {
        manifest::parse(content_type, bytes).map_err(|source| PullError::Manifest {
            reference: shown.clone(),
            source,
        })
    };
    let (manifest, manifest_desc, manifest_bytes, index) =
        match parse(content_type.as_deref(), &bytes)? {
            Document::Manifest(m) => {
                let media_type = m.media_type.clone().or(content_type);
                let desc = descriptor(media_type, &digest, bytes.len());
                (m, desc, bytes, None)
            }
            Document::Index(index) => {
                let platform = manifest::host_platform();
                let chosen =
                    manifest::select(&index, &platform).ok_or_else(|| PullError::NoPlatform {
                        reference: shown.clone(),
                        platform: manifest::platform_name(&platform),
                    })?;
                let chosen = chosen.clone();
                let (m_bytes, m_type, _) = repository
                    .manifest(&shown, &chosen.digest.to_string())
                    .await?;
                if m_bytes.len() as u64 != chosen.size {
                    return Err(PullError::ManifestSize {
                        digest: chosen.digest,
                        expected: chosen.size,
                        actual: m_bytes.len() as u64,
                    });
                }
                let Document::Manifest(m) = parse(m_type.as_deref(), &m_bytes)? else {
                    return Err(PullError::Manifest {
                        reference: shown.clone(),
                        source: ManifestError::MediaType(chosen.media_type),
                    });
                };
                let index_desc = descriptor(
                    index.media_type.clone().or(content_type),
                    &digest,
                    bytes.len(),
                );
                (m, chosen, m_bytes, Some((index_desc, bytes.to_vec())))
            }
        };
    tracing::info!(reference = %shown, manifest = %manifest_desc.digest, "pulling");

    let staging = store.staging_dir("pull-")?;
    check_sizes(store, &manifest, staging.path(), &shown)?;
    let config_bytes = fetch_config(store, &repository, &manifest.config, staging.path()).await?;
    let layers = fetch_layers(store, &repository, &manifest, staging.path(), events).await?;
    let downloaded: Vec<Digest> = layers
        .iter()
        .filter(|l| l.staged.is_some())
        .map(|l| l.descriptor.digest.clone())
        .collect();

    let image = PulledImage {
        manifest: manifest_desc,
        manifest_bytes: manifest_bytes.to_vec(),
        index,
        config: manifest.config.clone(),
        config_bytes,
        layers,
        tag: reference
            .tag()
            .filter(|_| options.tag)
            .map(|_| reference.to_string()),
        repository: reference.name(),
    };
    let committing = store.clone();
    let committed = tokio::task::spawn_blocking(move || committing.commit_pulled(image))
        .await
        .map_err(|_| PullError::Task {
            reference: shown.clone(),
        })??;
    drop(staging);
    for layer in &downloaded {
        events(PullEvent::new(Some(layer.short()), "Pull complete"));
    }
    events(PullEvent::new(None, format!("Digest: {digest}")));
    let status = if committed.changed {
        format!("Status: Downloaded newer image for {shown}")
    } else {
        format!("Status: Image is up to date for {shown}")
    };
    events(PullEvent::new(None, status));
    Ok(Pulled {
        reference,
        digest,
        id: committed.id,
        changed: committed.changed,
    })
}

/// The first source that has the manifest: each mirror in turn, then the
/// registry itself. A mirror that fails or lacks the image is passed over;
/// the rest of the pull then comes from the source chosen.
async fn first_source(
    client: &RegistryClient,
    reference: &Reference,
    credentials: Option<Credentials>,
    host_config: bool,
    shown: &str,
    wanted: &str,
) -> Result<(Repository, (Bytes, Option<String>, Digest)), PullError> {
    let mirrors = if host_config {
        client.mirror_repositories(reference)
    } else {
        Vec::new()
    };
    for mirror in mirrors {
        match mirror.manifest(shown, wanted).await {
            Ok(found) => {
                tracing::info!(mirror = %mirror.domain(), reference = %shown, "pulling from a mirror");
                return Ok((mirror, found));
            }
            Err(error) => {
                tracing::warn!(mirror = %mirror.domain(), reference = %shown, %error, "mirror failed, trying the next source");
            }
        }
    }
    let repository = if host_config {
        client.repository(reference, credentials)
    } else {
        client.repository_as(reference, credentials)
    };
    let found = repository.manifest(shown, wanted).await?;
    Ok((repository, found))
}

fn descriptor(media_type: Option<String>, digest: &Digest, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.unwrap_or_else(|| crate::spec::MEDIA_TYPE_OCI_MANIFEST.to_owned()),
        digest: digest.clone(),
        size: size as u64,
        annotations: None,
        platform: None,
    }
}

/// Refuses, before any download, a config too large to read and layers
/// that cannot fit on the store's disk.
fn check_sizes(
    store: &ImageStore,
    manifest: &Manifest,
    staging: &Path,
    reference: &str,
) -> Result<(), PullError> {
    let refused = |what, digest: &Digest, source| PullError::Limit {
        what,
        reference: reference.to_owned(),
        digest: digest.clone(),
        source,
    };
    if manifest.config.size > MAX_CONFIG {
        let limit = LimitError::Document {
            what: "image config",
            limit: MAX_CONFIG,
        };
        return Err(refused("config", &manifest.config.digest, limit));
    }
    let missing = manifest
        .layers
        .iter()
        .filter(|l| !store.has_blob(&l.digest))
        .fold(0u64, |sum, l| sum.saturating_add(l.size));
    let available = crate::at::Dir::open(staging)
        .and_then(|d| d.available_bytes())
        .map_err(|source| {
            PullError::Download(DownloadError::Write {
                path: staging.to_owned(),
                source,
            })
        })?;
    check_disk(missing, available, staging.to_owned())
        .map_err(|e| refused("image", &manifest.config.digest, e))
}

async fn fetch_config(
    store: &ImageStore,
    repository: &Repository,
    config: &Descriptor,
    staging: &Path,
) -> Result<Vec<u8>, PullError> {
    if store.has_blob(&config.digest) {
        return Ok(store.read_blob(&config.digest)?);
    }
    let path = staging.join(config.digest.hex());
    download::blob(repository, config, &path, &mut |_| {}, None).await?;
    std::fs::read(&path).map_err(|source| {
        PullError::Download(DownloadError::Write {
            path: path.clone(),
            source,
        })
    })
}

/// Downloads the layers the store lacks, a few at a time.
async fn fetch_layers(
    store: &ImageStore,
    repository: &Repository,
    manifest: &Manifest,
    staging: &Path,
    events: Events<'_>,
) -> Result<Vec<PulledLayer>, PullError> {
    let mut missing = Vec::new();
    for layer in &manifest.layers {
        let id = Some(layer.digest.short());
        if store.has_blob(&layer.digest) {
            events(PullEvent::new(id, "Already exists"));
        } else {
            events(PullEvent::new(id, "Pulling fs layer"));
            missing.push(layer);
        }
    }
    // Futures built up front: a closure in the stream would make the pull's
    // future not provably Send (rust-lang/rust#102211).
    let fetches: Vec<_> = missing
        .into_iter()
        .map(|layer| fetch_shared_layer(store, repository, layer, staging, events))
        .collect();
    let downloads = futures_util::stream::iter(fetches)
        .buffer_unordered(CONCURRENT_DOWNLOADS)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(manifest
        .layers
        .iter()
        .map(|layer| {
            let fetched = downloads.iter().find(|f| f.digest == layer.digest);
            PulledLayer {
                descriptor: layer.clone(),
                staged: fetched.and_then(|f| f.staged.clone()),
                checked: fetched.and_then(|f| f.checked.clone()),
            }
        })
        .collect())
}

/// A layer as a pull fetched it.
struct Fetched {
    digest: Digest,
    /// Its blob in the staging directory; `None` when a concurrent pull
    /// stored it meanwhile.
    staged: Option<std::path::PathBuf>,
    /// Its check, when it ran during this pull's own download.
    checked: Option<LayerInfo>,
}

/// Fetches a layer unless a concurrent pull is fetching it already; then it
/// waits and links that pull's file into its own staging directory.
async fn fetch_shared_layer(
    store: &ImageStore,
    repository: &Repository,
    layer: &Descriptor,
    staging: &Path,
    events: Events<'_>,
) -> Result<Fetched, PullError> {
    let id = layer.digest.short();
    let fetched = |staged, checked| Fetched {
        digest: layer.digest.clone(),
        staged,
        checked,
    };
    loop {
        match store.downloads.claim(&layer.digest) {
            inflight::Claim::Mine(download) => {
                let (path, checked) =
                    fetch_layer(store, repository, layer, staging, events).await?;
                download.finish(path.clone());
                return Ok(fetched(Some(path), checked));
            }
            inflight::Claim::Theirs(other) => {
                events(PullEvent::new(Some(id), "Waiting"));
                if let Some(theirs) = inflight::wait(other).await {
                    let ours = staging.join(layer.digest.hex());
                    if std::fs::hard_link(&theirs, &ours).is_ok() {
                        events(PullEvent::new(Some(id), "Download complete"));
                        return Ok(fetched(Some(ours), None));
                    }
                }
                if store.has_blob(&layer.digest) {
                    events(PullEvent::new(Some(id), "Already exists"));
                    return Ok(fetched(None, None));
                }
                // Their download failed or its file is gone: try ourselves.
            }
        }
    }
}

/// Downloads a layer into `staging`, checking it as it streams.
async fn fetch_layer(
    store: &ImageStore,
    repository: &Repository,
    layer: &Descriptor,
    staging: &Path,
    events: Events<'_>,
) -> Result<(std::path::PathBuf, Option<LayerInfo>), PullError> {
    let id = layer.digest.short();
    let path = staging.join(layer.digest.hex());
    let total = layer.size;
    let mut last = Instant::now() - PROGRESS_INTERVAL;
    let mut progress = |current: u64| {
        if current == total || last.elapsed() >= PROGRESS_INTERVAL {
            last = Instant::now();
            events(PullEvent {
                id: Some(id.to_owned()),
                status: "Downloading".to_owned(),
                progress: Some((current, total)),
            });
        }
    };
    let mut check = StreamedCheck::start(store.limits());
    download::blob(repository, layer, &path, &mut progress, Some(&mut check)).await?;
    events(PullEvent::new(Some(id), "Verifying Checksum"));
    let checked = check.finish(layer.size).await;
    events(PullEvent::new(Some(id), "Download complete"));
    Ok((path, checked))
}
