//! FIP records: one JSON file beside the network records, rewritten whole
//! (write, fsync, rename) under one lock, so that two allocations never
//! hand out one address and a crash leaves the old records or the new.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::FipError;
use crate::store::Subnet;

/// At most this many FIPs are allocated by one request.
pub const MAX_COUNT: u64 = 16;

/// What a FIP is attached to: a container, or a service (by id), whose
/// balancer then answers at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    Container(&'a str),
    Service(&'a str),
}

impl std::fmt::Display for Holder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Container(id) => write!(f, "container {id}"),
            Holder::Service(id) => write!(f, "service {id}"),
        }
    }
}

/// Who acts: the operator sees and may change every FIP, a tenant only
/// its own; another's answers as one that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    Operator,
    Tenant(&'a str),
}

impl Owner<'_> {
    fn sees(&self, record: &FipRecord) -> bool {
        match self {
            Owner::Operator => true,
            Owner::Tenant(tenant) => record.owner.as_deref() == Some(*tenant),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FipRecord {
    pub ip: Ipv4Addr,
    /// The tenant's; `None`: the operator's.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub name: String,
    /// The id of the container it is attached to.
    #[serde(default)]
    pub container: Option<String>,
    /// The id of the service it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// That container's published ports (protocol, container port), which
    /// are what the FIP opens; a container's ports never change.
    #[serde(default)]
    pub ports: Vec<(crate::Protocol, u16)>,
    pub allocated: SystemTime,
}

impl FipRecord {
    /// What it is attached to, if anything.
    pub fn holder(&self) -> Option<Holder<'_>> {
        match (&self.container, &self.service) {
            (Some(id), _) => Some(Holder::Container(id)),
            (None, Some(id)) => Some(Holder::Service(id)),
            (None, None) => None,
        }
    }

    fn held_by(&self, holder: Holder<'_>) -> bool {
        self.holder() == Some(holder)
    }

    fn set_holder(&mut self, holder: Option<Holder<'_>>) {
        self.container = None;
        self.service = None;
        match holder {
            Some(Holder::Container(id)) => self.container = Some(id.to_owned()),
            Some(Holder::Service(id)) => self.service = Some(id.to_owned()),
            None => {}
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    fips: Vec<FipRecord>,
    /// Released addresses, the longest free first: a new allocation takes
    /// addresses never handed out before these (`--pick` takes these
    /// first), so that one just released does not reach another tenant
    /// while the world still sends its former owner's traffic to it.
    #[serde(default)]
    released: Vec<Ipv4Addr>,
}

impl State {
    fn find(&mut self, owner: Owner<'_>, ip: Ipv4Addr) -> Result<&mut FipRecord, FipError> {
        self.fips
            .iter_mut()
            .find(|r| r.ip == ip && owner.sees(r))
            .ok_or_else(|| FipError::NotFound(ip.to_string()))
    }
}

pub struct FipStore {
    path: PathBuf,
    state: Mutex<State>,
}

impl FipStore {
    /// The records in `dir` (made if missing).
    pub fn open(dir: &Path) -> Result<Self, FipError> {
        let path = dir.join("fips.json");
        let read = |message: String| FipError::Read {
            path: path.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| read(e.to_string()))?;
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| read(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(read(e.to_string())),
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to a copy of the records and keeps it once written.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, FipError>,
    ) -> Result<T, FipError> {
        let mut state = self.lock();
        let mut next = state.clone();
        let out = change(&mut next)?;
        crate::records::write_json(&self.path, &next).map_err(|e| FipError::Write {
            path: self.path.display().to_string(),
            message: e.to_string(),
        })?;
        *state = next;
        Ok(out)
    }

    /// `count` free addresses of `pool` for `owner`, or none at all.
    pub fn allocate(
        &self,
        owner: Owner<'_>,
        count: u64,
        pick: bool,
        pool: &Subnet,
    ) -> Result<Vec<Ipv4Addr>, FipError> {
        if count == 0 || count > MAX_COUNT {
            return Err(FipError::Count(count.to_string()));
        }
        self.change(|state| {
            let taken = |ip: &Ipv4Addr| state.fips.iter().any(|r| r.ip == *ip);
            let released: Vec<Ipv4Addr> = state
                .released
                .iter()
                .copied()
                .filter(|ip| pool.contains(*ip) && !taken(ip))
                .collect();
            let fresh = pool
                .hosts()
                .filter(|ip| !taken(ip) && !released.contains(ip));
            let free: Vec<Ipv4Addr> = if pick {
                released.iter().copied().chain(fresh).collect()
            } else {
                fresh.chain(released.iter().copied()).collect()
            };
            if (free.len() as u64) < count {
                return Err(FipError::Exhausted {
                    asked: count,
                    free: free.len() as u64,
                    pool: pool.to_string(),
                });
            }
            let chosen: Vec<Ipv4Addr> = free.into_iter().take(count as usize).collect();
            state.released.retain(|ip| !chosen.contains(ip));
            let owner = match owner {
                Owner::Operator => None,
                Owner::Tenant(tenant) => Some(tenant.to_owned()),
            };
            for ip in &chosen {
                state.fips.push(FipRecord {
                    ip: *ip,
                    owner: owner.clone(),
                    name: String::new(),
                    container: None,
                    service: None,
                    ports: Vec::new(),
                    allocated: SystemTime::now(),
                });
            }
            state.fips.sort_by_key(|r| r.ip);
            Ok(chosen)
        })
    }

    pub fn list(&self, owner: Owner<'_>) -> Vec<FipRecord> {
        self.lock()
            .fips
            .iter()
            .filter(|r| owner.sees(r))
            .cloned()
            .collect()
    }

    /// How many FIPs `tenant` holds, as its quota counts them.
    pub fn count(&self, tenant: &str) -> u64 {
        self.list(Owner::Tenant(tenant)).len() as u64
    }

    pub fn name(&self, owner: Owner<'_>, ip: Ipv4Addr, name: &str) -> Result<(), FipError> {
        super::check_name(name)?;
        self.change(|state| {
            state.find(owner, ip)?.name = name.to_owned();
            Ok(())
        })
    }

    /// Attaches `ip` to `holder`, which the caller has checked `owner`
    /// may use, opening `ports` (a container's published ones; a service
    /// opens its own port). `force` moves it from what holds it now.
    pub fn attach(
        &self,
        owner: Owner<'_>,
        ip: Ipv4Addr,
        holder: Holder<'_>,
        ports: &[(crate::Protocol, u16)],
        force: bool,
    ) -> Result<(), FipError> {
        self.change(|state| {
            if let Some(other) = state.fips.iter().find(|r| r.ip != ip && r.held_by(holder)) {
                return Err(FipError::HasOne {
                    holder: holder.to_string(),
                    ip: other.ip,
                });
            }
            let record = state.find(owner, ip)?;
            match record.holder() {
                Some(current) if current != holder && !force => Err(FipError::Attached {
                    ip,
                    holder: current.to_string(),
                }),
                _ => {
                    record.set_holder(Some(holder));
                    record.ports = ports.to_vec();
                    Ok(())
                }
            }
        })
    }

    /// Detaches the FIP of `holder`; which it was.
    pub fn detach(&self, holder: Holder<'_>) -> Result<Ipv4Addr, FipError> {
        self.change(|state| {
            let record = state
                .fips
                .iter_mut()
                .find(|r| r.held_by(holder))
                .ok_or_else(|| FipError::NoneAttached(holder.to_string()))?;
            record.set_holder(None);
            record.ports.clear();
            Ok(record.ip)
        })
    }

    pub fn release(&self, owner: Owner<'_>, ip: Ipv4Addr) -> Result<(), FipError> {
        self.change(|state| {
            let record = state.find(owner, ip)?;
            if let Some(holder) = record.holder() {
                return Err(FipError::InUse {
                    ip,
                    holder: holder.to_string(),
                });
            }
            state.fips.retain(|r| r.ip != ip);
            state.released.push(ip);
            Ok(())
        })
    }

    /// The FIP of `holder`, if it has one.
    pub fn of(&self, holder: Holder<'_>) -> Option<Ipv4Addr> {
        self.lock()
            .fips
            .iter()
            .find(|r| r.held_by(holder))
            .map(|r| r.ip)
    }

    /// Every attached FIP.
    pub fn attached(&self) -> Vec<FipRecord> {
        self.lock()
            .fips
            .iter()
            .filter(|r| r.holder().is_some())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Subnet {
        "198.51.100.16/29".parse().unwrap()
    }

    #[test]
    fn allocations_take_free_addresses_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let store = FipStore::open(dir.path()).unwrap();
        let acme = Owner::Tenant("acme");
        let got = store.allocate(acme, 2, false, &pool()).unwrap();
        assert_eq!(
            got,
            [
                "198.51.100.17".parse::<Ipv4Addr>().unwrap(),
                "198.51.100.18".parse().unwrap()
            ]
        );
        // A /29 has six host addresses; four are left.
        let err = store
            .allocate(Owner::Operator, 5, false, &pool())
            .unwrap_err();
        assert!(matches!(err, FipError::Exhausted { free: 4, .. }), "{err}");
        assert_eq!(
            store.list(Owner::Operator).len(),
            2,
            "nothing was allocated"
        );
        store.name(acme, got[0], "web-ip").unwrap();
        let again = FipStore::open(dir.path()).unwrap();
        let listed = again.list(acme);
        assert_eq!(listed[0].name, "web-ip");
        assert_eq!(again.count("acme"), 2);
        assert_eq!(again.count("beta"), 0);
        assert!(store.allocate(acme, 0, false, &pool()).is_err());
        assert!(store.allocate(acme, MAX_COUNT + 1, false, &pool()).is_err());
    }

    #[test]
    fn another_tenants_fip_is_as_missing_as_one_that_does_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let store = FipStore::open(dir.path()).unwrap();
        let ip = store
            .allocate(Owner::Tenant("acme"), 1, false, &pool())
            .unwrap()[0];
        let beta = Owner::Tenant("beta");
        let missing: Ipv4Addr = "198.51.100.22".parse().unwrap();
        for (theirs, none) in [
            (store.name(beta, ip, "x"), store.name(beta, missing, "x")),
            (
                store.attach(beta, ip, Holder::Container("c1"), &[], true),
                store.attach(beta, missing, Holder::Container("c1"), &[], true),
            ),
            (store.release(beta, ip), store.release(beta, missing)),
        ] {
            let (theirs, none) = (
                theirs.unwrap_err().to_string(),
                none.unwrap_err().to_string(),
            );
            assert_eq!(
                theirs.replace(&ip.to_string(), "X"),
                none.replace(&missing.to_string(), "X")
            );
        }
        assert!(store.list(beta).is_empty());
        // The operator may do it all.
        store.name(Owner::Operator, ip, "ops").unwrap();
        store.release(Owner::Operator, ip).unwrap();
    }

    #[test]
    fn a_fip_is_on_one_container_and_a_container_has_one_fip() {
        let dir = tempfile::tempdir().unwrap();
        let store = FipStore::open(dir.path()).unwrap();
        let acme = Owner::Tenant("acme");
        let ips = store.allocate(acme, 2, false, &pool()).unwrap();
        let web = [(crate::Protocol::Tcp, 80)];
        let (c1, c2) = (Holder::Container("c1"), Holder::Container("c2"));
        store.attach(acme, ips[0], c1, &web, false).unwrap();
        store.attach(acme, ips[0], c1, &web, false).unwrap();
        assert!(matches!(
            store.attach(acme, ips[0], c2, &[], false),
            Err(FipError::Attached { .. })
        ));
        assert!(matches!(
            store.attach(acme, ips[1], c1, &[], true),
            Err(FipError::HasOne { .. })
        ));
        assert!(matches!(
            store.release(acme, ips[0]),
            Err(FipError::InUse { .. })
        ));
        assert_eq!(store.attached()[0].ports, web);
        store.attach(acme, ips[0], c2, &[], true).unwrap();
        let attached = store.attached();
        assert_eq!(
            (attached[0].ip, attached[0].container.as_deref()),
            (ips[0], Some("c2"))
        );
        assert!(
            attached[0].ports.is_empty(),
            "the ports of the container it is on"
        );
        assert_eq!(store.of(c1), None);
        assert_eq!(store.detach(c2).unwrap(), ips[0]);
        assert!(matches!(store.detach(c2), Err(FipError::NoneAttached(_))));
        store.release(acme, ips[0]).unwrap();
    }

    #[test]
    fn a_service_holds_a_fip_as_a_container_does_and_one_id_is_not_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = FipStore::open(dir.path()).unwrap();
        let acme = Owner::Tenant("acme");
        let ips = store.allocate(acme, 2, false, &pool()).unwrap();
        let (web, same_id) = (Holder::Service("s1"), Holder::Container("s1"));
        store.attach(acme, ips[0], web, &[], false).unwrap();
        // A container whose id is the service's is another holder.
        assert_eq!(store.of(same_id), None);
        store.attach(acme, ips[1], same_id, &[], false).unwrap();
        let refused = store.attach(acme, ips[0], Holder::Container("c9"), &[], false);
        let Err(FipError::Attached { holder, .. }) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(holder, "service s1");
        let refused = store.release(acme, ips[0]).unwrap_err();
        assert!(refused.to_string().contains("service s1"), "{refused}");
        // The records say so after a restart.
        let again = FipStore::open(dir.path()).unwrap();
        assert_eq!(again.of(web), Some(ips[0]));
        assert_eq!(again.attached()[0].holder(), Some(web));
        assert_eq!(again.detach(web).unwrap(), ips[0]);
        assert_eq!(again.of(same_id), Some(ips[1]));
        assert!(again.list(acme)[0].holder().is_none());
    }

    #[test]
    fn released_addresses_come_back_last_unless_picked() {
        let dir = tempfile::tempdir().unwrap();
        let store = FipStore::open(dir.path()).unwrap();
        let first = store
            .allocate(Owner::Tenant("a"), 1, false, &pool())
            .unwrap()[0];
        store.release(Owner::Tenant("a"), first).unwrap();
        let next = store
            .allocate(Owner::Tenant("b"), 1, false, &pool())
            .unwrap()[0];
        assert_ne!(next, first);
        let picked = store
            .allocate(Owner::Tenant("b"), 1, true, &pool())
            .unwrap()[0];
        assert_eq!(picked, first);
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(FipStore::open(dir.path()).unwrap());
        let pool: Subnet = "198.51.100.0/26".parse().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let tenant = format!("t{i}");
                    store
                        .allocate(Owner::Tenant(&tenant), 4, i % 2 == 0, &pool)
                        .unwrap()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 32);
    }
}
