//! Pods: several containers in one VM, sharing its network, IPC and UTS
//! namespaces, each with its own rootfs and mount namespace. A pod's record
//! names its containers; they are containers like any other (logs, exec,
//! inspect), started in the pod's VM, which powers off when the last stops.

pub mod file;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::warn;

use hull_net::NetworkMode;

pub use file::{parse, PodContainer, PodFileError, PodMount, PodSpec};

const RECORD_FILE: &str = "pod.json";

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("No such pod: {0}")]
    NotFound(String),
    #[error("Conflict. The pod name \"{name}\" is already in use by pod \"{id}\". Remove that pod to reuse the name.")]
    NameInUse { name: String, id: String },
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pod record {} is malformed", .path.display())]
    Malformed {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// A pod as recorded on disk. Its state is its containers' states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub created: SystemTime,
    pub spec: PodSpec,
    /// The ids of its containers, in the pod file's order.
    pub members: Vec<String>,
    /// Where its name is unique, as its containers'; `None`: the host's own.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The network its VM joins: by id on a user-defined network, where the
    /// pod holds one address, keyed by the pod's id, for all its containers.
    #[serde(default)]
    pub network: NetworkMode,
}

impl PodRecord {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its name qualified by its namespace (`acme/app`), unique among all
    /// pods: how the host's operator names another namespace's.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{namespace}/{}", self.name()),
            None => self.name().to_owned(),
        }
    }

    fn is_named(&self, namespace: Option<&str>, name: &str) -> bool {
        self.name() == name && self.namespace.as_deref() == namespace
    }

    fn save(&self, dir: &Path) -> Result<(), PodError> {
        let path = dir.join(RECORD_FILE);
        crate::records::write_json(&path, self).map_err(|source| PodError::Io {
            what: "write",
            path,
            source,
        })
    }

    fn load(dir: &Path) -> Result<Self, PodError> {
        let path = dir.join(RECORD_FILE);
        let bytes = fs::read(&path).map_err(|source| PodError::Io {
            what: "read",
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| PodError::Malformed { path, source })
    }
}

/// The name of a pod's container: `<pod>.<container>`.
pub fn member_name(pod: &str, container: &str) -> String {
    format!("{pod}.{container}")
}

/// Every pod hulld knows, by id.
pub struct Pods {
    dir: PathBuf,
    table: Mutex<BTreeMap<String, Arc<PodRecord>>>,
}

impl Pods {
    /// Loads the pods recorded under `dir`.
    pub fn open(dir: &Path) -> Result<Self, PodError> {
        fs::create_dir_all(dir).map_err(|source| PodError::Io {
            what: "create",
            path: dir.to_owned(),
            source,
        })?;
        let entries = fs::read_dir(dir).map_err(|source| PodError::Io {
            what: "read",
            path: dir.to_owned(),
            source,
        })?;
        let mut table = BTreeMap::new();
        for entry in entries.flatten() {
            match PodRecord::load(&entry.path()) {
                Ok(record) => {
                    table.insert(record.id.clone(), Arc::new(record));
                }
                Err(err) => {
                    warn!(dir = %entry.path().display(), error = %err, "skipping a pod directory")
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            table: Mutex::new(table),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<PodRecord>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pod by id, name, or unique id prefix; a namespace's pod by its
    /// qualified name (`acme/app`).
    pub fn get(&self, reference: &str) -> Result<Arc<PodRecord>, PodError> {
        crate::records::find(&self.lock(), reference, |p| p.qualified_name())
            .cloned()
            .ok_or_else(|| PodError::NotFound(reference.to_owned()))
    }

    /// As [`Pods::get`], among only the pods `visible` accepts: one it
    /// rejects is not found, whatever the reference. Names are matched
    /// unqualified: `visible` must accept one namespace at most.
    pub fn get_visible(
        &self,
        reference: &str,
        visible: impl Fn(&PodRecord) -> bool,
    ) -> Result<Arc<PodRecord>, PodError> {
        let table: BTreeMap<String, Arc<PodRecord>> = self
            .lock()
            .iter()
            .filter(|(_, p)| visible(p))
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect();
        crate::records::find(&table, reference, |p| p.name().to_owned())
            .cloned()
            .ok_or_else(|| PodError::NotFound(reference.to_owned()))
    }

    /// Every pod, newest first.
    pub fn list(&self) -> Vec<Arc<PodRecord>> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by_key(|p| std::cmp::Reverse(p.created));
        all
    }

    /// Refuses a name another pod of the namespace has.
    pub fn check_name(&self, namespace: Option<&str>, name: &str) -> Result<(), PodError> {
        match self.lock().values().find(|p| p.is_named(namespace, name)) {
            Some(other) => Err(PodError::NameInUse {
                name: name.to_owned(),
                id: other.id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a new pod.
    pub fn insert(&self, record: PodRecord) -> Result<Arc<PodRecord>, PodError> {
        let mut table = self.lock();
        let namespace = record.namespace.as_deref();
        if let Some(other) = table
            .values()
            .find(|p| p.is_named(namespace, record.name()))
        {
            return Err(PodError::NameInUse {
                name: record.name().to_owned(),
                id: other.id.clone(),
            });
        }
        let dir = self.dir.join(&record.id);
        fs::create_dir_all(&dir).map_err(|source| PodError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        if let Err(err) = record.save(&dir) {
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        let record = Arc::new(record);
        table.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    /// Forgets a pod and its record.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
        crate::run::remove_dir(&self.dir.join(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str) -> PodRecord {
        let text = format!(
            "metadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}"
        );
        PodRecord {
            id: id.into(),
            created: SystemTime::now(),
            spec: parse(&text).unwrap(),
            members: vec!["m1".into()],
            namespace: None,
            network: NetworkMode::User,
        }
    }

    fn namespaced(id: &str, namespace: &str, name: &str) -> PodRecord {
        PodRecord {
            namespace: Some(namespace.into()),
            ..record(id, name)
        }
    }

    #[test]
    fn names_are_unique_per_namespace_and_others_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let pods = Pods::open(dir.path()).unwrap();
        pods.insert(record("aaa111", "app")).unwrap();
        pods.insert(namespaced("bbb222", "acme", "app")).unwrap();
        pods.insert(namespaced("ccc333", "beta", "app")).unwrap();
        assert!(matches!(
            pods.insert(namespaced("ddd444", "acme", "app")),
            Err(PodError::NameInUse { .. })
        ));
        assert!(pods.check_name(Some("acme"), "app").is_err());
        assert!(pods.check_name(Some("gamma"), "app").is_ok());
        // The operator names a namespace's pod by its qualified name.
        assert_eq!(pods.get("app").unwrap().id, "aaa111");
        assert_eq!(pods.get("acme/app").unwrap().id, "bbb222");
        // A tenant finds its own by name, id or prefix, and nothing else.
        let acme = |p: &PodRecord| p.namespace.as_deref() == Some("acme");
        for own in ["app", "bbb222", "bb"] {
            assert_eq!(pods.get_visible(own, acme).unwrap().id, "bbb222", "{own}");
        }
        for other in ["ccc333", "ccc", "beta/app", "acme/app", "aaa111", "zzz"] {
            let err = pods.get_visible(other, acme).unwrap_err();
            assert_eq!(err.to_string(), format!("No such pod: {other}"));
        }
        let reopened = Pods::open(dir.path()).unwrap();
        assert_eq!(
            reopened.get("beta/app").unwrap().namespace.as_deref(),
            Some("beta")
        );
    }

    #[test]
    fn pods_are_kept_on_disk_and_found_by_name_or_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let pods = Pods::open(dir.path()).unwrap();
        pods.insert(record("abc123", "web")).unwrap();
        pods.insert(record("abd456", "db")).unwrap();
        assert!(matches!(
            pods.insert(record("fff", "web")),
            Err(PodError::NameInUse { .. })
        ));
        let reopened = Pods::open(dir.path()).unwrap();
        assert_eq!(reopened.get("web").unwrap().id, "abc123");
        assert_eq!(reopened.get("abd").unwrap().name(), "db");
        assert!(matches!(reopened.get("ab"), Err(PodError::NotFound(_))));
        assert_eq!(reopened.list().len(), 2);
        reopened.remove("abc123");
        assert!(Pods::open(dir.path()).unwrap().get("web").is_err());
    }
}
