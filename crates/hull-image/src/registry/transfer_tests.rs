//! Pulls from a small in-process registry: bearer tokens on a 401 challenge,
//! gzip and zstd layers, blob redirects, a download cut short and resumed with Range, and a
//! corrupt blob that must leave nothing in the store.

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

struct FakeRegistry {
    addr: String,
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
    /// Blobs whose first full download is cut in the middle.
    cut: Mutex<Vec<String>>,
    log: Mutex<Vec<String>>,
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
    fn serve(&self, request: &Request<hyper::body::Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let range = header("range");
        self.log.lock().unwrap().push(format!("{path} {range}"));
        if path == "/token" {
            let query = request.uri().query().unwrap_or("");
            assert!(query.contains("scope=repository%3Aa%2Fb%3Apull"), "{query}");
            return answer(
                StatusCode::OK,
                &[],
                body(format!(r#"{{"token":"{TOKEN}"}}"#)),
            );
        }
        if let Some(digest) = path.strip_prefix("/storage/") {
            return self.storage(digest, &range);
        }
        if header("authorization") != format!("Bearer {TOKEN}") {
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="fake",scope="repository:a/b:pull""#,
                self.addr
            );
            return answer(
                StatusCode::UNAUTHORIZED,
                &[("www-authenticate", challenge)],
                body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#),
            );
        }
        if path == "/v2/a/b/manifests/1.0" {
            let content_type = ("content-type", MEDIA_TYPE_OCI_MANIFEST.to_owned());
            return answer(StatusCode::OK, &[content_type], body(self.manifest.clone()));
        }
        if let Some(digest) = path.strip_prefix("/v2/a/b/blobs/") {
            let location = format!("http://{}/storage/{digest}", self.addr);
            return answer(
                StatusCode::TEMPORARY_REDIRECT,
                &[("location", location)],
                body(""),
            );
        }
        answer(StatusCode::NOT_FOUND, &[], body(""))
    }

    fn storage(&self, digest: &str, range: &str) -> Response<Body> {
        let Some(blob) = self.blobs.get(digest) else {
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
        answer(StatusCode::OK, &[length], body(blob.clone()))
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
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": bytes.len()});
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = Arc::new(FakeRegistry {
        addr: listener.local_addr().unwrap().to_string(),
        manifest,
        blobs: served,
        cut: Mutex::new(vec![second]),
        log: Mutex::new(Vec::new()),
    });
    let serving = registry.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let registry = serving.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = registry.serve(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (registry, Digest::of(&config))
}

async fn pull_from(
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
    assert!(log.iter().any(|l| l.starts_with("/token")), "{log:?}");
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
