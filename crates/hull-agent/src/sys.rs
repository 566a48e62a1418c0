//! Thin, checked wrappers over the system calls the agent makes in its own
//! process (the spawn child has its own, allocation-free code).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

pub fn path_cstring(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = cstring(source)?;
    let target = path_cstring(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.map(cstring).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that
    // outlives the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })
}

pub fn umount(target: &Path) -> io::Result<()> {
    let target = path_cstring(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), 0) })
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    let target = path_cstring(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

pub fn mknod_char(path: &Path, mode: libc::mode_t, rdev: libc::dev_t) -> io::Result<()> {
    let c = path_cstring(path)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode, rdev) })
}

/// Whether the extended attribute `name` of `path` (followed if a link)
/// holds exactly `value`; a missing attribute or one unreadable is `false`.
pub fn xattr_is(path: &Path, name: &str, value: &[u8]) -> bool {
    let (Ok(path), Ok(name)) = (path_cstring(path), cstring(name)) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // kernel writes at most `buf.len()` bytes into `buf`.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(len).is_ok_and(|len| &buf[..len] == value)
}

pub fn chroot(path: &Path) -> io::Result<()> {
    let c = path_cstring(path)?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    check(unsafe { libc::chroot(c.as_ptr()) })
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) })
}

pub fn sync() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill only takes integers.
    check(unsafe { libc::kill(pid, signal) })
}

/// A pipe whose both ends close on exec: (read, write).
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

/// Sets the wall clock.
pub fn set_realtime(unix_nanos: u64) -> io::Result<()> {
    let time = libc::timespec {
        tv_sec: (unix_nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `time` is a valid timespec that outlives the call.
    check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) })
}

/// Mixes `bytes` into the kernel's pool, credited as entropy, and forces the
/// CRNG to reseed from it at once.
pub fn add_entropy(bytes: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // `struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }`
    const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
    const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    let len = libc::c_int::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too much entropy at once"))?;
    let mut info = Vec::with_capacity(8 + bytes.len().next_multiple_of(4));
    info.extend_from_slice(&(len * 8).to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(bytes);
    info.resize(info.capacity(), 0);
    // SAFETY: `info` holds a rand_pool_info header followed by `len` bytes,
    // and lives across the call; the fd is open.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument; the fd is open.
    check(unsafe { libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG) })
}

/// Brings the network interface `name` up, as `ip link set NAME up`.
pub fn set_link_up(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let mut request = interface_request(name)?;
    // SAFETY: `request` is an ifreq naming the interface, valid for the call.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; the kernel only reads the name and flags.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) })
}

/// Takes the network interface `name` down, as `ip link set NAME down`:
/// its routes go with it.
pub fn set_link_down(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let mut request = interface_request(name)?;
    // SAFETY: `request` is an ifreq naming the interface, valid for the call.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short) };
    // SAFETY: as above; the kernel only reads the name and flags.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) })
}

/// Removes the interface's IPv4 address (setting 0.0.0.0 deletes it), so
/// that the VM no longer answers for it on any link.
pub fn clear_ipv4_address(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let mut request = interface_request(name)?;
    request.ifr_ifru.ifru_addr = sockaddr_in(std::net::Ipv4Addr::UNSPECIFIED);
    // SAFETY: `request` is a valid ifreq holding the address.
    match check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFADDR, &request) }) {
        // It had none.
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}

/// A socket for interface ioctls.
fn ioctl_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming the interface `name`.
fn interface_request(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    Ok(request)
}

fn sockaddr_in(address: std::net::Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // the family first and the rest as sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

/// Sets the interface's MAC address.
pub fn set_mac_address(name: &str, mac: [u8; 6]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let mut request = interface_request(name)?;
    // SAFETY: writing the hwaddr member of the union, which the ioctl reads.
    unsafe {
        request.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (slot, byte) in request.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *slot = byte as libc::c_char;
        }
    }
    // SAFETY: `request` is a valid ifreq for the duration of the call.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFHWADDR, &request) })
}

/// Gives the interface an IPv4 address and netmask.
pub fn set_ipv4_address(
    name: &str,
    address: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let mut request = interface_request(name)?;
    request.ifr_ifru.ifru_addr = sockaddr_in(address);
    // SAFETY: `request` is a valid ifreq holding the address.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFADDR, &request) })?;
    request.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    // SAFETY: as above, holding the netmask.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFNETMASK, &request) })
}

/// Sets the interface's MTU.
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let mut request = interface_request(name)?;
    request.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "MTU out of range"))?;
    // SAFETY: `request` is a valid ifreq holding the MTU.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFMTU, &request) })
}

/// Adds a route to the network `destination`/`netmask` through the link
/// `name`, by `gateway` if it is not on the link, as `ip route add`.
pub fn add_route(
    name: &str,
    destination: std::net::Ipv4Addr,
    netmask: std::net::Ipv4Addr,
    gateway: Option<std::net::Ipv4Addr>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let socket = ioctl_socket()?;
    let device = cstring(name)?;
    // SAFETY: rtentry is plain data for which all zeroes is a valid value.
    let mut route: libc::rtentry = unsafe { std::mem::zeroed() };
    route.rt_dst = sockaddr_in(destination);
    route.rt_genmask = sockaddr_in(netmask);
    route.rt_flags = libc::RTF_UP;
    if netmask == std::net::Ipv4Addr::BROADCAST {
        route.rt_flags |= libc::RTF_HOST;
    }
    if let Some(gateway) = gateway {
        route.rt_gateway = sockaddr_in(gateway);
        route.rt_flags |= libc::RTF_GATEWAY;
    }
    // The kernel reads the name only during the call; it is not written.
    route.rt_dev = device.as_ptr().cast_mut();
    // SAFETY: `route` is a valid rtentry and `device` outlives the call.
    check(unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT, &route) })
}
