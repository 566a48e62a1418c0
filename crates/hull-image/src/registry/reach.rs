//! Which hosts a registry client may reach. A pull made on a stranger's
//! behalf (a cloud's tenant) must not turn hulld into a way into the host's
//! private network: its loopback services, its LAN, a metadata endpoint.
//! Such a client reaches public addresses only, and the hosts the operator
//! names, however the address comes: a registry's name, a literal address,
//! a token realm or a redirect. Names are checked as they are resolved, by
//! the resolver the connection then uses, so a name that resolves once to a
//! public address and then to a private one gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// What a client may reach.
#[derive(Clone, Debug, Default)]
pub enum Reach {
    /// Anything: the operator's own pulls.
    #[default]
    Any,
    /// Public addresses, and the hosts named here (by name or address).
    Public { allowed: Arc<Vec<String>> },
}

#[derive(Debug, thiserror::Error)]
#[error("{host} is a private address: pulls for tenants reach only public registries and those the operator allows (hulld --tenant-registry)")]
pub struct NotPublic {
    pub host: String,
}

impl Reach {
    fn allows_host(&self, host: &str) -> bool {
        match self {
            Reach::Any => true,
            Reach::Public { allowed } => allowed.iter().any(|a| a == host),
        }
    }

    /// Checks a URL about to be requested: a literal address in it meets
    /// no resolver, so it is checked here.
    pub fn check_url(&self, url: &str) -> Result<(), NotPublic> {
        if matches!(self, Reach::Any) {
            return Ok(());
        }
        let Ok(url) = reqwest::Url::parse(url) else {
            return Ok(()); // The request itself fails on it.
        };
        self.check_host(&url)
    }

    fn check_host(&self, url: &reqwest::Url) -> Result<(), NotPublic> {
        let host = url.host_str().unwrap_or_default();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = bare.parse::<IpAddr>() else {
            return Ok(()); // A name: the resolver holds it to the reach.
        };
        if is_public(ip) || self.allows_host(bare) {
            Ok(())
        } else {
            Err(NotPublic {
                host: host.to_owned(),
            })
        }
    }

    /// The client's redirect policy: up to 10, none to a private address.
    pub(super) fn redirect_policy(&self) -> redirect::Policy {
        let reach = self.clone();
        redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("more than 10 redirects")
            } else if let Err(refused) = reach.check_host(attempt.url()) {
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        })
    }

    /// The resolver for a client of this reach; `None`: the default one.
    pub(super) fn resolver(&self) -> Option<Arc<PublicResolver>> {
        match self {
            Reach::Any => None,
            Reach::Public { .. } => Some(Arc::new(PublicResolver {
                reach: self.clone(),
            })),
        }
    }
}

/// Resolves names to their public addresses only (all of them for the
/// hosts the operator allows); a name with none fails to resolve.
#[derive(Debug)]
pub(super) struct PublicResolver {
    reach: Reach,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.reach.allows_host(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| allowed || is_public(addr.ip()))
                .collect();
            if kept.is_empty() {
                return Err(Box::new(NotPublic { host }) as Box<_>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Whether an address is on the public internet: not loopback, private,
/// shared (carrier NAT), link-local, unspecified, multicast or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_only(allowed: &[&str]) -> Reach {
        Reach::Public {
            allowed: Arc::new(allowed.iter().map(|a| a.to_string()).collect()),
        }
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "100.128.0.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_addresses_in_urls_are_held_to_the_reach() {
        let reach = public_only(&["127.0.0.1"]);
        assert!(reach.check_url("https://127.0.0.1:5000/v2/").is_ok());
        for refused in [
            "http://127.0.0.2:5000/v2/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]:5000/token",
            "https://[::ffff:10.0.0.1]/x",
            "http://10.0.0.1/",
        ] {
            assert!(reach.check_url(refused).is_err(), "{refused}");
        }
        assert!(reach.check_url("https://registry.example.com/v2/").is_ok());
        assert!(Reach::Any.check_url("http://127.0.0.1/").is_ok());
    }

    #[tokio::test]
    async fn names_resolve_to_public_addresses_only() {
        let resolver = public_only(&[]).resolver().unwrap();
        let refused = resolver.resolve("localhost".parse().unwrap()).await;
        let error = refused.err().expect("localhost is refused").to_string();
        assert!(error.contains("private address"), "{error}");
        let allowed = public_only(&["localhost"]).resolver().unwrap();
        let Ok(addrs) = allowed.resolve("localhost".parse().unwrap()).await else {
            panic!("an allowed host resolves");
        };
        let addrs: Vec<_> = addrs.collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
