//! Manifests and indexes from registries and archives: any bytes, under any
//! content type, parse or fail cleanly, and a platform is picked from any index.
#![no_main]

use hull_image::registry::manifest::{self, Document};
use libfuzzer_sys::fuzz_target;

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[choice as usize % CONTENT_TYPES.len()];
    match manifest::parse(content_type, bytes) {
        Ok(Document::Index(index)) => {
            let _ = manifest::select(&index, &manifest::host_platform());
        }
        Ok(Document::Manifest(m)) => {
            let _ = serde_json::to_vec(&m).expect("a parsed manifest serializes");
        }
        Err(_) => {}
    }
    let _ = serde_json::from_slice::<hull_image::spec::ConfigFile>(bytes);
});
