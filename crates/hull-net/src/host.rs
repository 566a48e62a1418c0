//! The host's side of bridge networks: bridges, taps, sysctls and Hull's
//! nftables table, through `ip` and `nft`.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::store::Subnet;
use crate::NetworkError;

/// Whether Hull's nftables tables can be written here, or why not.
pub fn detect_firewall() -> Result<Firewall, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("hulld is not root".into());
    }
    runs("nft")?;
    Ok(Firewall { _private: () })
}

/// What can make bridge networks here, or why nothing can.
pub fn detect() -> Result<HostNetwork, String> {
    detect_firewall()?;
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing".into());
    }
    runs("ip")?;
    Ok(HostNetwork { _private: () })
}

fn runs(tool: &str) -> Result<(), String> {
    let runs = Command::new(tool)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        Ok(())
    } else {
        Err(format!(
            "`{tool}` cannot be run (install iproute2 and nftables)"
        ))
    }
}

/// Bridges and taps on the host; only [`detect`] makes one.
#[derive(Debug)]
pub struct HostNetwork {
    _private: (),
}

/// Hull's nftables tables; only [`detect_firewall`] makes one.
#[derive(Debug)]
pub struct Firewall {
    _private: (),
}

impl Firewall {
    /// Replaces Hull's nftables tables with `script`, in one transaction.
    pub fn apply(&self, script: &str) -> Result<(), NetworkError> {
        run("nft", &["-f", "-"], Some(script))
    }
}

pub(crate) fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), NetworkError> {
    let command = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Host {
            command: command(),
            message: e.to_string(),
        })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| NetworkError::Host {
                command: command(),
                message: e.to_string(),
            })?;
    }
    let output = child.wait_with_output().map_err(|e| NetworkError::Host {
        command: command(),
        message: e.to_string(),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Host {
            command: command(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The fixed address of the bridge whose gateway is `gateway`: locally
/// administered, unique per gateway on the host, and never a guest's
/// (theirs are `02:42:` and their own address).
pub fn bridge_mac(gateway: Ipv4Addr) -> String {
    let [a, b, c, d] = gateway.octets();
    format!("02:48:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(path, value).map_err(|e| NetworkError::Host {
        command: format!("write {value} to {path}"),
        message: e.to_string(),
    })
}

impl HostNetwork {
    /// Makes the bridge with the gateway's address, up, routing out.
    pub fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        subnet: Subnet,
    ) -> Result<(), NetworkError> {
        if !link_exists(name) {
            run("ip", &["link", "add", "name", name, "type", "bridge"], None)?;
        }
        // A bridge whose address was never set takes the lowest of its
        // ports' and changes it as taps come and go: every guest's cached
        // gateway would then point nowhere until its ARP entry expires, so
        // one VM starting or stopping cut the others off for seconds. Set
        // once, it stays (a bridge made before this is set on the next start).
        run(
            "ip",
            &["link", "set", "dev", name, "address", &bridge_mac(gateway)],
            None,
        )?;
        let address = format!("{gateway}/{}", subnet.prefix());
        run("ip", &["addr", "replace", &address, "dev", name], None)?;
        run("ip", &["link", "set", name, "up"], None)?;
        // Published ports answer on the host's loopback too: those packets
        // keep a loopback source until masqueraded on the bridge.
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
            "1",
        )?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    }

    pub fn remove_link(&self, name: &str) -> Result<(), NetworkError> {
        if link_exists(name) {
            run("ip", &["link", "del", name], None)?;
        }
        Ok(())
    }

    /// A persistent tap on `bridge` for one VM; QEMU opens it by name.
    pub fn create_tap(&self, name: &str, bridge: &str) -> Result<(), NetworkError> {
        self.remove_link(name)?;
        run("ip", &["tuntap", "add", "dev", name, "mode", "tap"], None)?;
        let attached = run("ip", &["link", "set", name, "master", bridge, "up"], None);
        if attached.is_err() {
            let _ = self.remove_link(name);
        }
        attached
    }

    /// The host's interfaces whose names start with `prefix`.
    pub fn links_named(&self, prefix: &str) -> Vec<String> {
        std::fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// Subnets the host routes now, which new networks must not take.
    pub fn routed_subnets(&self) -> Vec<Subnet> {
        let Ok(output) = Command::new("ip")
            .args(["-4", "route", "show"])
            .stderr(Stdio::null())
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|destination| destination.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_address_is_fixed_by_its_gateway_and_never_a_guests() {
        let gateway = Ipv4Addr::new(10, 128, 0, 1);
        assert_eq!(bridge_mac(gateway), "02:48:0a:80:00:01");
        assert_ne!(bridge_mac(gateway), crate::store::mac_for(gateway));
    }
}
