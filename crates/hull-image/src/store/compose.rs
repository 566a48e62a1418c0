//! Images made on this host from one new layer: on top of a container's
//! image (`docker commit`) or on nothing (`docker import`). The layer is a
//! file in the store's staging directory; it is checked whole (see
//! [`crate::layer::check`]) before anything is stored, and the image
//! exists only once its record is written.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::{ImageRecord, ImageStore, LayerRecord, StoreError};
use crate::digest::Digest;
use crate::fsutil::{rename_durably, write_atomic};
use crate::layer::check::{self, CheckError, CheckedLayer};
use crate::limits::{LimitError, MAX_CONFIG};
use crate::spec::{Descriptor, ImageConfig, MEDIA_TYPE_OCI_CONFIG};

/// The keys of a config's `config` object that [`ImageConfig`] holds:
/// a new image's values replace (or remove) the parent's, while keys it
/// does not know (`Healthcheck`, `Shell`, `OnBuild`) stay as they were.
const CONFIG_KEYS: [&str; 9] = [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
];

/// What a new image says of itself besides its layers.
#[derive(Clone, Debug, Default)]
pub struct NewImage {
    pub config: ImageConfig,
    /// RFC 3339, as configs write it.
    pub created: String,
    /// The history step's `created_by` (a commit's container command).
    pub created_by: String,
    pub comment: String,
    pub author: String,
    /// A commit's container and its config, kept in the image as docker
    /// keeps them.
    pub container: Option<(String, serde_json::Value)>,
}

impl ImageStore {
    /// Checks the layer tar `layer` (a file under the store's staging
    /// directory, which it is moved from) and stores an image of it, on
    /// top of `parent`'s layers when given. Returns the new image's id.
    /// A layer that fails its check is [`StoreError::Layer`].
    pub fn create_image(
        &self,
        parent: Option<&super::Image>,
        layer: &Path,
        new: &NewImage,
    ) -> Result<Digest, StoreError> {
        let read = |source| StoreError::Read {
            path: layer.to_owned(),
            source,
        };
        let file = File::open(layer).map_err(read)?;
        let checked = check::check(BufReader::new(file), &self.limits())?;
        let base = match parent {
            Some(parent) => serde_json::from_slice(&self.read_blob(&parent.record.id)?)
                .unwrap_or_else(|_| json!({})),
            None => json!({}),
        };
        let mut layers = parent.map_or_else(Vec::new, |p| p.record.layers.clone());
        layers.push(LayerRecord {
            media_type: checked.compression.media_type().to_owned(),
            digest: checked.digest.clone(),
            size: checked.size,
            diff_id: checked.diff_id.clone(),
            unpacked_size: checked.unpacked_size,
        });
        let config = config_file(base, parent, new, &checked)?;
        let id = Digest::of(&config);
        if config.len() as u64 > MAX_CONFIG {
            return Err(StoreError::Limit {
                image: id,
                source: LimitError::Document {
                    what: "image config",
                    limit: MAX_CONFIG,
                },
            });
        }
        self.check_image_size(&id, &layers)?;
        let _blobs = self.lock("blobs")?;
        let blob = self.blob_path(&checked.digest);
        if !blob.exists() {
            rename_durably(layer, &blob).map_err(|source| StoreError::Write {
                path: blob.clone(),
                source,
            })?;
        }
        let config_path = self.blob_path(&id);
        if !config_path.exists() {
            write_atomic(&config_path, &config).map_err(|source| StoreError::Write {
                path: config_path,
                source,
            })?;
        }
        let record = ImageRecord {
            id: id.clone(),
            config: Descriptor {
                media_type: MEDIA_TYPE_OCI_CONFIG.to_owned(),
                digest: id.clone(),
                size: config.len() as u64,
                annotations: None,
                platform: None,
            },
            layers,
            manifest: None,
            index: None,
            repo_digests: Vec::new(),
            parent: parent.map(|p| p.record.id.clone()),
        };
        self.write_json(&self.record_path(&id), &record)?;
        tracing::info!(image = %id, layer = %checked.digest, "created an image");
        Ok(id)
    }
}

/// The new config: the parent's (all of it, unknown keys too), with the
/// new runtime config, the layer's diff_id and a history step added.
fn config_file(
    base: Value,
    parent: Option<&super::Image>,
    new: &NewImage,
    layer: &CheckedLayer,
) -> Result<Vec<u8>, StoreError> {
    let mut file = match base {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    for stale in ["container", "container_config", "parent", "id"] {
        file.remove(stale);
    }
    if parent.is_none() {
        file.insert(
            "architecture".into(),
            crate::archive::host_architecture().into(),
        );
        file.insert("os".into(), "linux".into());
    }
    file.insert("created".into(), new.created.clone().into());
    if let Some((container, config)) = &new.container {
        file.insert("container".into(), container.clone().into());
        file.insert("container_config".into(), config.clone());
    }
    for (key, value) in [("author", &new.author), ("comment", &new.comment)] {
        match value.is_empty() {
            true => file.remove(key),
            false => file.insert(key.into(), value.clone().into()),
        };
    }
    let mut runtime = match file.remove("config") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let Value::Object(mut ours) = serde_json::to_value(&new.config).expect("configs serialize")
    else {
        unreachable!("a config serializes as an object")
    };
    for key in CONFIG_KEYS {
        match ours.remove(key) {
            Some(value) => runtime.insert(key.into(), value),
            None => runtime.remove(key),
        };
    }
    file.insert("config".into(), Value::Object(runtime));

    let mut diff_ids: Vec<Value> = parent.map_or_else(Vec::new, |p| {
        p.record
            .layers
            .iter()
            .map(|l| l.diff_id.to_string().into())
            .collect()
    });
    diff_ids.push(layer.diff_id.to_string().into());
    file.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids}),
    );

    let mut history = match file.remove("history") {
        Some(Value::Array(steps)) if !steps.is_empty() => steps,
        // A parent without history gets a step per layer, so that the
        // new step is matched with the new layer.
        _ => parent.map_or_else(Vec::new, |p| {
            p.record
                .layers
                .iter()
                .map(|_| json!({"created": p.created.clone().unwrap_or_default()}))
                .collect()
        }),
    };
    let mut step = Map::new();
    step.insert("created".into(), new.created.clone().into());
    for (key, value) in [
        ("created_by", &new.created_by),
        ("author", &new.author),
        ("comment", &new.comment),
    ] {
        if !value.is_empty() {
            step.insert(key.into(), value.clone().into());
        }
    }
    history.push(Value::Object(step));
    file.insert("history".into(), Value::Array(history));
    serde_json::to_vec(&Value::Object(file)).map_err(|source| StoreError::Corrupt {
        path: "new image config".into(),
        source,
    })
}

impl From<CheckError> for StoreError {
    fn from(error: CheckError) -> Self {
        StoreError::Layer(error)
    }
}

#[cfg(test)]
#[path = "compose_tests.rs"]
mod tests;
