//! The services' records: one JSON file, rewritten whole on each change,
//! read at start so that hulld brings every service back.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{ServiceError, ServiceSpec};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub id: String,
    /// The tenant it belongs to; `None`: the operator's.
    pub owner: Option<String>,
    /// With `network` the name of the network it is on.
    pub spec: ServiceSpec,
    pub network_id: String,
    /// The service's address on its network, held by the host.
    pub vip: Ipv4Addr,
    /// Seconds since the epoch.
    pub created: u64,
    /// While a rolling update runs: the image it rolls back to.
    #[serde(default)]
    pub rollback: Option<String>,
}

impl ServiceRecord {
    pub fn service_port(&self) -> u16 {
        u16::try_from(self.spec.service_port).unwrap_or_default()
    }

    pub fn container_port(&self) -> u16 {
        u16::try_from(self.spec.container_port).unwrap_or_default()
    }
}

pub struct ServiceStore {
    path: PathBuf,
    table: Mutex<BTreeMap<String, ServiceRecord>>,
}

impl ServiceStore {
    pub fn open(dir: &Path) -> Result<Self, ServiceError> {
        std::fs::create_dir_all(dir).map_err(|source| ServiceError::Io {
            what: "make the service records' directory",
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("services.json");
        let table = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Vec<ServiceRecord>>(&bytes)
                .map_err(|e| ServiceError::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(ServiceError::Io {
                    what: "read",
                    path,
                    source,
                })
            }
        };
        Ok(Self {
            path,
            table: Mutex::new(table),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ServiceRecord>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, table: &BTreeMap<String, ServiceRecord>) -> Result<(), ServiceError> {
        let records: Vec<&ServiceRecord> = table.values().collect();
        crate::records::write_json(&self.path, &records).map_err(|source| ServiceError::Io {
            what: "write",
            path: self.path.clone(),
            source,
        })
    }

    pub fn list(&self) -> Vec<ServiceRecord> {
        self.table().values().cloned().collect()
    }

    /// The service whose id is `id`, if it still exists.
    pub fn by_id(&self, id: &str) -> Option<ServiceRecord> {
        self.table().get(id).cloned()
    }

    /// The service `name` of `owner`; another owner's is not found.
    pub fn get(&self, owner: Option<&str>, name: &str) -> Result<ServiceRecord, ServiceError> {
        self.table()
            .values()
            .find(|r| r.owner.as_deref() == owner && r.spec.name == name)
            .cloned()
            .ok_or_else(|| ServiceError::NotFound(name.chars().take(64).collect()))
    }

    /// Records a new service, unless its owner has one of its name or
    /// `max_per_owner` already: checked under the one lock, so two
    /// creations at once cannot both pass.
    pub(super) fn insert(
        &self,
        record: ServiceRecord,
        max_per_owner: usize,
    ) -> Result<(), ServiceError> {
        let mut table = self.table();
        let owners = || table.values().filter(|r| r.owner == record.owner);
        if owners().any(|r| r.spec.name == record.spec.name) {
            return Err(ServiceError::Exists(record.spec.name));
        }
        if owners().count() >= max_per_owner {
            return Err(ServiceError::Quota);
        }
        let id = record.id.clone();
        table.insert(id.clone(), record);
        if let Err(err) = self.save(&table) {
            table.remove(&id);
            return Err(err);
        }
        Ok(())
    }

    /// Changes `owner`'s service `name` by `change` under the one lock, so
    /// that a scale, a rolling update and the task's own changes never
    /// undo one another; the record as it is now. An error of `change`
    /// leaves it as it was.
    pub fn modify(
        &self,
        owner: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut ServiceRecord) -> Result<(), ServiceError>,
    ) -> Result<ServiceRecord, ServiceError> {
        let mut table = self.table();
        let record = table
            .values_mut()
            .find(|r| r.owner.as_deref() == owner && r.spec.name == name)
            .ok_or_else(|| ServiceError::NotFound(name.chars().take(64).collect()))?;
        let before = record.clone();
        if let Err(err) = change(record) {
            *record = before;
            return Err(err);
        }
        let after = record.clone();
        if after == before {
            return Ok(after);
        }
        if let Err(err) = self.save(&table) {
            table.insert(before.id.clone(), before);
            return Err(err);
        }
        Ok(after)
    }

    pub(super) fn remove(&self, id: &str) -> Result<(), ServiceError> {
        let mut table = self.table();
        table.remove(id);
        self.save(&table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::spec::{Algorithm, HealthCheck};

    fn record(owner: Option<&str>, name: &str) -> ServiceRecord {
        ServiceRecord {
            id: crate::records::new_id(),
            owner: owner.map(str::to_owned),
            spec: ServiceSpec {
                name: name.into(),
                network: "tenant:acme".into(),
                replicas: 2,
                service_port: 80,
                container_port: 8080,
                algorithm: Algorithm::Source,
                protocol: crate::service::Protocol::Tcp,
                session_affinity: false,
                health_check: HealthCheck::default(),
                image: "busybox".into(),
                cmd: vec!["httpd".into()],
                size: String::new(),
                security_groups: Vec::new(),
            },
            network_id: "n".repeat(64),
            vip: Ipv4Addr::new(10, 128, 0, 9),
            created: 1,
            rollback: None,
        }
    }

    #[test]
    fn records_are_per_owner_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = ServiceStore::open(dir.path()).unwrap();
        let web = record(Some("acme"), "web");
        store.insert(web.clone(), 8).unwrap();
        store.insert(record(Some("beta"), "web"), 8).unwrap();
        assert!(matches!(
            store.insert(record(Some("acme"), "web"), 8),
            Err(ServiceError::Exists(_))
        ));
        assert!(matches!(
            store.get(Some("gamma"), "web"),
            Err(ServiceError::NotFound(_))
        ));
        assert!(store.get(None, "web").is_err());
        let again = ServiceStore::open(dir.path()).unwrap();
        assert_eq!(again.get(Some("acme"), "web").unwrap(), web);
        again.remove(&web.id).unwrap();
        assert_eq!(ServiceStore::open(dir.path()).unwrap().list().len(), 1);
    }

    #[test]
    fn creations_at_once_never_pass_the_owners_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(ServiceStore::open(dir.path()).unwrap());
        let made: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    scope.spawn(move || store.insert(record(Some("acme"), &format!("s{i}")), 3))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| usize::from(t.join().unwrap().is_ok()))
                .sum()
        });
        assert_eq!(made, 3);
        assert!(matches!(
            store.insert(record(Some("acme"), "more"), 3),
            Err(ServiceError::Quota)
        ));
        // Another owner has its own.
        store.insert(record(Some("beta"), "s0"), 3).unwrap();
    }

    #[test]
    fn changes_apply_to_the_record_as_it_is_and_a_refused_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ServiceStore::open(dir.path()).unwrap();
        store.insert(record(Some("acme"), "web"), 8).unwrap();
        // A scale and a rolling update, each on what the other left.
        store
            .modify(Some("acme"), "web", |r| {
                r.spec.replicas = 5;
                Ok(())
            })
            .unwrap();
        let updated = store
            .modify(Some("acme"), "web", |r| {
                r.rollback = Some(std::mem::replace(&mut r.spec.image, "busybox:2".into()));
                Ok(())
            })
            .unwrap();
        assert_eq!(updated.spec.replicas, 5);
        assert_eq!(updated.rollback.as_deref(), Some("busybox"));
        let refused = store.modify(Some("acme"), "web", |r| {
            r.spec.replicas = 1;
            Err(ServiceError::Replicas(0))
        });
        assert!(refused.is_err());
        let again = ServiceStore::open(dir.path()).unwrap();
        assert_eq!(again.get(Some("acme"), "web").unwrap(), updated);
        assert!(matches!(
            store.modify(Some("beta"), "web", |_| Ok(())),
            Err(ServiceError::NotFound(_))
        ));
    }
}
