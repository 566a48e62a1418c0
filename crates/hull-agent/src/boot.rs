//! What the agent does as PID 1 before it serves the host: the root, the
//! pseudo filesystems, stdio on the console, signals, and powering off.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot mount {fstype} at {target}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot create the mount point {0}")]
    MountPoint(&'static str, #[source] io::Error),
    #[error("cannot move the root onto a tmpfs")]
    SwitchRoot(#[source] io::Error),
    #[error("cannot block SIGCHLD")]
    SignalMask(#[source] io::Error),
}

/// Where the tmpfs that becomes the root is mounted before it is moved to `/`.
const NEW_ROOT: &str = "/.hull-root";

/// Blocks SIGCHLD in the calling thread; every thread spawned later inherits
/// the mask, so only the reaper's signalfd sees the signal.
pub fn block_sigchld() -> Result<(), BootError> {
    // SAFETY: `set` is a local sigset initialized by sigemptyset before use;
    // pthread_sigmask accepts a null old-set pointer.
    let ret = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if ret != 0 {
        return Err(BootError::SignalMask(io::Error::from_raw_os_error(ret)));
    }
    Ok(())
}

/// Time since the kernel started, for boot-speed figures in the log.
pub fn since_boot() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A panic anywhere must not leave a VM that never answers: log and power off.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::log!("panic: {info}; powering off");
        power_off();
    }));
}

/// Syncs and powers the VM off; outside PID 1 (tests, debugging) it exits.
pub fn power_off() -> ! {
    sys::sync();
    // Console output still queued in the tty layer is lost at power off.
    // SAFETY: tcdrain only takes a descriptor number.
    unsafe { libc::tcdrain(2) };
    if std::process::id() != 1 {
        std::process::exit(1);
    }
    // Without working ACPI the kernel turns power off into a halt, which
    // leaves QEMU running; a reset ends QEMU too when it runs with -no-reboot.
    let command = if acpi_works() {
        libc::RB_POWER_OFF
    } else {
        libc::RB_AUTOBOOT
    };
    // SAFETY: reboot only takes an integer command; it returns only on failure.
    unsafe { libc::reboot(command) };
    crate::log!("power off failed: {}; halting", io::Error::last_os_error());
    loop {
        std::thread::park();
    }
}

/// The kernel enumerated ACPI devices, so it can power the machine off.
fn acpi_works() -> bool {
    fs::read_dir("/sys/bus/acpi/devices").is_ok_and(|mut entries| entries.next().is_some())
}

/// Everything PID 1 needs before serving: a pivotable root, /proc, /sys,
/// /dev, /dev/pts, /dev/shm, /run, and stdio on the console.
pub fn init_system() -> Result<(), BootError> {
    // SAFETY: umask only takes an integer.
    unsafe { libc::umask(0o022) };
    switch_root_to_tmpfs()?;
    let mounts: [(&'static str, &'static str, libc::c_ulong, Option<&str>); 6] = [
        ("proc", "/proc", NOSUID | NODEV | NOEXEC, None),
        ("sysfs", "/sys", NOSUID | NODEV | NOEXEC, None),
        ("devtmpfs", "/dev", NOSUID, Some("mode=0755")),
        (
            "devpts",
            "/dev/pts",
            NOSUID | NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        ("tmpfs", "/dev/shm", NOSUID | NODEV, Some("mode=1777")),
        ("tmpfs", "/run", NOSUID | NODEV, Some("mode=0755")),
    ];
    for (fstype, target, flags, data) in mounts {
        fs::create_dir_all(target).map_err(|e| BootError::MountPoint(target, e))?;
        sys::mount(fstype, Path::new(target), Some(fstype), flags, data).map_err(|source| {
            BootError::Mount {
                fstype,
                target,
                source,
            }
        })?;
    }
    // The guest's /dev/ptmx must open this devpts instance.
    let _ = fs::remove_file("/dev/ptmx");
    let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    ensure_console_stdio();
    // The containers of a pod talk to each other on localhost.
    if let Err(e) = sys::set_link_up("lo") {
        crate::log!("cannot bring up the loopback interface: {e}");
    }
    // Free page reporting waits for 32 free blocks of its order above the
    // low watermark: at its default order (4 MiB blocks) a guest with less
    // than 128 MiB free never gives a page back. With 128 KiB blocks, 4 MiB
    // free will do. (Linux 6.1 ignores the order on the command line.)
    if let Err(e) = fs::write(PAGE_REPORTING_ORDER, "5") {
        crate::log!("cannot set the free page reporting order: {e}");
    }
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    crate::disk::scan_boot_disks(&cmdline);
    Ok(())
}

const PAGE_REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

/// pivot_root(2) refuses to move the initramfs (it is the top of the mount
/// tree), and containers need pivot_root. So the agent moves itself onto a
/// tmpfs, as switch_root does; it needs no file of the initramfs afterwards.
fn switch_root_to_tmpfs() -> Result<(), BootError> {
    let err = BootError::SwitchRoot;
    fs::create_dir_all(NEW_ROOT).map_err(err)?;
    sys::mount(
        "tmpfs",
        Path::new(NEW_ROOT),
        Some("tmpfs"),
        0,
        Some("mode=0755"),
    )
    .map_err(err)?;
    std::env::set_current_dir(NEW_ROOT).map_err(err)?;
    sys::mount(".", Path::new("/"), None, libc::MS_MOVE, None).map_err(err)?;
    sys::chroot(Path::new(".")).map_err(err)?;
    std::env::set_current_dir("/").map_err(err)
}

/// The kernel opens /dev/console for PID 1 only if the initramfs has it; if
/// it did not, stdio is empty and would be taken by the next files opened.
fn ensure_console_stdio() {
    // SAFETY: F_GETFD only queries a descriptor number.
    let missing = (0..3).any(|fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1);
    if !missing {
        return;
    }
    let Ok(console) = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries a descriptor number.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: dup2 onto a closed descriptor number affects no Rust-owned fd.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
    if console.as_raw_fd() <= 2 {
        // The console took a stdio slot itself: keep it open.
        std::mem::forget(console);
    }
}
