//! The images running containers use: `rmi` and `prune -a` leave them, as
//! docker leaves the images of its running containers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Image ids with the count of runs using each.
#[derive(Clone, Debug, Default)]
pub struct ImagesInUse(Arc<Mutex<BTreeMap<String, usize>>>);

impl ImagesInUse {
    /// Marks `id` in use until the returned guard is dropped.
    pub fn hold(&self, id: String) -> InUse {
        *self.lock().entry(id.clone()).or_default() += 1;
        InUse {
            images: self.clone(),
            id,
        }
    }

    /// The ids in use now.
    pub fn ids(&self) -> BTreeSet<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        // A panic while holding the lock leaves plain counts behind, still usable.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One run's use of an image.
#[derive(Debug)]
pub struct InUse {
    images: ImagesInUse,
    id: String,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut counts = self.images.lock();
        if let Some(count) = counts.get_mut(&self.id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_in_use_until_its_last_run_ends() {
        let images = ImagesInUse::default();
        let first = images.hold("sha256:a".into());
        let second = images.hold("sha256:a".into());
        assert_eq!(images.ids(), BTreeSet::from(["sha256:a".to_owned()]));
        drop(first);
        assert_eq!(images.ids().len(), 1);
        drop(second);
        assert!(images.ids().is_empty());
    }
}
