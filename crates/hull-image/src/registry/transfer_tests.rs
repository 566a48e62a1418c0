//! Pulls from and pushes to a small in-process registry: bearer tokens on a
//! 401 challenge (a wider one for pushing), gzip and zstd layers, blob
//! redirects, a download cut short and resumed with Range, and a corrupt blob
//! that must leave nothing in the store.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{pull, PullError, PullEvent, RegistryClient, RegistryConfig};
use crate::digest::Digest;
use crate::layer::tests::gzip;
use crate::reference::Reference;
use crate::registry::download::DownloadError;
use crate::spec::{
    MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_LAYER_ZSTD, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST,
};
use crate::testutil;
use crate::ImageStore;

type Body = BoxBody<Bytes, std::io::Error>;

const TOKEN: &str = "t0k";

pub(super) struct FakeRegistry {
    pub(super) addr: String,
    /// Manifests by `repository:tag`.
    pub(super) manifests: Mutex<HashMap<String, Vec<u8>>>,
    pub(super) blobs: Mutex<HashMap<String, Vec<u8>>>,
    /// Blobs whose first full download is cut in the middle.
    cut: Mutex<Vec<String>>,
    pub(super) log: Mutex<Vec<String>>,
}

fn body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn answer(status: StatusCode, headers: &[(&str, String)], content: Body) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    builder.body(content).unwrap()
}

impl FakeRegistry {
    async fn serve(&self, request: Request<hyper::body::Incoming>) -> Response<Body> {
        let (parts, content) = request.into_parts();
        let content = content.collect().await.unwrap().to_bytes();
        let path = parts.uri.path().to_owned();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let range = header("range");
        let method = parts.method.clone();
        self.log
            .lock()
            .unwrap()
            .push(format!("{method} {path} {range}"));
        if path == "/token" {
            let query = parts.uri.query().unwrap_or("");
            let scope = form_scope(query);
            let actions = scope.strip_prefix("repository:a/b:").unwrap_or("");
            return answer(
                StatusCode::OK,
                &[],
                body(format!(r#"{{"token":"{TOKEN}:{actions}"}}"#)),
            );
        }
        if let Some(digest) = path.strip_prefix("/storage/") {
            return self.storage(digest, &range);
        }
        let needed = match method {
            hyper::Method::GET | hyper::Method::HEAD => "pull",
            _ => "pull,push",
        };
        let auth = header("authorization");
        let granted = auth.strip_prefix(&format!("Bearer {TOKEN}:")).unwrap_or("");
        if granted != needed && granted != "pull,push" {
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="fake",scope="repository:a/b:{needed}""#,
                self.addr
            );
            return answer(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", challenge)],
                body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#),
            );
        }
        if let Some(upload) = path.strip_prefix("/v2/a/b/blobs/uploads/") {
            return self.upload(&method, upload, parts.uri.query().unwrap_or(""), content);
        }
        if let Some(tag) = path.strip_prefix("/v2/a/b/manifests/") {
            let mut manifests = self.manifests.lock().unwrap();
            if method == hyper::Method::PUT {
                manifests.insert(tag.to_owned(), content.to_vec());
                return answer(StatusCode::CREATED, &[], body(""));
            }
            return match manifests.get(tag) {
                Some(m) => {
                    let content_type = ("content-type", MEDIA_TYPE_OCI_MANIFEST.to_owned());
                    answer(StatusCode::OK, &[content_type], body(m.clone()))
                }
                None => answer(StatusCode::NOT_FOUND, &[], body("")),
            };
        }
        if let Some(digest) = path.strip_prefix("/v2/a/b/blobs/") {
            if method == hyper::Method::HEAD {
                let found = self.blobs.lock().unwrap().contains_key(digest);
                let status = if found {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                return answer(status, &[], body(""));
            }
            let location = format!("http://{}/storage/{digest}", self.addr);
            return answer(
                StatusCode::TEMPORARY_REDIRECT,
                &[("location", location)],
                body(""),
            );
        }
        answer(StatusCode::NOT_FOUND, &[], body(""))
    }

    /// `POST uploads/` opens an upload at a relative location; `PUT
    /// uploads/<id>?digest=…` completes it, if the content has that digest.
    fn upload(
        &self,
        method: &hyper::Method,
        upload: &str,
        query: &str,
        content: Bytes,
    ) -> Response<Body> {
        if *method == hyper::Method::POST {
            let location = ("location", "/v2/a/b/blobs/uploads/u1?_state=x".to_owned());
            return answer(StatusCode::ACCEPTED, &[location], body(""));
        }
        assert_eq!(upload, "u1");
        let digest = query
            .split('&')
            .find_map(|p| p.strip_prefix("digest="))
            .unwrap()
            .replace("%3A", ":");
        if Digest::of(&content).to_string() != digest {
            return answer(
                StatusCode::BAD_REQUEST,
                &[],
                body(r#"{"errors":[{"code":"DIGEST_INVALID"}]}"#),
            );
        }
        self.blobs.lock().unwrap().insert(digest, content.to_vec());
        answer(StatusCode::CREATED, &[], body(""))
    }

    fn storage(&self, digest: &str, range: &str) -> Response<Body> {
        let Some(blob) = self.blobs.lock().unwrap().get(digest).cloned() else {
            return answer(StatusCode::NOT_FOUND, &[], body(""));
        };
        if let Some(from) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
        {
            let from: usize = from.parse().unwrap();
            let length = ("content-length", (blob.len() - from).to_string());
            return answer(
                StatusCode::PARTIAL_CONTENT,
                &[length],
                body(blob[from..].to_vec()),
            );
        }
        let length = ("content-length", blob.len().to_string());
        let mut cut = self.cut.lock().unwrap();
        if let Some(i) = cut.iter().position(|d| d == digest) {
            cut.remove(i);
            let half = Bytes::copy_from_slice(&blob[..blob.len() / 2]);
            // The pause lets the first half reach the client before the cut.
            let frames = futures_util::stream::once(async { Ok(Frame::data(half)) }).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    Err(std::io::Error::other("connection cut"))
                }),
            );
            return answer(
                StatusCode::OK,
                &[length],
                BodyExt::boxed(StreamBody::new(frames)),
            );
        }
        answer(StatusCode::OK, &[length], body(blob))
    }
}

/// Serves an image of two gzip layers; `corrupt` replaces the second layer's content.
async fn start(corrupt: bool) -> (Arc<FakeRegistry>, Digest) {
    let layers = vec![
        testutil::layer(&[("etc/", b""), ("etc/hello", b"hello")]),
        testutil::layer(&[("bin/", b""), ("bin/tool", &[7u8; 300_000])]),
    ];
    let config = testutil::config(&layers, "/bin/tool");
    // One zstd layer and one gzip layer.
    let blobs = [
        zstd::encode_all(&layers[0][..], 3).unwrap(),
        gzip(&layers[1]),
    ];
    let media_types = [MEDIA_TYPE_LAYER_ZSTD, MEDIA_TYPE_LAYER_GZIP];
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(MEDIA_TYPE_OCI_CONFIG, &config),
        "layers": blobs
            .iter()
            .zip(media_types)
            .map(|(b, t)| descriptor(t, b))
            .collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut served: HashMap<String, Vec<u8>> = blobs
        .iter()
        .chain([&config])
        .map(|b| (Digest::of(b).to_string(), b.clone()))
        .collect();
    let second = Digest::of(&blobs[1]).to_string();
    if corrupt {
        let blob = served.get_mut(&second).unwrap();
        let last = blob.len() - 1;
        blob[last] ^= 0xff;
    }
    let registry = serve_image(manifest, served).await;
    registry.cut.lock().unwrap().push(second);
    (registry, Digest::of(&config))
}

/// The descriptor of `bytes` in a manifest.
pub(super) fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": bytes.len()})
}

/// Serves `manifest` as tag `1.0` and `blobs`, by digest.
pub(super) async fn serve_image(
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
) -> Arc<FakeRegistry> {
    let registry = serve().await;
    registry
        .manifests
        .lock()
        .unwrap()
        .insert("1.0".to_owned(), manifest);
    *registry.blobs.lock().unwrap() = blobs;
    registry
}

/// Serves an image of `config` and the one gzip layer `blob` as tag `1.0`.
async fn serve_one_gzip_layer(config: &[u8], blob: &[u8]) -> Arc<FakeRegistry> {
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(MEDIA_TYPE_OCI_CONFIG, config),
        "layers": [descriptor(MEDIA_TYPE_LAYER_GZIP, blob)],
    }))
    .unwrap();
    let blobs = [blob, config]
        .into_iter()
        .map(|b| (Digest::of(b).to_string(), b.to_vec()))
        .collect();
    serve_image(manifest, blobs).await
}

/// An empty registry on a loopback port.
pub(super) async fn serve() -> Arc<FakeRegistry> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = Arc::new(FakeRegistry {
        addr: listener.local_addr().unwrap().to_string(),
        manifests: Mutex::default(),
        blobs: Mutex::default(),
        cut: Mutex::default(),
        log: Mutex::default(),
    });
    let serving = registry.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let registry = serving.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(registry.serve(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    registry
}

/// The `scope` parameter of a token request.
fn form_scope(query: &str) -> String {
    query
        .split('&')
        .find_map(|p| p.strip_prefix("scope="))
        .unwrap_or("")
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%2C", ",")
}

pub(super) async fn pull_from(
    registry: &FakeRegistry,
    store: &ImageStore,
) -> (Result<super::Pulled, PullError>, Vec<PullEvent>) {
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();
    let reference = Reference::parse(&format!("{}/a/b:1.0", registry.addr)).unwrap();
    let events = Mutex::new(Vec::new());
    let record = |e: PullEvent| events.lock().unwrap().push(e);
    let result = pull(store, &client, &reference, None, &record).await;
    (result, events.into_inner().unwrap())
}

#[tokio::test]
async fn a_pull_earns_a_token_follows_redirects_and_resumes_a_cut_download() {
    let (registry, id) = start(false).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let (result, events) = pull_from(&registry, &store).await;
    let pulled = result.unwrap();
    assert_eq!(pulled.id, id);
    assert!(pulled.changed);
    let image = store
        .resolve(&format!("{}/a/b:1.0", registry.addr))
        .unwrap();
    assert_eq!(image.id, id.to_string());
    assert_eq!(
        image.repo_digests,
        [format!("{}/a/b@{}", registry.addr, pulled.digest)]
    );
    assert_eq!(image.config.cmd, Some(vec!["/bin/tool".to_owned()]));
    let media_types: Vec<&str> = image
        .record
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert_eq!(media_types, [MEDIA_TYPE_LAYER_ZSTD, MEDIA_TYPE_LAYER_GZIP]);
    let rootfs = tempfile::tempdir().unwrap();
    store.flatten(&image.record, rootfs.path()).unwrap();
    assert_eq!(
        std::fs::read(rootfs.path().join("etc/hello")).unwrap(),
        b"hello"
    );

    let log = registry.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.starts_with("GET /token")), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("bytes=")),
        "no resumed download: {log:?}"
    );
    assert!(events.iter().any(|e| e.status == "Download complete"));
    assert!(events.iter().any(|e| e.progress.is_some()));
    assert!(events
        .last()
        .unwrap()
        .status
        .starts_with("Status: Downloaded newer image for"));

    // A second pull downloads nothing.
    let before = registry.log.lock().unwrap().len();
    let (result, events) = pull_from(&registry, &store).await;
    assert!(!result.unwrap().changed);
    assert_eq!(
        store.resolve(&id.to_string()).unwrap().repo_digests.len(),
        1
    );
    let log = registry.log.lock().unwrap()[before..].to_vec();
    assert!(log.iter().all(|l| !l.contains("/blobs/")), "{log:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e.status == "Already exists")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_layer_larger_than_the_writeback_step_lands_intact_across_a_cut() {
    // Bytes gzip cannot shrink, so the blob spans several early writebacks,
    // the cut falls between two of them and the resume goes on past it.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let content: Vec<u8> = (0..20 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let layer = testutil::layer(&[("data", &content)]);
    let blob = gzip(&layer);
    assert!(blob.len() as u64 > 2 * super::download::WRITEBACK_EVERY);
    let config = testutil::config(std::slice::from_ref(&layer), "/data");
    let registry = serve_one_gzip_layer(&config, &blob).await;
    registry
        .cut
        .lock()
        .unwrap()
        .push(Digest::of(&blob).to_string());
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let (result, _) = pull_from(&registry, &store).await;
    result.unwrap();
    let log = registry.log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.contains("bytes=")), "{log:?}");
    let image = store
        .resolve(&format!("{}/a/b:1.0", registry.addr))
        .unwrap();
    let rootfs = tempfile::tempdir().unwrap();
    store.flatten(&image.record, rootfs.path()).unwrap();
    assert!(std::fs::read(rootfs.path().join("data")).unwrap() == content);
}

#[tokio::test]
async fn a_config_that_lies_about_a_layer_fails_the_pull_and_stores_nothing() {
    // Every blob matches its digest; the config names another layer's
    // diff_id. The check that ran during the download must catch it.
    let layer = testutil::layer(&[("etc/", b""), ("etc/hello", &[3u8; 200_000])]);
    let other = testutil::layer(&[("etc/", b""), ("etc/hello", b"other")]);
    let config = testutil::config(&[other], "/bin/sh");
    let blob = gzip(&layer);
    let registry = serve_one_gzip_layer(&config, &blob).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let (result, _) = pull_from(&registry, &store).await;
    let err = result.unwrap_err().to_string();
    assert!(err.contains("diff"), "{err}");
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test]
async fn a_corrupt_blob_fails_the_pull_and_stores_nothing() {
    let (registry, _) = start(true).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let (result, _) = pull_from(&registry, &store).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            PullError::Download(DownloadError::DigestMismatch { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("failed verification"), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn a_push_earns_a_wider_token_uploads_blobs_and_pulls_back() {
    let registry = serve().await;
    let tag: &'static str = Box::leak(format!("{}/a/b:2.0", registry.addr).into_boxed_str());
    let tar = testutil::layer(&[("etc/", b""), ("etc/pushed", b"yes")]);
    let image = testutil::TestImage {
        config: testutil::config(std::slice::from_ref(&tar), "sh"),
        layers: vec![gzip(&tar)],
        tags: vec![tag],
    };
    let id = image.id();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let archive = testutil::archive(&testutil::docker_files(&[image], false));
    store.load(&archive[..], &mut |_| {}).unwrap();

    let client = RegistryClient::new(RegistryConfig::default()).unwrap();
    let reference = Reference::parse(tag).unwrap();
    let events = Mutex::new(Vec::new());
    let record = |e: PullEvent| events.lock().unwrap().push(e);
    let pushed = super::push(&store, &client, &reference, None, &record)
        .await
        .unwrap();
    assert_eq!(
        Digest::of(&registry.manifests.lock().unwrap()["2.0"]),
        pushed.digest
    );
    assert_eq!(registry.blobs.lock().unwrap().len(), 2);
    let events = events.into_inner().unwrap();
    assert!(events.iter().any(|e| e.status == "Pushed"), "{events:?}");
    let log = registry.log.lock().unwrap().clone();
    // One token to look for blobs, a wider one to upload them.
    let tokens = log.iter().filter(|l| l.starts_with("GET /token")).count();
    assert_eq!(tokens, 2, "{log:?}");

    let other_dir = tempfile::tempdir().unwrap();
    let other = ImageStore::open(other_dir.path()).unwrap();
    let noop = |_: PullEvent| {};
    let pulled = pull(&other, &client, &reference, None, &noop)
        .await
        .unwrap();
    assert_eq!(pulled.id, id);
    assert_eq!(pulled.digest, pushed.digest);
}
