//! What QEMU inherits and who it runs as: the files and sockets it is
//! handed as descriptors, its uid, and the few capabilities a VM with
//! host shares keeps.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;

use tokio::net::UnixStream;

use super::{detached_paths, Passed, Qemu, QemuError};
use crate::{NetBackend, VmConfig};

/// Who QEMU runs as: a uid of its own (gid the same, no supplementary
/// groups) with only `caps` (a mask of capability numbers) left ambient.
#[derive(Debug, Clone, Copy)]
pub struct Credentials {
    pub uid: u32,
    pub caps: u64,
}

const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_NET_BIND_SERVICE: u32 = 10;

/// What 9p's `passthrough` model takes to keep owners and modes of the
/// files a guest creates or changes: nothing else of root's.
pub fn share_caps() -> u64 {
    [CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID]
        .iter()
        .fold(0, |mask, cap| mask | 1 << cap)
}

/// What the user-mode network takes to listen on a published port below 1024.
pub fn low_port_caps() -> u64 {
    1 << CAP_NET_BIND_SERVICE
}

/// The descriptors QEMU inherits; the host's copies close after the spawn.
pub(super) struct Inherited {
    /// The host's ends of connected sockets; `None` for listening ones.
    pub host_ends: Option<(UnixStream, UnixStream)>,
    pub fds: Passed,
    pub owned: Vec<OwnedFd>,
}

impl Qemu {
    /// Opens everything QEMU of `config` gets, for the uid `owner`.
    pub(super) fn open_for(
        &self,
        config: &VmConfig,
        owner: Option<u32>,
    ) -> Result<Inherited, QemuError> {
        let (ctl_path, qmp_path, _) = detached_paths(&config.run_dir);
        let mut owned = Vec::new();
        let mut keep = |fd: OwnedFd| {
            let raw = fd.as_raw_fd();
            owned.push(fd);
            raw
        };
        let open = |path: &Path| {
            open_read(path).map_err(|source| QemuError::Open {
                path: path.to_owned(),
                source,
            })
        };
        let (host_ends, control, qmp) = if config.detached {
            for path in [&ctl_path, &qmp_path] {
                let _ = fs::remove_file(path);
            }
            let control = listen(&ctl_path, "control channel")?;
            let qmp = listen(&qmp_path, "QMP")?;
            (None, control, qmp)
        } else {
            let (control, control_for_qemu) = socket_pair("control channel")?;
            let (qmp, qmp_for_qemu) = socket_pair("QMP")?;
            (
                Some((control, qmp)),
                control_for_qemu.into(),
                qmp_for_qemu.into(),
            )
        };
        let console_path = config.run_dir.join("console.log");
        let console = create_for(&console_path, owner).map_err(|source| QemuError::Log {
            path: console_path,
            source,
        })?;
        let mut fds = Passed {
            control: keep(control),
            qmp: keep(qmp),
            listening: config.detached,
            kernel: keep(open(&self.artifacts.kernel)?),
            initrd: keep(open(&self.artifacts.initramfs)?),
            console: keep(console),
            ..Passed::default()
        };
        fds.memory = match &config.memory_file {
            // A template's QEMU writes guest RAM into the file, which the
            // host makes read-only for everyone once the template is saved.
            Some(memory) if memory.shared => {
                Some(keep(create_for(&memory.path, owner).map_err(|source| {
                    QemuError::Open {
                        path: memory.path.clone(),
                        source,
                    }
                })?))
            }
            Some(memory) => Some(keep(open(&memory.path)?)),
            None => None,
        };
        if let NetBackend::Tap { ifname, netns } = &config.network {
            let tap = open_tap(ifname, netns.as_deref()).map_err(|source| QemuError::Tap {
                ifname: ifname.clone(),
                source,
            })?;
            fds.tap = Some(keep(tap));
        }
        for disk in &config.disks {
            let file = open_disk(&disk.path, disk.read_only).map_err(|source| QemuError::Disk {
                path: disk.path.clone(),
                source,
            })?;
            fds.disks.push(keep(file));
        }
        Ok(Inherited {
            host_ends,
            fds,
            owned,
        })
    }
}

/// The capabilities QEMU of `config` keeps when it runs as a uid of
/// its own: 9p's to keep owners, and the bind of a published low port.
pub(super) fn caps_for(config: &VmConfig) -> u64 {
    let mut caps = 0;
    if !config.shares.is_empty() {
        caps |= share_caps();
    }
    if let NetBackend::User { forwards } = &config.network {
        if forwards.iter().any(|forward| forward.host_port < 1024) {
            caps |= low_port_caps();
        }
    }
    caps
}

/// A connected socket pair: QEMU inherits one end, the host keeps the other.
/// No path on disk, so nothing to race for, clean up or outgrow `sun_path`.
pub(super) fn socket_pair(what: &'static str) -> Result<(UnixStream, StdUnixStream), QemuError> {
    let (host, guest) =
        StdUnixStream::pair().map_err(|source| QemuError::Socket { what, source })?;
    host.set_nonblocking(true)
        .map_err(|source| QemuError::Socket { what, source })?;
    let host = UnixStream::from_std(host).map_err(|source| QemuError::Socket { what, source })?;
    Ok((host, guest))
}

/// A socket QEMU listens on at `path`, bound by the host so that QEMU
/// needs no access to the directory; a restarted host connects to it again.
fn listen(path: &Path, what: &'static str) -> Result<OwnedFd, QemuError> {
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|source| QemuError::Socket { what, source })?;
    Ok(listener.into())
}

/// Opens a file QEMU will only read, through a read-only mount: a QEMU
/// that keeps a host share's capabilities cannot reopen it for writing.
pub fn open_read(path: &Path) -> io::Result<OwnedFd> {
    crate::mount::open_read_only(path)
}

/// Opens a disk image as its node will use it.
pub fn open_disk(path: &Path, read_only: bool) -> io::Result<OwnedFd> {
    if read_only {
        return open_read(path);
    }
    Ok(fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?
        .into())
}

/// Creates (or empties) a file QEMU writes, owned by `owner` so that QEMU
/// may open it again through `/proc/self/fd`.
pub fn create_for(path: &Path, owner: Option<u32>) -> io::Result<OwnedFd> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)?;
    if let Some(uid) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(uid))?;
    }
    Ok(file.into())
}

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// The `struct ifreq` of `TUNSETIFF`: a name and flags, padded to the
/// kernel's size.
#[repr(C)]
struct TunRequest {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens the tap `ifname` (which the host created), in the network
/// namespace at `netns` if given, for QEMU to inherit: a QEMU that is not
/// root can open no tap by name nor join a namespace. The namespace is
/// joined by a thread of its own, which ends after the open.
pub fn open_tap(ifname: &str, netns: Option<&Path>) -> io::Result<OwnedFd> {
    let namespace = netns.map(fs::File::open).transpose()?;
    let ifname = ifname.to_owned();
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                if let Some(namespace) = &namespace {
                    // SAFETY: setns on a descriptor we own; it moves only
                    // this thread, which ends right after the open.
                    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                attach_tap(&ifname)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread opening the tap panicked")))
    })
}

fn attach_tap(ifname: &str) -> io::Result<OwnedFd> {
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the interface name {ifname} is too long"),
        ));
    }
    let tun: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?
        .into();
    let mut request = TunRequest {
        name: [0; libc::IFNAMSIZ],
        // What QEMU asks for when it opens a tap by name.
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    request.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `request`
    // is laid out as, and it lives across the call.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut request) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun)
}

/// The header and data of `capset(2)`, version 3 (64-bit sets).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Runs in the forked child before exec: drops to `credentials`' uid and
/// gid with no supplementary groups, keeping only its capabilities, made
/// ambient so that they survive the exec. Only system calls, which are
/// async-signal-safe.
pub fn drop_privileges(credentials: Credentials) -> io::Result<()> {
    let check = |result: libc::c_int| {
        if result == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let Credentials { uid, caps } = credentials;
    // SAFETY: plain system calls on integers; setgroups is given no list.
    unsafe {
        if caps != 0 {
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(uid))?;
        check(libc::setuid(uid))?;
    }
    if caps == 0 {
        return Ok(());
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let set = |half: u32| CapData {
        effective: (caps >> (32 * half)) as u32,
        permitted: (caps >> (32 * half)) as u32,
        inheritable: (caps >> (32 * half)) as u32,
    };
    let data = [set(0), set(1)];
    // SAFETY: capset reads a version-3 header and two data structs, which
    // live across the call.
    check(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } as libc::c_int)?;
    for cap in (0..64).filter(|cap| caps & (1 << cap) != 0) {
        // SAFETY: a prctl on integers.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            )
        })?;
    }
    Ok(())
}

/// Lets the child keep `fds` across exec (they are opened close-on-exec,
/// so no other child inherits them). Runs in the forked child.
pub fn inherit(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl on a descriptor number the child holds.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_keep_the_four_file_capabilities_only() {
        assert_eq!(share_caps(), 0b11011);
        assert_eq!(low_port_caps(), 1 << 10);
    }

    #[test]
    fn a_file_for_qemu_is_its_owner_s_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let _fd = create_for(&path, None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        fs::write(&path, "old").unwrap();
        let _fd = create_for(&path, None).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0, "emptied");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            create_for(&link, None).is_err(),
            "a planted link is not followed"
        );
    }
}
