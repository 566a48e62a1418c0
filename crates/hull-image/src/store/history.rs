//! An image's history, as `docker history` shows it: the config's `history`
//! entries, newest first, each non-empty one matched with its layer.

use serde::Deserialize;

use super::{Image, ImageStore, StoreError};

/// One step that built the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// RFC 3339, as the config says.
    pub created: Option<String>,
    pub created_by: String,
    pub comment: String,
    /// Bytes its layer adds; 0 for steps that made none.
    pub size: u64,
    /// Whether the step made a layer.
    pub layer: bool,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    history: Vec<Step>,
}

#[derive(Deserialize)]
struct Step {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    empty_layer: bool,
}

impl ImageStore {
    /// The image's history, newest first. A config without one yields a
    /// step per layer, as docker shows such images.
    pub fn history(&self, image: &Image) -> Result<Vec<HistoryEntry>, StoreError> {
        let bytes = self.read_blob(&image.record.id)?;
        // A config unreadable here was verified when stored: treat as no history.
        let steps = serde_json::from_slice::<Config>(&bytes)
            .map(|c| c.history)
            .unwrap_or_default();
        let mut layers = image.record.layers.iter();
        let mut entries: Vec<HistoryEntry> = steps
            .into_iter()
            .map(|step| {
                let layer = (!step.empty_layer).then(|| layers.next()).flatten();
                HistoryEntry {
                    created: step.created,
                    created_by: step.created_by,
                    comment: step.comment,
                    size: layer.map_or(0, |l| l.unpacked_size),
                    layer: layer.is_some(),
                }
            })
            .collect();
        // Layers the history does not account for still show.
        entries.extend(layers.map(|layer| HistoryEntry {
            created: image.created.clone(),
            created_by: String::new(),
            comment: String::new(),
            size: layer.unpacked_size,
            layer: true,
        }));
        entries.reverse();
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::{self, docker_files, empty_store, two_layer_image};

    #[test]
    fn without_history_each_layer_is_a_step_newest_first() {
        let (_dir, store) = empty_store();
        let archive =
            testutil::archive(&docker_files(&[two_layer_image("sh", vec!["x:1"])], false));
        store.load(&archive[..], &mut |_| {}).unwrap();
        let image = store.resolve("x:1").unwrap();
        let history = store.history(&image).unwrap();
        let sizes: Vec<u64> = history.iter().map(|h| h.size).collect();
        let mut expected: Vec<u64> = image
            .record
            .layers
            .iter()
            .map(|l| l.unpacked_size)
            .collect();
        expected.reverse();
        assert_eq!(sizes, expected);
        assert!(history.iter().all(|h| h.layer));
    }
}
