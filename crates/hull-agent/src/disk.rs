//! Finding a hot-plugged SCSI disk by the serial number the host gave it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hull_proto::ContainerSpec;

/// How often the sysfs scan repeats while the disk has not appeared.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// How long a disk may stay missing before the agent scans the SCSI buses
/// itself, and how often it scans again after that: a fallback for a
/// hot-plug event the guest did not act on, which costs nothing while
/// disks appear on their events.
const RESCAN_AFTER: Duration = Duration::from_millis(500);
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// Where the kernel lists its SCSI hosts, each with a `scan` file.
const SCSI_HOSTS: &str = "/sys/class/scsi_host";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("no disk with serial {serial:?} appeared within {waited:?}")]
    NotFound { serial: String, waited: Duration },
}

/// The serial of a VPD page 0x80 ("unit serial number"): a 4-byte header
/// (its bytes 2-3 the page length, big-endian) then the serial, padded with
/// spaces or NULs.
pub fn parse_vpd_pg80(page: &[u8]) -> Option<String> {
    let header = page.get(..4)?;
    if header[1] != 0x80 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = page.get(4..)?;
    let body = &body[..len.min(body.len())];
    let text = String::from_utf8_lossy(body);
    Some(
        text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_owned(),
    )
}

/// The name (`sda`, …) of the SCSI disk under `sys_block` whose serial is `serial`.
pub fn find_by_serial(sys_block: &Path, serial: &str) -> Option<String> {
    let entries = fs::read_dir(sys_block).ok()?;
    entries.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        if !name.starts_with("sd") {
            return None;
        }
        let page = fs::read(entry.path().join("device/vpd_pg80")).ok()?;
        (parse_vpd_pg80(&page)? == serial.trim()).then_some(name)
    })
}

/// Waits until the disk with `serial` is visible and its device node exists.
pub fn wait_for_disk(serial: &str, timeout: Duration) -> Result<PathBuf, DiskError> {
    let start = Instant::now();
    let mut next_rescan = start + RESCAN_AFTER;
    loop {
        if let Some(name) = find_by_serial(Path::new("/sys/block"), serial) {
            let node = Path::new("/dev").join(name);
            if node.exists() {
                return Ok(node);
            }
        }
        if start.elapsed() >= timeout {
            return Err(DiskError::NotFound {
                serial: serial.to_owned(),
                waited: timeout,
            });
        }
        if Instant::now() >= next_rescan {
            rescan_scsi_hosts(Path::new(SCSI_HOSTS));
            next_rescan = Instant::now() + RESCAN_EVERY;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Asks every SCSI host under `hosts` to scan all its targets and LUNs;
/// disks already known are left as they are. Returns how many hosts were
/// asked.
pub fn rescan_scsi_hosts(hosts: &Path) -> usize {
    ask_to_scan(hosts, "- - -\n")
}

/// Writes `what` (`channel target lun`, `-` for all) to the `scan` file of
/// every SCSI host under `hosts`; returns how many took it.
fn ask_to_scan(hosts: &Path, what: &str) -> usize {
    let Ok(entries) = fs::read_dir(hosts) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|host| fs::write(host.path().join("scan"), what).is_ok())
        .count()
}

/// The kernel's SCSI scan mode, which it reads for every scan.
const SCAN_MODE: &str = "/sys/module/scsi_mod/parameters/scan";
/// The word of the kernel command line by which the host tells how many
/// disks it plugged in before boot (SCSI targets 0 to N - 1).
const BOOT_TARGETS: &str = "hull.scsi_targets=";
/// More boot disks than this are scanned for as missing disks are.
const MAX_BOOT_TARGETS: u32 = 64;

/// Undoes what the host's `scsi_mod.scan=manual` is for. It keeps the
/// kernel from scanning all 256 targets of the virtio-scsi bus at boot
/// (a tenth of a cold boot under TCG), but it also makes the kernel ignore
/// hot-plug events: so the scan mode goes back to `sync` at once, and the
/// targets the host plugged before boot are scanned, each on its own, in
/// the background. Returns how many.
pub fn scan_boot_disks(cmdline: &str) -> u32 {
    if !cmdline
        .split_whitespace()
        .any(|w| w == "scsi_mod.scan=manual")
    {
        return 0;
    }
    if let Err(e) = fs::write(SCAN_MODE, "sync") {
        crate::log!("cannot turn SCSI hot-plug scans back on: {e}");
    }
    let targets = boot_targets(cmdline);
    if targets > 0 {
        let scan = move || {
            for target in 0..targets {
                scan_target(Path::new(SCSI_HOSTS), target);
            }
        };
        if let Err(e) = std::thread::Builder::new().name("scan".into()).spawn(scan) {
            // Disks still appear: a missing one makes its waiter rescan.
            crate::log!("cannot start scanning the boot disks: {e}");
        }
    }
    targets
}

/// How many disks the kernel command line says the host plugged at boot.
fn boot_targets(cmdline: &str) -> u32 {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(BOOT_TARGETS)?.parse().ok())
        .unwrap_or(0)
        .min(MAX_BOOT_TARGETS)
}

/// Asks every SCSI host under `hosts` to scan LUN 0 of `target` on
/// channel 0. Returns how many were asked.
fn scan_target(hosts: &Path, target: u32) -> usize {
    ask_to_scan(hosts, &format!("0 {target} 0\n"))
}

/// Waits for a container's image disk and, if it has one, its writable disk.
pub fn wait_for_container_disks(
    spec: &ContainerSpec,
    timeout: Duration,
) -> Result<(PathBuf, Option<PathBuf>), DiskError> {
    let image = wait_for_disk(&spec.rootfs.serial, timeout)?;
    let writable = spec
        .writable
        .as_ref()
        .map(|w| wait_for_disk(&w.serial, timeout))
        .transpose()?;
    Ok((image, writable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(serial: &[u8]) -> Vec<u8> {
        let mut page = vec![0, 0x80, 0, serial.len() as u8];
        page.extend_from_slice(serial);
        page
    }

    #[test]
    fn boot_targets_come_from_the_command_line_and_are_bounded() {
        assert_eq!(boot_targets("quiet hull.scsi_targets=2 panic=-1"), 2);
        assert_eq!(boot_targets("hull.scsi_targets=100000"), MAX_BOOT_TARGETS);
        for line in [
            "quiet",
            "hull.scsi_targets=",
            "hull.scsi_targets=-1",
            "xhull.scsi_targets=3",
        ] {
            assert_eq!(boot_targets(line), 0, "{line}");
        }
        // Without a manual scan the kernel found its disks itself.
        assert_eq!(scan_boot_disks("quiet hull.scsi_targets=3"), 0);
    }

    #[test]
    fn a_target_scan_asks_every_host_for_lun_0_of_that_target() {
        let hosts = tempfile::tempdir().unwrap();
        for host in ["host0", "host1"] {
            fs::create_dir(hosts.path().join(host)).unwrap();
        }
        assert_eq!(scan_target(hosts.path(), 3), 2);
        let asked = fs::read_to_string(hosts.path().join("host1/scan")).unwrap();
        assert_eq!(asked, "0 3 0\n");
    }

    #[test]
    fn serial_is_read_after_the_header_and_trimmed() {
        assert_eq!(
            parse_vpd_pg80(&page(b"hull-rootfs")).as_deref(),
            Some("hull-rootfs")
        );
        assert_eq!(parse_vpd_pg80(&page(b"  abc \0\0")).as_deref(), Some("abc"));
    }

    #[test]
    fn page_length_bounds_the_serial() {
        let mut bytes = page(b"abc");
        bytes.extend_from_slice(b"junk");
        assert_eq!(parse_vpd_pg80(&bytes).as_deref(), Some("abc"));
    }

    proptest::proptest! {
        #[test]
        fn any_page_parses_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_vpd_pg80(&bytes);
        }

        #[test]
        fn printable_serials_round_trip(serial in "[!-~]{1,36}") {
            proptest::prop_assert_eq!(parse_vpd_pg80(&page(serial.as_bytes())), Some(serial));
        }
    }

    #[test]
    fn short_or_foreign_pages_have_no_serial() {
        assert_eq!(parse_vpd_pg80(&[0, 0x80]), None);
        assert_eq!(parse_vpd_pg80(&[0, 0x83, 0, 1, b'x']), None);
    }

    #[test]
    fn a_rescan_asks_every_scsi_host_for_all_targets() {
        let sys = tempfile::tempdir().unwrap();
        for host in ["host0", "host1"] {
            let dir = sys.path().join(host);
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("scan"), "").unwrap();
        }
        // An entry whose scan file cannot be written is skipped, not an error.
        fs::write(sys.path().join("host2"), "").unwrap();
        assert_eq!(rescan_scsi_hosts(sys.path()), 2);
        for host in ["host0", "host1"] {
            let written = fs::read_to_string(sys.path().join(host).join("scan")).unwrap();
            assert_eq!(written, "- - -\n");
        }
        assert_eq!(rescan_scsi_hosts(&sys.path().join("absent")), 0);
    }

    #[test]
    fn disks_are_found_by_serial_in_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        for (name, serial) in [
            ("sda", &b"other"[..]),
            ("sdb", b"hull-rootfs"),
            ("vda", b"hull-rootfs"),
        ] {
            let dir = sys.path().join(name).join("device");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("vpd_pg80"), page(serial)).unwrap();
        }
        fs::create_dir_all(sys.path().join("sdc")).unwrap();
        assert_eq!(
            find_by_serial(sys.path(), "hull-rootfs").as_deref(),
            Some("sdb")
        );
        assert_eq!(find_by_serial(sys.path(), "missing"), None);
    }
}
