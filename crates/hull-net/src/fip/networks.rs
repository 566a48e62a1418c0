//! FIPs on the networks: what changes a FIP's place rewrites Hull's
//! rules and the uplink at once.

use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::uplink::IpUplink;
use super::{FipConfig, FipError, FipRecord, Owner};
use crate::{NetworkError, Networks};

impl Networks {
    /// Gives this host a pool of FIPs on an uplink; the rules and the
    /// uplink are made to match the records at once.
    pub fn configure_fips(&self, config: FipConfig) -> Result<(), NetworkError> {
        if !std::path::Path::new("/sys/class/net")
            .join(&config.uplink)
            .exists()
        {
            return Err(FipError::NoUplink(config.uplink).into());
        }
        let uplink = IpUplink {
            name: config.uplink.clone(),
            mode: config.mode,
        };
        info!(pool = %config.pool, uplink = %config.uplink, mode = %config.mode, "floating IPs enabled");
        self.fips.configure(config, Box::new(uplink));
        self.apply_firewall()
    }

    pub fn fip_config(&self) -> Result<FipConfig, FipError> {
        self.fips.config()
    }

    pub fn allocate_fips(
        &self,
        owner: Owner<'_>,
        count: u64,
        pick: bool,
    ) -> Result<Vec<Ipv4Addr>, FipError> {
        let pool = self.fips.config()?.pool;
        self.fips.store.allocate(owner, count, pick, &pool)
    }

    pub fn list_fips(&self, owner: Owner<'_>) -> Vec<FipRecord> {
        self.fips.store.list(owner)
    }

    /// How many FIPs `tenant` holds.
    pub fn fips_of(&self, tenant: &str) -> u64 {
        self.fips.store.count(tenant)
    }

    pub fn name_fip(&self, owner: Owner<'_>, ip: Ipv4Addr, name: &str) -> Result<(), FipError> {
        self.fips.store.name(owner, ip, name)
    }

    pub fn release_fip(&self, owner: Owner<'_>, ip: Ipv4Addr) -> Result<(), FipError> {
        self.fips.store.release(owner, ip)
    }

    /// Attaches `ip` to `container_id`, which the caller has checked
    /// `owner` may use, opening its published `ports`; it must be on a
    /// bridge network.
    pub fn attach_fip(
        &self,
        owner: Owner<'_>,
        ip: Ipv4Addr,
        container_id: &str,
        ports: &[(crate::Protocol, u16)],
        force: bool,
    ) -> Result<(), NetworkError> {
        self.fips.config()?;
        let bridged = self.bridges_unavailable().is_none()
            && self
                .list()
                .iter()
                .any(|n| n.endpoints.contains_key(container_id));
        if !bridged {
            return Err(FipError::NotBridged(container_id.to_owned()).into());
        }
        self.fips
            .store
            .attach(owner, ip, container_id, ports, force)?;
        if let Err(err) = self.apply_firewall() {
            let _ = self.fips.store.detach(container_id);
            let _ = self.apply_firewall();
            return Err(err);
        }
        info!(fip = %ip, container = %container_id, "floating IP attached");
        Ok(())
    }

    /// Detaches the FIP of `container_id`; which it was.
    pub fn detach_fip(&self, container_id: &str) -> Result<Ipv4Addr, NetworkError> {
        let ip = self.fips.store.detach(container_id)?;
        self.apply_firewall()?;
        info!(fip = %ip, container = %container_id, "floating IP detached");
        Ok(ip)
    }

    /// The FIP of a removed container goes back to its owner, detached.
    pub(crate) fn forget_fip(&self, container_id: &str) {
        if self.fips.store.of_container(container_id).is_some() {
            if let Err(err) = self.detach_fip(container_id) {
                warn!(container = %container_id, error = %err, "cannot detach the floating IP of a removed container");
            }
        }
    }

    /// The FIP attached to `container_id`, for inspect.
    pub fn fip_of(&self, container_id: &str) -> Option<Ipv4Addr> {
        self.fips.store.of_container(container_id)
    }
}
