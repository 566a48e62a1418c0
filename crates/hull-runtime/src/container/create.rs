//! Creating a container, and undoing what a create left when it failed or
//! a crash cut it short. The record is written first, marked `creating`,
//! before anything else is made (volumes, addresses, the writable disk),
//! so that a hulld started after a crash finds every create in flight and
//! rolls it back: no directory without a record, no address without a
//! container. Also renaming a container and changing its limits.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use hull_net::{NetworkError, NetworkMode};
use hull_proto::Request;
use hull_vm::Hypervisor;
use tracing::{info, warn};

use super::{
    links, lock, names, Container, ContainerConfig, ContainerError, ContainerState, Containers,
    EndpointOptions, PodMembership, Record, RestartPolicy, Status, WRITABLE_DISK,
    WRITABLE_DISK_BYTES,
};
use crate::run::{new_container_id, remove_dir};
use crate::size::{Limits, VmSize};
use crate::spec::{process_config, ProcessOptions};
use crate::volume::VolumeSource;

/// What `create` is given, besides the image.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    /// The image `image` names, when the caller resolved it itself (a
    /// tenant's names are not the store's tags); `image` is then shown only.
    pub image_id: Option<String>,
    /// Where the name is unique: containers of different namespaces may
    /// share a name (two tenants' `web`). `None` is the host's own.
    pub namespace: Option<String>,
    pub image: String,
    pub process: ProcessOptions,
    pub hostname: Option<String>,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub labels: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    pub auto_remove: bool,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<u32>,
    /// The pod whose VM it runs in.
    pub pod: Option<PodMembership>,
    /// Its VM's size; `None`: the daemon's default.
    pub size: Option<crate::size::VmSize>,
    /// Its memory and CPU limits within that size.
    pub limits: crate::size::Limits,
    pub network: hull_net::NetworkMode,
    /// How it joins a user-defined `network`.
    pub endpoint: EndpointOptions,
    /// Networks it joins besides its first, and how (docker's
    /// `EndpointsConfig` with more than one network).
    pub secondary_networks: Vec<(String, EndpointOptions)>,
    pub ports: Vec<hull_net::PortBinding>,
    /// Named volumes (created if missing) and host directories.
    pub volumes: Vec<crate::volume::VolumeMount>,
    /// How much of its output its log keeps.
    pub log: super::logs::LogConfig,
    /// What the client set that Hull only shows back.
    pub client_settings: super::ClientSettings,
    /// Its health check over the image's (see [`super::health::merge`]).
    pub healthcheck: Option<super::health::HealthConfig>,
    /// `--link`: the containers it links to, by reference, with their alias.
    pub links: Vec<(String, String)>,
    /// `--volumes-from`: `container[:ro|:rw]` whose volumes it mounts too.
    pub volumes_from: Vec<String>,
    /// `--add-host`: name and address (see [`super::links::parse_extra_host`]).
    pub extra_hosts: Vec<(String, String)>,
}

/// What docker's `update` changes; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct ContainerUpdate {
    pub limits: Limits,
    pub restart: Option<RestartPolicy>,
    /// Client settings to keep, merged key by key into the stored ones.
    pub client_settings: super::ClientSettings,
}

impl<H: Hypervisor> Containers<H> {
    /// Creates a container of `options.image`: its record, its volumes, its
    /// address on its network and the disk that will hold its writable layer.
    pub async fn create(&self, options: CreateOptions) -> Result<Arc<Container>, ContainerError> {
        let images = self.images.clone();
        let reference = options.image_id.clone().unwrap_or(options.image.clone());
        let image = tokio::task::spawn_blocking(move || images.resolve(&reference))
            .await
            .expect("image lookups do not panic")?;
        let process = process_config(&image.config, &options.process)?;
        if let Some(size) = options.size {
            options.limits.check(size)?;
        }
        let network = match options.network {
            NetworkMode::Network(reference) => {
                NetworkMode::Network(self.networks.get(&reference)?.id)
            }
            other => other,
        };
        let mut secondary = Vec::new();
        for (reference, endpoint) in &options.secondary_networks {
            let id = self.networks.get(reference)?.id;
            if network == NetworkMode::Network(id.clone())
                || secondary.iter().any(|(s, _)| *s == id)
            {
                continue;
            }
            secondary.push((id, endpoint.clone()));
        }
        if network == NetworkMode::None && !secondary.is_empty() {
            return Err(NetworkError::Unsupported("none joins no other network".into()).into());
        }
        if secondary.len() >= hull_proto::NIC_SLOTS {
            return Err(NetworkError::TooManyNetworks {
                container: options.name.clone().unwrap_or_default(),
                max: hull_proto::NIC_SLOTS,
            }
            .into());
        }
        let id = new_container_id();
        let dir = self.dir.join(&id);

        if let Some(namespace) = options.namespace.as_deref() {
            if !names::is_valid(namespace) {
                return Err(ContainerError::InvalidName(namespace.to_owned()));
            }
        }
        let namespace = options.namespace;
        let mut table = lock(&self.table);
        let holder = |name: &str| {
            table
                .values()
                .find(|c| c.is_named(namespace.as_deref(), name))
                .map(|c| c.id.clone())
        };
        let name = match options.name.filter(|n| !n.is_empty()) {
            Some(name) => {
                let name = name.strip_prefix('/').unwrap_or(&name).to_owned();
                if !names::is_valid(&name) {
                    return Err(ContainerError::InvalidName(name));
                }
                if let Some(id) = holder(&name) {
                    return Err(ContainerError::NameInUse { name, id });
                }
                name
            }
            None => names::generate(|n| holder(n).is_some()),
        };
        // Links and --volumes-from name containers of the same namespace only.
        let links = links::resolve_links(&table, namespace.as_deref(), &options.links)?;
        let mut volumes = options.volumes;
        let taken = links::volumes_from(
            &table,
            namespace.as_deref(),
            &options.volumes_from,
            &volumes,
        )?;
        volumes.extend(taken);
        // After --volumes-from, as docker: the image's volumes fill only
        // the paths neither the create nor another container's volumes hold.
        if options.pod.is_none() {
            crate::volume::add_image_volumes(
                &mut volumes,
                image.config.volumes.iter().flat_map(|v| v.keys()),
                new_container_id,
            );
        }
        let entrypoint = options
            .process
            .entrypoint
            .clone()
            .unwrap_or_else(|| image.config.entrypoint.clone().unwrap_or_default());
        let cmd = if options.process.cmd.is_empty() && options.process.entrypoint.is_none() {
            image.config.cmd.clone().unwrap_or_default()
        } else {
            options.process.cmd.clone()
        };
        let mut record = Record {
            id: id.clone(),
            name,
            namespace,
            created: SystemTime::now(),
            creating: true,
            config: ContainerConfig {
                image: options.image,
                image_id: image.id.clone(),
                hostname: options.hostname.unwrap_or_else(|| id[..12].to_owned()),
                process: process.into(),
                cmd,
                entrypoint,
                open_stdin: options.open_stdin,
                stdin_once: options.stdin_once,
                attach_stdin: options.attach_stdin,
                attach_stdout: options.attach_stdout,
                attach_stderr: options.attach_stderr,
                labels: options.labels,
                restart: options.restart,
                auto_remove: options.auto_remove,
                stop_signal: options.stop_signal,
                stop_timeout: options.stop_timeout,
                // A container removed at exit needs no disk: its changes die with it.
                persistent: !options.auto_remove,
                pod: options.pod,
                size: options.size,
                limits: options.limits,
                network,
                ports: options.ports,
                volumes,
                log: options.log,
                client_settings: options.client_settings,
                links,
                extra_hosts: options.extra_hosts,
                healthcheck: super::health::merge(
                    options.healthcheck,
                    image.config.healthcheck.as_ref(),
                ),
            },
            state: ContainerState::default(),
        };
        std::fs::create_dir_all(&dir).map_err(|source| ContainerError::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let created = (|| {
            // First, so that a crash from here on is found and undone.
            record.save(&dir)?;
            for mount in &record.config.volumes {
                if let Some(name) = mount.source.volume_name() {
                    let anonymous = matches!(mount.source, VolumeSource::Anonymous { .. });
                    self.volumes.create(name, Default::default(), anonymous)?;
                }
            }
            // A pod's containers share the pod's one address.
            let own_address = record.config.pod.is_none();
            if let (NetworkMode::Network(network), true) = (&record.config.network, own_address) {
                self.networks.connect(
                    network,
                    &id,
                    &record.name,
                    options.endpoint.aliases,
                    options.endpoint.address,
                    false,
                )?;
            }
            if own_address {
                for (network, endpoint) in secondary {
                    self.networks.connect(
                        &network,
                        &id,
                        &record.name,
                        endpoint.aliases,
                        endpoint.address,
                        true,
                    )?;
                }
            }
            if record.config.persistent {
                create_writable_disk(&dir.join(WRITABLE_DISK))?;
            }
            record.creating = false;
            record.save(&dir)?;
            Ok::<_, ContainerError>(())
        })();
        if let Err(err) = created {
            let others: Vec<ContainerConfig> = table.values().map(|c| c.config()).collect();
            self.undo_create(&record, &dir, &others);
            return Err(err);
        }
        let container = Arc::new(Container::new(dir, record));
        table.insert(id, container.clone());
        drop(table);
        self.emit(&container, "create", &[]);
        Ok(container)
    }

    /// Takes back what a create made: the container's addresses, the
    /// anonymous volumes no container in `others` uses, its directory.
    fn undo_create(&self, record: &Record, dir: &Path, others: &[ContainerConfig]) {
        self.networks.forget(&record.id);
        for mount in &record.config.volumes {
            let VolumeSource::Anonymous { name } = &mount.source else {
                continue;
            };
            let used = others.iter().any(|config| {
                config
                    .volumes
                    .iter()
                    .any(|m| m.source.volume_name() == Some(name.as_str()))
            });
            if !used && self.volumes.get(name).is_ok() {
                if let Err(err) = self.volumes.remove(name) {
                    warn!(volume = %name, error = %err, "cannot remove the anonymous volume of a failed create");
                }
            }
        }
        remove_dir(dir);
    }

    /// Brings the state in line after a crash, once the records are loaded:
    /// creates cut short are rolled back, and addresses held for
    /// containers that no longer exist are given back.
    pub(super) fn recover(&self, creating: Vec<(Record, std::path::PathBuf)>) {
        let others: Vec<ContainerConfig> = lock(&self.table).values().map(|c| c.config()).collect();
        for (record, dir) in creating {
            info!(container = %record.id, "rolling back a create that a crash cut short");
            self.undo_create(&record, &dir, &others);
        }
        // A pod's record is written after its containers: members of a
        // pod that has none are of a pod create cut short.
        let orphans: Vec<Arc<Container>> = lock(&self.table)
            .values()
            .filter(|c| {
                c.config()
                    .pod
                    .is_some_and(|membership| self.pods.get(&membership.pod).is_err())
            })
            .cloned()
            .collect();
        for container in orphans {
            info!(container = %container.id, "rolling back a pod create that a crash cut short");
            lock(&self.table).remove(&container.id);
            self.undo_create(&container.record(), &container.dir, &others);
        }
        // A pod's address is keyed by the pod's id.
        let mut known: Vec<String> = lock(&self.table).keys().cloned().collect();
        known.extend(self.pod_ids());
        for network in self.networks.list() {
            for container in network.endpoints.keys() {
                if !known.contains(container) && !hull_net::service::is_service_endpoint(container)
                {
                    info!(network = %network.name, container = %container, "releasing the address of a container that is gone");
                    self.networks.forget(container);
                }
            }
        }
    }

    /// Renames a container.
    pub fn rename(&self, reference: &str, new_name: &str) -> Result<(), ContainerError> {
        let container = self.get(reference)?;
        let new_name = new_name.strip_prefix('/').unwrap_or(new_name);
        if !names::is_valid(new_name) {
            return Err(ContainerError::InvalidName(new_name.to_owned()));
        }
        let table = lock(&self.table);
        let namespace = container.namespace();
        if let Some(other) = table
            .values()
            .find(|c| c.is_named(namespace.as_deref(), new_name) && c.id != container.id)
        {
            return Err(ContainerError::NameInUse {
                name: new_name.to_owned(),
                id: other.id.clone(),
            });
        }
        let mut record = lock(&container.record);
        let old_name = std::mem::replace(&mut record.name, new_name.to_owned());
        record.save(&container.dir)?;
        drop(record);
        self.networks.rename(&container.id, new_name);
        drop(table);
        self.emit(&container, "rename", &[("oldName", format!("/{old_name}"))]);
        Ok(())
    }

    /// Changes a container's limits and restart policy, as docker's
    /// `update`. Limits stay within the VM's size (`default_size` for a
    /// container without one) and take effect at once if it runs.
    pub async fn update(
        &self,
        container: &Arc<Container>,
        default_size: VmSize,
        update: ContainerUpdate,
    ) -> Result<(), ContainerError> {
        let _op = container.ops.lock().await;
        let config = container.config();
        let limits = config.limits.updated(update.limits);
        if limits != config.limits {
            if let Some(membership) = &config.pod {
                return Err(ContainerError::PodLimits {
                    container: container.name(),
                    pod: membership.pod.clone(),
                });
            }
            let size = config.size.unwrap_or(default_size);
            limits.check(size)?;
            // A VM whose process has exited is powering off: the next
            // start applies the limits.
            let running = container.state().status == Status::Running;
            let run = lock(&container.run).clone().filter(|_| running);
            if let Some(run) = run {
                run.set_guest_memory(limits.guest_memory(size)).await?;
                let count = limits.online_cpus(size);
                run.agent
                    .request_done(&Request::SetOnlineCpus { count })
                    .await?;
            }
        }
        let mut record = lock(&container.record);
        record.config.limits = limits;
        if let Some(restart) = update.restart {
            record.config.restart = restart;
        }
        for (section, settings) in update.client_settings {
            let stored = record.config.client_settings.entry(section).or_default();
            stored.extend(settings);
        }
        record.save(&container.dir)?;
        drop(record);
        self.emit(container, "update", &[]);
        Ok(())
    }
}

fn create_writable_disk(path: &Path) -> Result<(), ContainerError> {
    Ok(crate::volume::format_disk(path, WRITABLE_DISK_BYTES)?)
}
