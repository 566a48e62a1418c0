//! FIPs on the networks: what changes a FIP's place rewrites Hull's
//! rules and the uplink at once.

use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::uplink::IpUplink;
use super::{FipConfig, FipError, FipRecord, Holder, Owner};
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

    /// Attaches `ip` to `holder`, which the caller has checked `owner` may
    /// use, opening a container's published `ports` (a service opens its
    /// own port); a container must be on a bridge network.
    pub fn attach_fip(
        &self,
        owner: Owner<'_>,
        ip: Ipv4Addr,
        holder: Holder<'_>,
        ports: &[(crate::Protocol, u16)],
        force: bool,
    ) -> Result<(), NetworkError> {
        self.fips.config()?;
        if let Holder::Container(container_id) = holder {
            let bridged = self.bridges_unavailable().is_none()
                && self
                    .list()
                    .iter()
                    .any(|n| n.endpoints.contains_key(container_id));
            if !bridged {
                return Err(FipError::NotBridged(container_id.to_owned()).into());
            }
        }
        self.fips.store.attach(owner, ip, holder, ports, force)?;
        if let Err(err) = self.apply_firewall() {
            let _ = self.fips.store.detach(holder);
            let _ = self.apply_firewall();
            return Err(err);
        }
        info!(fip = %ip, to = %holder, "floating IP attached");
        Ok(())
    }

    /// Detaches the FIP of `holder`; which it was.
    pub fn detach_fip(&self, holder: Holder<'_>) -> Result<Ipv4Addr, NetworkError> {
        let ip = self.fips.store.detach(holder)?;
        self.apply_firewall()?;
        info!(fip = %ip, from = %holder, "floating IP detached");
        Ok(ip)
    }

    /// The FIP of a removed container or service goes back to its owner,
    /// detached.
    pub(crate) fn forget_fip(&self, holder: Holder<'_>) {
        if self.fips.store.of(holder).is_some() {
            if let Err(err) = self.detach_fip(holder) {
                warn!(%holder, error = %err, "cannot detach the floating IP of a removed holder");
            }
        }
    }

    /// The FIP attached to `holder`, for inspect.
    pub fn fip_of(&self, holder: Holder<'_>) -> Option<Ipv4Addr> {
        self.fips.store.of(holder)
    }
}
