//! The host uids that VMs' hypervisor processes run as.
//!
//! Each QEMU runs as a uid of its own from one range, with the same number as
//! its gid, so that one VM's hypervisor can neither signal, trace nor open
//! another's files, and so that firewall rules can name every VM's traffic
//! that leaves from the host's own sockets (`meta skuid`).

use std::ops::RangeInclusive;

/// A range of host uids (and gids of the same numbers) reserved for VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmUids {
    pub first: u32,
    pub count: u32,
}

impl VmUids {
    /// Far above the ranges that distributions hand to users and to
    /// `/etc/subuid`, so that no account or user namespace shares them.
    pub const DEFAULT: VmUids = VmUids {
        first: 1_900_000_000,
        count: 65_536,
    };

    pub fn range(&self) -> RangeInclusive<u32> {
        self.first..=self.first + (self.count - 1)
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.range().contains(&uid)
    }
}

impl Default for VmUids {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_holds_its_ends_only() {
        let uids = VmUids::DEFAULT;
        assert!(uids.contains(1_900_000_000));
        assert!(uids.contains(1_900_065_535));
        assert!(!uids.contains(1_900_065_536));
        assert!(!uids.contains(1_899_999_999));
    }
}
