//! What a registry's manifest endpoint returns: telling image manifests from
//! indexes by media type, and choosing the platform's manifest from an index.

use crate::spec::{
    Descriptor, Index, Manifest, Platform, LAYER_MEDIA_TYPES, MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};

/// The `Accept` header of manifest requests: every format Hull reads.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Errors of reading a manifest document.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest media type '{0}' (Hull reads OCI and Docker schema 2 manifests and indexes)")]
    MediaType(String),
    #[error("the {what} is not valid JSON of its kind")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the manifest's config has media type '{0}', which is not an image config")]
    ConfigMediaType(String),
    #[error("layer {digest} has media type '{media_type}', which Hull cannot unpack")]
    LayerMediaType {
        digest: crate::Digest,
        media_type: String,
    },
}

/// A manifest document as fetched.
#[derive(Clone, Debug)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

/// Reads a manifest document, by the `Content-Type` the registry sent or, when
/// that is missing or generic, by the document's own `mediaType`.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Document, ManifestError> {
    let declared = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
        .filter(|c| !c.is_empty() && c != "application/json" && c != "text/plain");
    let media_type = match declared {
        Some(m) => m,
        None => sniff(bytes)?,
    };
    let json = |what| move |source| ManifestError::Json { what, source };
    match media_type.as_str() {
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => {
            let manifest: Manifest =
                serde_json::from_slice(bytes).map_err(json("image manifest"))?;
            check_manifest(&manifest)?;
            Ok(Document::Manifest(manifest))
        }
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_LIST => Ok(Document::Index(
            serde_json::from_slice(bytes).map_err(json("image index"))?,
        )),
        other => Err(ManifestError::MediaType(other.to_owned())),
    }
}

/// A document without a usable `Content-Type`: its `mediaType`, else its shape.
fn sniff(bytes: &[u8]) -> Result<String, ManifestError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        schema_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
        what: "manifest",
        source,
    })?;
    Ok(
        match (probe.media_type, probe.manifests, probe.schema_version) {
            (Some(m), _, _) => m,
            (None, Some(_), _) => MEDIA_TYPE_OCI_INDEX.to_owned(),
            (None, None, Some(2)) => MEDIA_TYPE_OCI_MANIFEST.to_owned(),
            (None, None, v) => {
                return Err(ManifestError::MediaType(format!("schemaVersion {v:?}")))
            }
        },
    )
}

fn check_manifest(manifest: &Manifest) -> Result<(), ManifestError> {
    let config = manifest.config.media_type.as_str();
    if config != MEDIA_TYPE_OCI_CONFIG && config != MEDIA_TYPE_DOCKER_CONFIG {
        return Err(ManifestError::ConfigMediaType(config.to_owned()));
    }
    for layer in &manifest.layers {
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(ManifestError::LayerMediaType {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            });
        }
    }
    Ok(())
}

/// The platform Hull's guests run: linux on the host's architecture, named as
/// in the OCI spec (GOARCH names).
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    Platform {
        architecture: architecture.to_owned(),
        os: "linux".to_owned(),
        variant: None,
    }
}

/// The index entry for `platform`: matching os and architecture, preferring
/// the wanted variant, else the first; attestation manifests never match.
pub fn select<'a>(index: &'a Index, platform: &Platform) -> Option<&'a Descriptor> {
    let candidates = index.manifests.iter().filter(|d| {
        let is_manifest =
            d.media_type == MEDIA_TYPE_OCI_MANIFEST || d.media_type == MEDIA_TYPE_DOCKER_MANIFEST;
        d.platform.as_ref().is_some_and(|p| {
            is_manifest && p.os == platform.os && p.architecture == platform.architecture
        })
    });
    let mut first = None;
    for d in candidates {
        let variant = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        if platform.variant.is_some() && variant == platform.variant.as_deref() {
            return Some(d);
        }
        first.get_or_insert(d);
    }
    first
}

/// Docker's `os/architecture[/variant]`.
pub fn platform_name(platform: &Platform) -> String {
    let mut s = format!("{}/{}", platform.os, platform.architecture);
    if let Some(v) = &platform.variant {
        s.push('/');
        s.push_str(v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn index() -> Index {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_OCI_INDEX}","manifests":[
            {{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{A}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{C}","size":1,"platform":{{"os":"unknown","architecture":"unknown"}}}},
            {{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{B}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        match parse(None, json.as_bytes()).unwrap() {
            Document::Index(index) => index,
            Document::Manifest(_) => panic!("an index was read as a manifest"),
        }
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn linux_amd64_is_picked_from_an_index() {
        let index = index();
        assert_eq!(
            select(&index, &platform("amd64", None))
                .unwrap()
                .digest
                .to_string(),
            B
        );
        assert_eq!(
            select(&index, &platform("arm64", Some("v8")))
                .unwrap()
                .digest
                .to_string(),
            A
        );
        assert!(select(&index, &platform("s390x", None)).is_none());
        assert_eq!(host_platform().os, "linux");
    }

    #[test]
    fn manifests_are_read_by_content_type_or_by_their_own_media_type() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_TYPE_DOCKER_CONFIG}","digest":"{A}","size":2}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{B}","size":3}}]}}"#
        );
        let m = parse(Some(MEDIA_TYPE_DOCKER_MANIFEST), manifest.as_bytes()).unwrap();
        assert!(matches!(m, Document::Manifest(m) if m.layers.len() == 1));
        assert!(matches!(
            parse(Some("application/json"), manifest.as_bytes()).unwrap(),
            Document::Manifest(_)
        ));
        assert!(matches!(
            parse(
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
                b"{}"
            ),
            Err(ManifestError::MediaType(_))
        ));
    }

    #[test]
    fn foreign_layers_and_non_image_configs_are_refused() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{A}","size":2}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(Some(MEDIA_TYPE_OCI_MANIFEST), manifest.as_bytes()),
            Err(ManifestError::ConfigMediaType(_))
        ));
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_TYPE_OCI_CONFIG}","digest":"{A}","size":2}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{B}","size":3}}]}}"#
        );
        assert!(matches!(
            parse(Some(MEDIA_TYPE_OCI_MANIFEST), manifest.as_bytes()),
            Err(ManifestError::LayerMediaType { .. })
        ));
    }
}
