//! The uplink's side of FIPs: the host answers for an attached FIP on the
//! uplink, by proxy ARP or by holding the address (see [`UplinkMode`]).
//! Behind a trait, so that the reconciling is tested without a host.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::{FipError, UplinkMode};
use crate::store::Subnet;

/// What makes the uplink answer for an address.
pub trait Uplink: Send + Sync {
    /// The addresses of `pool` the host answers for now, in any mode.
    fn answering(&self, pool: &Subnet) -> Result<Vec<Ipv4Addr>, FipError>;
    /// Answers for `ip`, which lives behind `bridge`. Idempotent.
    fn answer(&self, ip: Ipv4Addr, bridge: &str) -> Result<(), FipError>;
    /// Stops answering for `ip`, in every mode.
    fn withdraw(&self, ip: Ipv4Addr) -> Result<(), FipError>;
}

/// Makes the uplink answer for exactly `wanted` (address, bridge) among
/// the pool's addresses: what a crash or another mode left is withdrawn.
pub fn reconcile(
    uplink: &dyn Uplink,
    pool: &Subnet,
    wanted: &[(Ipv4Addr, String)],
) -> Result<(), FipError> {
    for stale in uplink.answering(pool)? {
        if !wanted.iter().any(|(ip, _)| *ip == stale) {
            uplink.withdraw(stale)?;
        }
    }
    for (ip, bridge) in wanted {
        uplink.answer(*ip, bridge)?;
    }
    Ok(())
}

/// The uplink through `ip`.
pub struct IpUplink {
    pub name: String,
    pub mode: UplinkMode,
}

fn ip(args: &[&str]) -> Result<String, FipError> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FipError::Host {
            command: format!("ip {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(FipError::Host {
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The addresses that start lines of `text` (or follow `inet`), in `pool`.
fn addresses_in(text: &str, pool: &Subnet) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            let word = if first.parse::<u32>().is_ok() || first.ends_with(':') {
                // `ip -o addr`: "2: eth1    inet 198.51.100.17/32 scope …"
                words.skip_while(|w| *w != "inet").nth(1)?
            } else {
                first
            };
            // A FIP is a host address; a route or an address of a wider
            // prefix is not one of Hull's.
            let (address, prefix) = word.split_once('/').unwrap_or((word, "32"));
            (prefix == "32").then_some(())?;
            address.parse::<Ipv4Addr>().ok()
        })
        .filter(|a| pool.contains(*a))
        .collect()
}

impl Uplink for IpUplink {
    fn answering(&self, pool: &Subnet) -> Result<Vec<Ipv4Addr>, FipError> {
        let name = self.name.as_str();
        let mut found = addresses_in(&ip(&["-4", "neigh", "show", "proxy", "dev", name])?, pool);
        found.extend(addresses_in(&ip(&["-4", "route", "show"])?, pool));
        found.extend(addresses_in(
            &ip(&["-4", "-o", "addr", "show", "dev", name])?,
            pool,
        ));
        found.sort();
        found.dedup();
        Ok(found)
    }

    fn answer(&self, address: Ipv4Addr, bridge: &str) -> Result<(), FipError> {
        let (name, host) = (self.name.as_str(), format!("{address}/32"));
        match self.mode {
            UplinkMode::ProxyArp => {
                // Linux answers a proxied address only if it routes it
                // out of another interface than the one asked on.
                ip(&["route", "replace", &host, "dev", bridge])?;
                ip(&[
                    "neigh",
                    "replace",
                    "proxy",
                    &address.to_string(),
                    "dev",
                    name,
                ])?;
            }
            UplinkMode::Address => {
                ip(&["addr", "replace", &host, "dev", name])?;
            }
        }
        Ok(())
    }

    fn withdraw(&self, address: Ipv4Addr) -> Result<(), FipError> {
        let (name, host) = (self.name.as_str(), format!("{address}/32"));
        // Each may be absent: the address was answered for in one mode.
        let _ = ip(&["neigh", "del", "proxy", &address.to_string(), "dev", name]);
        let _ = ip(&["route", "del", &host]);
        let _ = ip(&["addr", "del", &host, "dev", name]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Fake {
        answering: Mutex<Vec<Ipv4Addr>>,
        calls: Mutex<Vec<String>>,
    }

    impl Uplink for Fake {
        fn answering(&self, pool: &Subnet) -> Result<Vec<Ipv4Addr>, FipError> {
            let all = self.answering.lock().unwrap();
            Ok(all.iter().copied().filter(|a| pool.contains(*a)).collect())
        }
        fn answer(&self, ip: Ipv4Addr, bridge: &str) -> Result<(), FipError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("answer {ip} {bridge}"));
            self.answering.lock().unwrap().push(ip);
            Ok(())
        }
        fn withdraw(&self, ip: Ipv4Addr) -> Result<(), FipError> {
            self.calls.lock().unwrap().push(format!("withdraw {ip}"));
            self.answering.lock().unwrap().retain(|a| *a != ip);
            Ok(())
        }
    }

    #[test]
    fn what_a_crash_left_is_withdrawn_and_what_is_attached_answered() {
        let pool: Subnet = "198.51.100.16/28".parse().unwrap();
        let fake = Fake::default();
        // Left by the last hulld: one still attached, one released since,
        // and one address outside the pool that is not Hull's.
        *fake.answering.lock().unwrap() = ["198.51.100.17", "198.51.100.18", "192.0.2.9"]
            .map(|a| a.parse().unwrap())
            .to_vec();
        let wanted = [("198.51.100.17".parse().unwrap(), "hb-aaaa".to_owned())];
        reconcile(&fake, &pool, &wanted).unwrap();
        assert_eq!(
            *fake.calls.lock().unwrap(),
            ["withdraw 198.51.100.18", "answer 198.51.100.17 hb-aaaa"]
        );
        assert!(fake
            .answering
            .lock()
            .unwrap()
            .contains(&"192.0.2.9".parse().unwrap()));
    }

    #[test]
    fn the_pools_addresses_are_read_from_ips_listings() {
        let pool: Subnet = "198.51.100.16/28".parse().unwrap();
        let neigh = "198.51.100.17 proxy\n10.0.0.1 proxy\n";
        let wide = "198.51.100.16/28 dev eth1 scope link\n";
        assert!(addresses_in(wide, &pool).is_empty());
        let routes = "default via 192.0.2.1 dev eth0\n198.51.100.18 dev hb-aaaa scope link\n198.51.100.0/24 dev eth1 proto kernel scope link src 198.51.100.1\n";
        let addrs = "3: eth1    inet 198.51.100.1/24 scope global eth1\\       valid_lft forever\n3: eth1    inet 198.51.100.19/32 scope global eth1\\       valid_lft forever\n";
        assert_eq!(
            addresses_in(neigh, &pool),
            ["198.51.100.17".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            addresses_in(routes, &pool),
            ["198.51.100.18".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            addresses_in(addrs, &pool),
            ["198.51.100.19".parse::<Ipv4Addr>().unwrap()]
        );
    }
}
