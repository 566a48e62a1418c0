//! Security groups, as Hyper.sh had them: named sets of rules (direction,
//! protocol, port range, and a remote prefix or group) that a container
//! joins. A container in no group is open; one in groups sends and
//! receives only what the union of their rules allows, other containers
//! of its own network included. Groups belong to an owner (a tenant, or
//! the operator); a rule's `remote_group_name` is a group of the same
//! owner, and stands for the addresses of the containers in it.
//!
//! The records live beside the networks' ([`store`]); the rules are one
//! more table of the ruleset [`crate::Networks`] writes in one transaction
//! ([`nft`]), so they are made again from the records whenever anything
//! changes and at every start of hulld.

pub mod model;
pub mod nft;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

pub use model::{Direction, Prefix, Rule, SecurityGroup};
pub use store::{GroupRecord, GroupStore, Membership};

use crate::bridges::{lock, tap_name, Networks};
use crate::NetworkError;
use nft::{Guarded, Port, SgRuleset};

/// Rules in one group.
pub const MAX_RULES: usize = 100;
/// Groups one container joins.
pub const MAX_GROUPS_PER_CONTAINER: usize = 10;
/// Groups of one owner (Hyper.sh's quota).
pub const MAX_GROUPS_PER_OWNER: usize = 100;
/// A group's YAML.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// The label the Docker API side names a container's groups with
/// (`sh_hyper_sg_web=yes`), as Hyper.sh's client set it.
pub const LABEL_PREFIX: &str = "sh_hyper_sg_";

#[derive(Debug, thiserror::Error)]
pub enum SgError {
    #[error("security group {0} not found")]
    NotFound(String),
    #[error("security group {0} already exists")]
    Exists(String),
    #[error("security group {name} is in use by container(s) {}: remove it from them first (hull update --sg-rm {name} CONTAINER)", .containers.join(", "))]
    InUse {
        name: String,
        containers: Vec<String>,
    },
    #[error(
        "invalid security group name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-], at most 64 characters"
    )]
    InvalidName(String),
    #[error("invalid security group: {0}")]
    Invalid(String),
    #[error("cannot read the security group: {0}")]
    Parse(String),
    #[error("a security group has at most {MAX_RULES} rules, not {0}")]
    TooManyRules(usize),
    #[error("a security group's YAML is at most {MAX_SPEC_BYTES} bytes, not {0}")]
    TooLarge(usize),
    #[error("a container joins at most {MAX_GROUPS_PER_CONTAINER} security groups, not {0}")]
    TooManyGroups(usize),
    #[error("No more security group quota for use, please delete some ({0} at most)")]
    Quota(usize),
    #[error("security groups rule bridge networks only: container {0} is on the default user-mode network (or none); run it with --network on a bridge network (hull network create NAME) to give it groups")]
    UserNetwork(String),
    #[error("the security group records in {} are unreadable: {message}", .path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot {what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot apply security groups")]
    Firewall(#[source] NetworkError),
}

/// The groups a container's labels name (`sh_hyper_sg_<name>`).
pub fn groups_from_labels(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels
        .keys()
        .filter_map(|key| key.strip_prefix(LABEL_PREFIX))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Networks {
    /// The groups and who is in them, to read.
    pub fn security_groups(&self) -> &GroupStore {
        &self.groups
    }

    pub fn create_group(&self, owner: &str, group: SecurityGroup) -> Result<GroupRecord, SgError> {
        // Nothing is in a new group, and no rule names it yet.
        self.groups.create(owner, group)
    }

    /// New rules for a group, in force on its running containers once
    /// this returns.
    pub fn update_group(
        &self,
        owner: &str,
        name: &str,
        group: SecurityGroup,
    ) -> Result<GroupRecord, SgError> {
        let record = self.groups.update(owner, name, group)?;
        self.apply_firewall().map_err(SgError::Firewall)?;
        Ok(record)
    }

    pub fn remove_group(&self, owner: &str, name: &str) -> Result<GroupRecord, SgError> {
        let record = self.groups.remove(owner, name)?;
        // Rules of other groups may name it: their sets go.
        self.apply_firewall().map_err(SgError::Firewall)?;
        Ok(record)
    }

    /// Puts a container of `owner` in exactly `groups`, live. Only a
    /// container with an address on a bridge network can be in one.
    pub fn join_groups(
        &self,
        container_id: &str,
        owner: &str,
        groups: Vec<String>,
    ) -> Result<(), SgError> {
        let bridged = self.host.is_ok()
            && self
                .list()
                .iter()
                .any(|n| n.primary_endpoint(container_id).is_some());
        if !groups.is_empty() && !bridged {
            return Err(SgError::UserNetwork(container_id.to_owned()));
        }
        self.groups.set_membership(container_id, owner, groups)?;
        self.apply_firewall().map_err(SgError::Firewall)
    }

    /// Drops a removed container from its groups (the caller rewrites the
    /// firewall).
    pub(crate) fn forget_groups(&self, container_id: &str) -> bool {
        self.groups.forget(container_id).unwrap_or_else(|err| {
            tracing::warn!(container = %container_id, error = %err, "cannot drop the container from its security groups");
            false
        })
    }

    /// The `bridge hull` table for the containers running now.
    pub(crate) fn security_script(&self) -> String {
        if self.host.is_err() {
            return String::new();
        }
        let networks = self.list();
        // The container's address and gateway on its first network.
        let endpoint = |id: &str| {
            networks
                .iter()
                .find_map(|n| n.primary_endpoint(id).map(|e| (e.address, n.gateway)))
        };
        let memberships = self.groups.memberships();
        let groups = self.groups.all();
        let group = |owner: &str, name: &str| {
            groups
                .iter()
                .find(|g| g.owner == owner && g.group.name == name)
                .map(|g| &g.group)
        };
        // Every tap of a running VM, with its container's address and
        // gateway on the tap's network.
        let mut taps: Vec<(String, String, (std::net::Ipv4Addr, std::net::Ipv4Addr))> = Vec::new();
        for id in lock(&self.published).keys() {
            if let Some(on) = endpoint(id) {
                taps.push((id.clone(), tap_name(id), on));
            }
        }
        for (id, slot, network) in self.secondary_taps() {
            let on = networks
                .iter()
                .find(|n| n.id == network)
                .and_then(|n| Some((n.endpoints.get(&id)?.address, n.gateway)));
            if let Some(on) = on {
                taps.push((id.clone(), crate::tap_name_for(&id, slot), on));
            }
        }
        let mut ports = Vec::new();
        let mut guarded = Vec::new();
        for (id, tap, (address, gateway)) in taps {
            let port = Port { tap, address };
            ports.push(port.clone());
            if let Some(membership) = memberships.get(&id) {
                guarded.push(Guarded {
                    port,
                    gateway,
                    owner: &membership.owner,
                    groups: membership
                        .groups
                        .iter()
                        .filter_map(|name| group(&membership.owner, name))
                        .collect(),
                });
            }
        }
        let mut members: BTreeMap<(String, String), BTreeSet<std::net::Ipv4Addr>> = BTreeMap::new();
        for (id, membership) in &memberships {
            // Its addresses on all its networks: traffic between members
            // may cross any of them.
            let addresses: Vec<std::net::Ipv4Addr> = networks
                .iter()
                .filter_map(|n| n.endpoints.get(id).map(|e| e.address))
                .collect();
            for name in &membership.groups {
                members
                    .entry((membership.owner.clone(), name.clone()))
                    .or_default()
                    .extend(addresses.iter().copied());
            }
        }
        SgRuleset {
            ports: &ports,
            guarded: &guarded,
            members: &members,
        }
        .script()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_groups_as_hyper_shs_client_wrote_them() {
        let labels = BTreeMap::from([
            ("sh_hyper_sg_web".to_owned(), "yes".to_owned()),
            ("sh_hyper_sg_".to_owned(), "yes".to_owned()),
            ("sh_hyper_instancetype".to_owned(), "s4".to_owned()),
            ("sh_hyper_sg_db".to_owned(), "yes".to_owned()),
        ]);
        assert_eq!(groups_from_labels(&labels), ["db", "web"]);
    }
}
