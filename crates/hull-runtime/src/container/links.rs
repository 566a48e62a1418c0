//! Docker's legacy links (`--link NAME:ALIAS`), extra host names
//! (`--add-host`) and `--volumes-from`: what a container takes from others
//! named at its create, and the `/etc/hosts` lines and variables it gets.
//!
//! A link gives the container the linked one's name, environment and, when
//! both share a bridge network (where its address is reachable), its ports
//! and an `/etc/hosts` entry, as docker's default bridge gives them. On
//! Hull's default network every VM has the same private address behind its
//! own NAT, so no address is handed out there: it would name the container
//! itself.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use hull_net::NetworkMode;
use hull_vm::Hypervisor;
use serde::{Deserialize, Serialize};

use super::{lock, Container, ContainerError, Containers};
use crate::volume::VolumeMount;

/// `--add-host NAME:host-gateway` names the host as the container's
/// gateway reaches it.
pub const HOST_GATEWAY: &str = "host-gateway";
/// Variables of a linked container that docker leaves out of `ALIAS_ENV_*`.
const NOT_SHARED: [&str; 3] = ["HOME", "PATH", "HOSTNAME"];

/// A link to another container, which this one knows as `alias`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The linked container's id: a rename keeps the link.
    pub container: String,
    pub alias: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid link {0:?}: give NAME or NAME:ALIAS")]
    Invalid(String),
    #[error("could not get container for {0}: no such container")]
    NoTarget(String),
    #[error("Cannot link to a non running container: /{target} AS /{container}/{alias}")]
    NotRunning {
        target: String,
        container: String,
        alias: String,
    },
    #[error("invalid --volumes-from {0:?}: give CONTAINER, CONTAINER:ro or CONTAINER:rw")]
    InvalidVolumesFrom(String),
    #[error("No such container: {0} (named by --volumes-from)")]
    NoVolumesFrom(String),
    #[error("invalid extra host {0:?}: give NAME:ADDRESS, the address an IP or host-gateway")]
    InvalidHost(String),
    #[error("No such link: /{container}/{alias}")]
    NoSuchLink { container: String, alias: String },
    #[error("Conflict, cannot remove the default link name of the container")]
    DefaultName,
}

/// Reads a link as docker's `HostConfig.Links` carries it: `name:alias`,
/// `name` (its own alias), or docker's stored `/name:/container/alias`.
pub fn parse_link(text: &str) -> Result<(String, String), LinkError> {
    let invalid = || LinkError::Invalid(text.to_owned());
    let (name, alias) = match text.split_once(':') {
        // Docker's stored form names the alias under its container.
        Some((name, alias)) if alias.starts_with('/') => {
            (name, alias.rsplit('/').next().unwrap_or(alias))
        }
        Some((name, alias)) => (name, alias),
        None => (text, text),
    };
    let name = name.strip_prefix('/').unwrap_or(name);
    let alias = alias.strip_prefix('/').unwrap_or(alias);
    let valid = |part: &str| super::names::is_valid(part);
    if !valid(name) || !valid(alias) {
        return Err(invalid());
    }
    Ok((name.to_owned(), alias.to_owned()))
}

/// Reads an extra host as docker's `HostConfig.ExtraHosts` carries it:
/// `name:address` (the address may be IPv6, so split at the first colon)
/// or `name=address`.
pub fn parse_extra_host(text: &str) -> Result<(String, String), LinkError> {
    let invalid = || LinkError::InvalidHost(text.to_owned());
    let (name, address) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(invalid)?;
    if !is_host_name(name) || (address != HOST_GATEWAY && address.parse::<IpAddr>().is_err()) {
        return Err(invalid());
    }
    Ok((name.to_owned(), address.to_owned()))
}

/// Whether `name` can stand in an `/etc/hosts` line: letters, digits,
/// `-`, `.` and `_`, at most 253 of them.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Reads `--volumes-from`'s `container[:ro|:rw]`: the container and
/// whether its volumes are all mounted read-only.
pub fn parse_volumes_from(text: &str) -> Result<(String, Option<bool>), LinkError> {
    let (name, mode) = match text.rsplit_once(':') {
        Some((name, "ro")) => (name, Some(true)),
        Some((name, "rw")) => (name, Some(false)),
        Some(_) => return Err(LinkError::InvalidVolumesFrom(text.to_owned())),
        None => (text, None),
    };
    if name.is_empty() {
        return Err(LinkError::InvalidVolumesFrom(text.to_owned()));
    }
    Ok((name.to_owned(), mode))
}

/// Finds `reference` among the containers of `namespace` only: a tenant's
/// links and `--volumes-from` never reach another's containers.
pub(super) fn find_in(
    table: &BTreeMap<String, Arc<Container>>,
    namespace: Option<&str>,
    reference: &str,
) -> Option<Arc<Container>> {
    let reference = reference.strip_prefix('/').unwrap_or(reference);
    let own: BTreeMap<String, Arc<Container>> = table
        .iter()
        .filter(|(_, c)| c.namespace().as_deref() == namespace)
        .map(|(id, c)| (id.clone(), c.clone()))
        .collect();
    crate::records::find(&own, reference, |c| c.name()).cloned()
}

/// The links of a create, resolved to the containers they name.
pub(super) fn resolve_links(
    table: &BTreeMap<String, Arc<Container>>,
    namespace: Option<&str>,
    links: &[(String, String)],
) -> Result<Vec<Link>, LinkError> {
    links
        .iter()
        .map(|(name, alias)| {
            let target =
                find_in(table, namespace, name).ok_or_else(|| LinkError::NoTarget(name.clone()))?;
            Ok(Link {
                container: target.id.clone(),
                alias: alias.clone(),
            })
        })
        .collect()
}

/// The volumes of the containers `sources` names (`--volumes-from`), for
/// the targets `own` leaves free, in docker's order: a container's own
/// mounts win over the ones it takes.
pub(super) fn volumes_from(
    table: &BTreeMap<String, Arc<Container>>,
    namespace: Option<&str>,
    sources: &[String],
    own: &[VolumeMount],
) -> Result<Vec<VolumeMount>, LinkError> {
    let mut taken: Vec<VolumeMount> = Vec::new();
    for text in sources {
        let (name, read_only) = parse_volumes_from(text)?;
        let source = find_in(table, namespace, &name).ok_or(LinkError::NoVolumesFrom(name))?;
        let path = |m: &VolumeMount| m.target.trim_end_matches('/').to_owned();
        for mount in source.config().volumes {
            let free = !own.iter().chain(&taken).any(|m| path(m) == path(&mount));
            if free {
                // `:ro` makes every mount read-only; `:rw` never makes a
                // read-only one writable.
                taken.push(VolumeMount {
                    read_only: mount.read_only || read_only == Some(true),
                    ..mount
                });
            }
        }
    }
    Ok(taken)
}

/// What one link gives the container: docker's variables and, when the
/// linked container's address is reachable, its `/etc/hosts` line.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct LinkView {
    pub env: Vec<String>,
    pub hosts: Vec<(String, Vec<String>)>,
}

/// Docker's variables for a link: `ALIAS_NAME`, the linked container's
/// environment as `ALIAS_ENV_*` and, with an `address`, its ports as
/// `ALIAS_PORT*`.
pub(super) fn link_env(
    container: &str,
    alias: &str,
    target_env: &[String],
    address: Option<&str>,
    ports: &[(u16, &str)],
) -> Vec<String> {
    let prefix = alias.to_ascii_uppercase().replace(['-', '.'], "_");
    let mut env = Vec::new();
    if let Some(address) = address {
        if let Some((port, protocol)) = ports.first() {
            env.push(format!("{prefix}_PORT={protocol}://{address}:{port}"));
        }
        for (port, protocol) in ports {
            let key = format!("{prefix}_PORT_{port}_{}", protocol.to_ascii_uppercase());
            env.push(format!("{key}={protocol}://{address}:{port}"));
            env.push(format!("{key}_ADDR={address}"));
            env.push(format!("{key}_PORT={port}"));
            env.push(format!("{key}_PROTO={protocol}"));
        }
    }
    env.push(format!("{prefix}_NAME=/{container}/{alias}"));
    for variable in target_env {
        let Some((key, value)) = variable.split_once('=') else {
            continue;
        };
        if !NOT_SHARED.contains(&key) {
            env.push(format!("{prefix}_ENV_{key}={value}"));
        }
    }
    env
}

/// `env` after `extra`, without the variables of `extra` that `env` sets
/// itself: the container's own settings win, as in docker.
pub(super) fn merge_env(extra: Vec<String>, env: &[String]) -> Vec<String> {
    let key = |variable: &str| variable.split('=').next().unwrap_or_default().to_owned();
    let own: std::collections::BTreeSet<String> = env.iter().map(|v| key(v)).collect();
    extra
        .into_iter()
        .filter(|v| !own.contains(&key(v)))
        .chain(env.iter().cloned())
        .collect()
}

impl<H: Hypervisor> Containers<H> {
    /// What `container`'s links give it at its start. Every linked
    /// container must be running, as docker requires.
    pub(super) fn link_views(&self, container: &Container) -> Result<LinkView, ContainerError> {
        let config = container.config();
        let name = container.name();
        let mut view = LinkView::default();
        for link in &config.links {
            let target = lock(&self.table).get(&link.container).cloned();
            let not_running = |target: String| LinkError::NotRunning {
                target,
                container: name.clone(),
                alias: link.alias.clone(),
            };
            let Some(target) = target else {
                return Err(not_running(link.container.clone()).into());
            };
            let state = target.state();
            if !state.running() {
                return Err(not_running(target.name()).into());
            }
            let target_config = target.config();
            // Only an address on a bridge network both are on is reachable.
            let shared = matches!(&config.network, NetworkMode::Network(id)
                if target_config.network == NetworkMode::Network(id.clone()));
            let address = (shared && !state.ip_address.is_empty()).then_some(state.ip_address);
            let ports = exposed_ports(&target_config);
            let ports: Vec<(u16, &str)> = ports.iter().map(|(p, proto)| (*p, *proto)).collect();
            view.env.extend(link_env(
                &name,
                &link.alias,
                &target_config.process.env,
                address.as_deref(),
                &ports,
            ));
            if let Some(address) = address {
                let mut names = vec![link.alias.clone()];
                for other in [target_config.hostname, target.name()] {
                    // A host name is the linked container's to choose.
                    if is_host_name(&other) && !names.contains(&other) {
                        names.push(other);
                    }
                }
                view.hosts.push((address, names));
            }
        }
        Ok(view)
    }

    /// Docker's `HostConfig.Links` of `container`: `/target:/container/alias`.
    pub fn links_shown(&self, container: &Container) -> Vec<String> {
        let name = container.name();
        container
            .config()
            .links
            .iter()
            .map(|link| {
                let target = lock(&self.table)
                    .get(&link.container)
                    .map_or_else(|| link.container.clone(), |c| c.name());
                format!("/{target}:/{name}/{}", link.alias)
            })
            .collect()
    }

    /// The names links give each container (`/linker/alias`), as docker
    /// lists them beside its own, by container id.
    pub fn link_names(&self) -> BTreeMap<String, Vec<String>> {
        let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for linker in self.list() {
            let linker_name = linker.name();
            for link in linker.config().links {
                names
                    .entry(link.container)
                    .or_default()
                    .push(format!("/{linker_name}/{}", link.alias));
            }
        }
        names
    }

    /// Removes `container`'s link `alias` (docker's `DELETE
    /// /containers/NAME/ALIAS?link=true`); both containers stay.
    pub async fn remove_link(
        &self,
        container: &Arc<Container>,
        alias: &str,
    ) -> Result<(), ContainerError> {
        if alias.is_empty() {
            return Err(LinkError::DefaultName.into());
        }
        let _op = container.ops.lock().await;
        let mut record = lock(&container.record);
        let before = record.config.links.len();
        record.config.links.retain(|link| link.alias != alias);
        if record.config.links.len() == before {
            return Err(LinkError::NoSuchLink {
                container: record.name.clone(),
                alias: alias.to_owned(),
            }
            .into());
        }
        record.save(&container.dir)?;
        Ok(())
    }
}

/// The `/etc/hosts` lines of a container: its links' then its extra hosts,
/// `host-gateway` read as the gateway of its first interface (a container
/// without one leaves that line out).
pub(super) fn etc_hosts(
    extra: &[(String, String)],
    spec: &hull_proto::NetworkSpec,
    mut hosts: Vec<(String, Vec<String>)>,
) -> Vec<(String, Vec<String>)> {
    let gateway = spec.interfaces.first().and_then(|i| i.gateway.clone());
    for (name, address) in extra {
        let address = if address == HOST_GATEWAY {
            match &gateway {
                Some(gateway) => gateway.clone(),
                None => {
                    tracing::warn!(host = %name, "no gateway for host-gateway: left out of /etc/hosts");
                    continue;
                }
            }
        } else {
            address.clone()
        };
        hosts.push((address, vec![name.clone()]));
    }
    hosts
}

/// The ports a container publishes or exposes, as docker's link variables
/// list them: ordered by number, then protocol.
fn exposed_ports(config: &super::ContainerConfig) -> Vec<(u16, &'static str)> {
    let mut ports: Vec<(u16, &'static str)> = config
        .ports
        .iter()
        .map(|p| (p.container_port, protocol_name(&p.protocol.to_string())))
        .collect();
    let exposed = config
        .client_settings
        .get("Config")
        .and_then(|c| c.get("ExposedPorts"))
        .and_then(|e| e.as_object());
    for key in exposed.into_iter().flat_map(|e| e.keys()) {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        if let Ok(port) = port.parse::<u16>() {
            ports.push((port, protocol_name(protocol)));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn protocol_name(protocol: &str) -> &'static str {
    match protocol {
        "udp" => "udp",
        "sctp" => "sctp",
        _ => "tcp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_read_as_docker_writes_them() {
        assert_eq!(parse_link("db:data").unwrap(), ("db".into(), "data".into()));
        assert_eq!(parse_link("db").unwrap(), ("db".into(), "db".into()));
        assert_eq!(
            parse_link("/db:/web/data").unwrap(),
            ("db".into(), "data".into())
        );
        for bad in ["", ":x", "db:", "d b:x", "db:a b", "db:../x"] {
            assert!(parse_link(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extra_hosts_take_ips_or_the_gateway_and_nothing_else() {
        assert_eq!(
            parse_extra_host("db:10.0.0.5").unwrap(),
            ("db".into(), "10.0.0.5".into())
        );
        assert_eq!(
            parse_extra_host("v6:::1").unwrap(),
            ("v6".into(), "::1".into())
        );
        assert_eq!(
            parse_extra_host("gw=host-gateway").unwrap(),
            ("gw".into(), HOST_GATEWAY.into())
        );
        for bad in [
            "db",
            ":1.2.3.4",
            "db:",
            "db:not-an-ip",
            "a b:1.2.3.4",
            "x\n1.2.3.4 evil:1.2.3.4",
        ] {
            assert!(parse_extra_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volumes_from_takes_a_mode_or_none() {
        assert_eq!(parse_volumes_from("db").unwrap(), ("db".into(), None));
        assert_eq!(
            parse_volumes_from("db:ro").unwrap(),
            ("db".into(), Some(true))
        );
        assert_eq!(
            parse_volumes_from("db:rw").unwrap(),
            ("db".into(), Some(false))
        );
        for bad in ["", ":ro", "db:rx"] {
            assert!(parse_volumes_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_variables_are_docker_s() {
        let env = link_env(
            "web",
            "my-db",
            &["FOO=1".into(), "PATH=/bin".into(), "BAR=a=b".into()],
            Some("10.1.0.3"),
            &[(5432, "tcp")],
        );
        assert_eq!(
            env,
            [
                "MY_DB_PORT=tcp://10.1.0.3:5432",
                "MY_DB_PORT_5432_TCP=tcp://10.1.0.3:5432",
                "MY_DB_PORT_5432_TCP_ADDR=10.1.0.3",
                "MY_DB_PORT_5432_TCP_PORT=5432",
                "MY_DB_PORT_5432_TCP_PROTO=tcp",
                "MY_DB_NAME=/web/my-db",
                "MY_DB_ENV_FOO=1",
                "MY_DB_ENV_BAR=a=b",
            ]
        );
        let env = link_env("web", "db", &["FOO=1".into()], None, &[(80, "tcp")]);
        assert_eq!(env, ["DB_NAME=/web/db", "DB_ENV_FOO=1"]);
    }

    #[test]
    fn the_container_s_own_variables_win_over_a_link_s() {
        let merged = merge_env(
            vec!["DB_NAME=/web/db".into(), "FOO=link".into()],
            &["FOO=own".into(), "PATH=/bin".into()],
        );
        assert_eq!(merged, ["DB_NAME=/web/db", "FOO=own", "PATH=/bin"]);
    }
}
