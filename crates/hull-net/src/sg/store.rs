//! The records of security groups and of which containers are in them:
//! one JSON file under the networks' directory, rewritten atomically on
//! every change, so that the rules made from it at hulld's start are the
//! ones it last agreed to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::model::SecurityGroup;
use super::{SgError, MAX_GROUPS_PER_CONTAINER, MAX_GROUPS_PER_OWNER};

/// A group and whose it is: a tenant's name, or empty for the operator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub owner: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub group: SecurityGroup,
}

/// The groups of one container (or pod), by name, within its owner's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub owner: String,
    pub groups: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Records {
    groups: Vec<GroupRecord>,
    /// By container id.
    members: BTreeMap<String, Membership>,
}

pub struct GroupStore {
    path: PathBuf,
    records: Mutex<Records>,
}

impl GroupStore {
    pub fn open(dir: &Path) -> Result<Self, SgError> {
        let io = |what, source| SgError::Io {
            what,
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        let path = dir.join("records.json");
        let records = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SgError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Records::default(),
            Err(e) => return Err(io("read", e)),
        };
        Ok(Self {
            path,
            records: Mutex::new(records),
        })
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, records: &Records) -> Result<(), SgError> {
        crate::records::write_json(&self.path, records).map_err(|source| SgError::Io {
            what: "write",
            path: self.path.clone(),
            source,
        })
    }

    pub fn list(&self, owner: &str) -> Vec<GroupRecord> {
        self.records()
            .groups
            .iter()
            .filter(|g| g.owner == owner)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<GroupRecord> {
        self.records().groups.clone()
    }

    pub fn get(&self, owner: &str, name: &str) -> Result<GroupRecord, SgError> {
        self.records()
            .groups
            .iter()
            .find(|g| g.owner == owner && g.group.name == name)
            .cloned()
            .ok_or_else(|| SgError::NotFound(name.to_owned()))
    }

    pub fn create(&self, owner: &str, group: SecurityGroup) -> Result<GroupRecord, SgError> {
        let mut records = self.records();
        if find(&records, owner, &group.name).is_some() {
            return Err(SgError::Exists(group.name));
        }
        let owned = records.groups.iter().filter(|g| g.owner == owner).count();
        if owned >= MAX_GROUPS_PER_OWNER {
            return Err(SgError::Quota(MAX_GROUPS_PER_OWNER));
        }
        check_remotes(&records, owner, &group)?;
        let record = GroupRecord {
            owner: owner.to_owned(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            group,
        };
        records.groups.push(record.clone());
        if let Err(err) = self.save(&records) {
            records.groups.pop();
            return Err(err);
        }
        Ok(record)
    }

    /// Replaces the rules and description of the group `name`.
    pub fn update(
        &self,
        owner: &str,
        name: &str,
        group: SecurityGroup,
    ) -> Result<GroupRecord, SgError> {
        if group.name != name {
            return Err(SgError::Invalid(format!(
                "the body names group {:?}, the request {name:?}: a group cannot be renamed",
                group.name
            )));
        }
        let mut records = self.records();
        let index = find(&records, owner, name).ok_or_else(|| SgError::NotFound(name.into()))?;
        check_remotes(&records, owner, &group)?;
        let old = std::mem::replace(&mut records.groups[index].group, group);
        if let Err(err) = self.save(&records) {
            records.groups[index].group = old;
            return Err(err);
        }
        Ok(records.groups[index].clone())
    }

    pub fn remove(&self, owner: &str, name: &str) -> Result<GroupRecord, SgError> {
        let mut records = self.records();
        let index = find(&records, owner, name).ok_or_else(|| SgError::NotFound(name.into()))?;
        let users = users_of(&records, owner, name);
        if !users.is_empty() {
            return Err(SgError::InUse {
                name: name.to_owned(),
                containers: users,
            });
        }
        let record = records.groups.remove(index);
        if let Err(err) = self.save(&records) {
            records.groups.insert(index, record);
            return Err(err);
        }
        Ok(record)
    }

    /// The containers in group `name`, by id.
    pub fn users(&self, owner: &str, name: &str) -> Vec<String> {
        users_of(&self.records(), owner, name)
    }

    /// Refuses groups a container of `owner` cannot join: too many, or
    /// one that is not the owner's.
    pub fn check_join(&self, owner: &str, groups: &[String]) -> Result<(), SgError> {
        if groups.len() > MAX_GROUPS_PER_CONTAINER {
            return Err(SgError::TooManyGroups(groups.len()));
        }
        let records = self.records();
        match groups.iter().find(|g| find(&records, owner, g).is_none()) {
            Some(missing) => Err(SgError::NotFound(missing.clone())),
            None => Ok(()),
        }
    }

    /// Puts a container in exactly `groups` (none: out of every group).
    pub fn set_membership(
        &self,
        container: &str,
        owner: &str,
        mut groups: Vec<String>,
    ) -> Result<(), SgError> {
        groups.sort();
        groups.dedup();
        self.check_join(owner, &groups)?;
        let mut records = self.records();
        let old = if groups.is_empty() {
            records.members.remove(container)
        } else {
            let membership = Membership {
                owner: owner.to_owned(),
                groups,
            };
            records.members.insert(container.to_owned(), membership)
        };
        if let Err(err) = self.save(&records) {
            match old {
                Some(old) => records.members.insert(container.to_owned(), old),
                None => records.members.remove(container),
            };
            return Err(err);
        }
        Ok(())
    }

    pub fn membership(&self, container: &str) -> Option<Membership> {
        self.records().members.get(container).cloned()
    }

    pub fn memberships(&self) -> BTreeMap<String, Membership> {
        self.records().members.clone()
    }

    /// Drops a removed container's memberships; whether it had any.
    pub fn forget(&self, container: &str) -> Result<bool, SgError> {
        let mut records = self.records();
        if records.members.remove(container).is_none() {
            return Ok(false);
        }
        self.save(&records).map(|()| true)
    }
}

fn find(records: &Records, owner: &str, name: &str) -> Option<usize> {
    records
        .groups
        .iter()
        .position(|g| g.owner == owner && g.group.name == name)
}

fn users_of(records: &Records, owner: &str, name: &str) -> Vec<String> {
    records
        .members
        .iter()
        .filter(|(_, m)| m.owner == owner && m.groups.iter().any(|g| g == name))
        .map(|(id, _)| id.clone())
        .collect()
}

/// A rule may name its own group or another of the owner's, never one of
/// another owner's (which answers as one that does not exist).
fn check_remotes(records: &Records, owner: &str, group: &SecurityGroup) -> Result<(), SgError> {
    for remote in group.remote_groups() {
        if remote != group.name && find(records, owner, remote).is_none() {
            return Err(SgError::Invalid(format!(
                "remote_group_name {remote}: security group {remote} not found"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, remote: Option<&str>) -> SecurityGroup {
        let rule = remote
            .map(|r| format!("rules: [{{direction: ingress, remote_group_name: {r}}}]"))
            .unwrap_or_default();
        SecurityGroup::parse(format!("name: {name}\n{rule}\n").as_bytes()).unwrap()
    }

    #[test]
    fn groups_are_per_owner_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path()).unwrap();
        store.create("acme", group("web", None)).unwrap();
        store.create("zeta", group("web", None)).unwrap();
        assert!(matches!(
            store.create("acme", group("web", None)),
            Err(SgError::Exists(_))
        ));
        // Another owner's group of that name is not a remote of this one.
        store.create("zeta", group("db", None)).unwrap();
        assert!(matches!(
            store.create("acme", group("app", Some("db"))),
            Err(SgError::Invalid(_))
        ));
        store.create("acme", group("app", Some("web"))).unwrap();
        store.create("acme", group("self", Some("self"))).unwrap();
        assert!(matches!(
            store.check_join("acme", &["db".into()]),
            Err(SgError::NotFound(_))
        ));
        store
            .set_membership("c1", "acme", vec!["web".into(), "web".into()])
            .unwrap();
        let reopened = GroupStore::open(dir.path()).unwrap();
        assert_eq!(reopened.list("acme").len(), 3);
        assert_eq!(reopened.get("zeta", "web").unwrap().owner, "zeta");
        assert!(matches!(
            reopened.get("acme", "db"),
            Err(SgError::NotFound(_))
        ));
        assert_eq!(reopened.membership("c1").unwrap().groups, ["web"]);
    }

    #[test]
    fn a_group_in_use_stays_until_its_containers_leave() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path()).unwrap();
        store.create("acme", group("web", None)).unwrap();
        store
            .set_membership("c1", "acme", vec!["web".into()])
            .unwrap();
        match store.remove("acme", "web") {
            Err(SgError::InUse { containers, .. }) => assert_eq!(containers, ["c1"]),
            other => panic!("{other:?}"),
        }
        // Another owner cannot see it, let alone remove it.
        assert!(matches!(
            store.remove("zeta", "web"),
            Err(SgError::NotFound(_))
        ));
        assert!(store.forget("c1").unwrap());
        store.remove("acme", "web").unwrap();
    }

    #[test]
    fn joins_and_owners_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path()).unwrap();
        for i in 0..MAX_GROUPS_PER_OWNER {
            store.create("acme", group(&format!("g{i}"), None)).unwrap();
        }
        assert!(matches!(
            store.create("acme", group("one-more", None)),
            Err(SgError::Quota(_))
        ));
        let many: Vec<String> = (0..=MAX_GROUPS_PER_CONTAINER)
            .map(|i| format!("g{i}"))
            .collect();
        assert!(matches!(
            store.set_membership("c1", "acme", many),
            Err(SgError::TooManyGroups(_))
        ));
        assert!(store.membership("c1").is_none());
    }
}
