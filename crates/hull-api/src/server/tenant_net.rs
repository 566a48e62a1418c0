//! Each tenant's own network, as Hyper.sh gave each user one private L2
//! network: its containers reach one another by name and by address and
//! the internet through NAT, and nothing else: not another tenant's
//! containers, not the host, not the operator's networks, not the host's
//! LAN; and nothing reaches them but replies and their published ports.
//!
//! The runtime knows no tenants: it offers isolated networks and reserved
//! names (`<owner>:<name>`, which no `network create` can take), and this
//! layer gives each tenant one of them, labelled with its owner.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use hull_net::{NetworkOptions, NetworkRecord, Subnet, SubnetPool};
use hyper::StatusCode;

use super::scope::OWNER_LABEL;
use super::ApiError;
use crate::daemon::Daemon;

/// The reserved names' owner part: a tenant's network is `tenant:<name>`.
const OWNER_PART: &str = "tenant";

/// Tenants' subnets: `/24`s of `10.128.0.0/10`, room for 16 384 tenants
/// apart from the operator's `10.89.0.0/16`; any a network or a route of
/// the host already holds is skipped.
fn tenant_pool() -> SubnetPool {
    SubnetPool {
        range: Subnet::new(Ipv4Addr::new(10, 128, 0, 0), 10).expect("/10"),
        size: 24,
    }
}

/// The name of `tenant`'s network.
pub fn network_name(tenant: &str) -> String {
    format!("{OWNER_PART}:{tenant}")
}

/// The name of `tenant`'s own network, made on first use: every container
/// of the tenant goes on it. Concurrent first uses get the same network.
pub fn tenant_network(daemon: &Daemon, tenant: &str) -> Result<String, ApiError> {
    let networks = daemon.containers().networks();
    if let Some(why) = networks.bridges_unavailable() {
        // QEMU's user-mode network would keep tenants from one another
        // but not from the host's LAN, and without a firewall not from
        // the host's loopback either.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("tenants' containers need bridge networks, which this host cannot make: {why}"),
        ));
    }
    let options = NetworkOptions {
        name: network_name(tenant),
        isolated: true,
        labels: BTreeMap::from([(OWNER_LABEL.to_owned(), tenant.to_owned())]),
        pool: tenant_pool(),
        ..Default::default()
    };
    let record = networks.ensure(options)?;
    check_owned(&record, tenant)?;
    Ok(record.name)
}

/// The network a tenant's new container joins for the `--network` it asked
/// for (`requested`, docker's `HostConfig.NetworkMode`): its own network for
/// none given, `default`, `bridge` or its own network's name; `none` as
/// asked; anything else is refused, with the same words whether or not
/// such a network exists.
pub fn tenant_network_for(
    daemon: &Daemon,
    tenant: &str,
    requested: &str,
) -> Result<String, ApiError> {
    match choose(tenant, requested)? {
        Choice::Own => tenant_network(daemon, tenant),
        Choice::None => Ok("none".to_owned()),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Choice {
    Own,
    None,
}

fn choose(tenant: &str, requested: &str) -> Result<Choice, ApiError> {
    let own = network_name(tenant);
    match requested {
        "" | "default" | "bridge" => Ok(Choice::Own),
        "none" => Ok(Choice::None),
        asked if asked == own => Ok(Choice::Own),
        "host" => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a tenant's container cannot use the host's network: it joins its tenant's own",
        )),
        asked => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("a tenant's container joins its tenant's own network ({own}), not {asked:?}"),
        )),
    }
}

/// Removes a removed tenant's network, unless containers are still on it
/// (it goes with the last of them at the next tenant removal or prune).
pub fn forget_network(daemon: &Daemon, tenant: &str) {
    let networks = daemon.containers().networks();
    let name = network_name(tenant);
    match networks.get(&name) {
        Ok(record) if record.labels.get(OWNER_LABEL).map(String::as_str) == Some(tenant) => {
            if let Err(err) = networks.remove(&record.id) {
                tracing::warn!(network = %name, error = %err, "cannot remove a removed tenant's network");
            }
        }
        _ => {}
    }
}

/// A network of the reserved name is made only here; one that is not the
/// tenant's own isolated network (an operator's hand on the records) is
/// refused rather than joined.
fn check_owned(record: &NetworkRecord, tenant: &str) -> Result<(), ApiError> {
    let owned = record.labels.get(OWNER_LABEL).map(String::as_str) == Some(tenant);
    if owned && record.isolated && !record.internal {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "network {} is not tenant {tenant}'s own isolated network: remove it, and it is made again at the next use",
            record.name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(owner: Option<&str>, isolated: bool) -> NetworkRecord {
        NetworkRecord {
            id: "0".repeat(64),
            name: network_name("acme"),
            created: std::time::SystemTime::UNIX_EPOCH,
            subnet: "10.128.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 128, 0, 1),
            internal: false,
            isolated,
            labels: owner
                .map(|o| (OWNER_LABEL.to_owned(), o.to_owned()))
                .into_iter()
                .collect(),
            options: BTreeMap::new(),
            endpoints: BTreeMap::new(),
        }
    }

    #[test]
    fn a_tenants_network_has_a_name_no_network_create_takes() {
        assert_eq!(network_name("acme"), "tenant:acme");
        // Docker's names have no `:`, and the runtime refuses it in them.
        assert!(network_name("acme").contains(':'));
        assert!(tenant_pool().range.contains(Ipv4Addr::new(10, 191, 255, 1)));
        assert!(!tenant_pool().range.overlaps(&SubnetPool::default().range));
    }

    #[test]
    fn a_tenants_container_goes_on_its_own_network_whatever_it_asks() {
        for asked in ["", "default", "bridge", "tenant:acme"] {
            assert_eq!(choose("acme", asked).unwrap(), Choice::Own, "{asked}");
        }
        assert_eq!(choose("acme", "none").unwrap(), Choice::None);
        for asked in [
            "host",
            "tenant:beta",
            "backend",
            "container:x",
            "tenant:acm",
            "Tenant:acme",
        ] {
            let refused = choose("acme", asked).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{asked}");
        }
        // Another tenant's network and one that does not exist read alike.
        let other = choose("acme", "tenant:beta").unwrap_err().message;
        let missing = choose("acme", "tenant:nobody").unwrap_err().message;
        assert_eq!(
            other.replace("tenant:beta", "X"),
            missing.replace("tenant:nobody", "X")
        );
    }

    #[test]
    fn only_the_tenants_own_isolated_network_is_joined() {
        assert!(check_owned(&record(Some("acme"), true), "acme").is_ok());
        assert!(check_owned(&record(Some("beta"), true), "acme").is_err());
        assert!(check_owned(&record(None, true), "acme").is_err());
        assert!(check_owned(&record(Some("acme"), false), "acme").is_err());
    }
}
