//! Starting a container process: clone into its namespaces, set it up, exec.
//!
//! The child of a multi-threaded process may only make async-signal-safe
//! calls, so everything it needs (C strings, pointer arrays, descriptors) is
//! prepared by [`SpawnPlan`] before the clone, and the child makes raw system
//! calls only: no allocation, no locks, no glibc wrappers that talk to other
//! threads (glibc's setuid signals every thread it knows of).

use std::ffi::{c_char, CStr, CString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use crate::rlimit::ResourceLimit;
use crate::sys;

/// Where the new process's namespaces come from.
pub enum Namespaces {
    /// The container's first process: new PID and mount namespaces, rooted
    /// (pivot_root) at the container's rootfs.
    New { rootfs: CString },
    /// A later process: joins the namespaces of the container's first one.
    Join { pid_ns: File, mnt_ns: File },
}

/// Everything the child needs, prepared before the clone.
pub struct SpawnPlan {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Paths to try `execve` on, in order (the `PATH` search done by hand).
    pub candidates: Vec<CString>,
    /// Directories to create, top down, so the working directory exists.
    pub cwd_dirs: Vec<CString>,
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Set while the child is still root, so a hard limit may also rise.
    pub rlimits: Vec<ResourceLimit>,
    pub namespaces: Namespaces,
    /// Become stdin, stdout, stderr; closed in the agent once spawned.
    pub stdio: [File; 3],
    /// stdin is a pty slave to make the controlling terminal.
    pub terminal: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the exec status pipe")]
    Pipe(#[source] io::Error),
    #[error("cannot enter the container's PID namespace")]
    JoinPidNamespace(#[source] io::Error),
    #[error("cannot clone the new process")]
    Clone(#[source] io::Error),
    #[error("the new process could not {step}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel refused the plan's `rlimits[index]`.
    #[error("the new process could not set resource limit {index}")]
    Rlimit {
        index: usize,
        #[source]
        source: io::Error,
    },
    /// The final `execve` failed with this errno.
    #[error("exec failed")]
    Exec { errno: i32 },
}

/// What the child was doing when it failed, sent to the parent with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    Signals,
    Session,
    Terminal,
    Stdio,
    PrivateMounts,
    EnterRootfs,
    PivotRoot,
    DetachOldRoot,
    MountProc,
    JoinMounts,
    Rlimit,
    Groups,
    Gid,
    Uid,
    Cwd,
    Exec,
}

impl Step {
    const ALL: [Step; 16] = [
        Step::Signals,
        Step::Session,
        Step::Terminal,
        Step::Stdio,
        Step::PrivateMounts,
        Step::EnterRootfs,
        Step::PivotRoot,
        Step::DetachOldRoot,
        Step::MountProc,
        Step::JoinMounts,
        Step::Rlimit,
        Step::Groups,
        Step::Gid,
        Step::Uid,
        Step::Cwd,
        Step::Exec,
    ];

    fn describe(self) -> &'static str {
        match self {
            Step::Signals => "reset its signal mask",
            Step::Session => "create a session",
            Step::Terminal => "take its controlling terminal",
            Step::Stdio => "set up stdio",
            Step::PrivateMounts => "make its mounts private",
            Step::EnterRootfs => "enter the container rootfs",
            Step::PivotRoot => "pivot_root into the rootfs",
            Step::DetachOldRoot => "detach the old root",
            Step::MountProc => "mount /proc",
            Step::JoinMounts => "join the container's mount namespace",
            Step::Rlimit => "set its resource limits",
            Step::Groups => "set its supplementary groups",
            Step::Gid => "set its group id",
            Step::Uid => "set its user id",
            Step::Cwd => "change to its working directory",
            Step::Exec => "exec",
        }
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Clones and starts the process; returns its pid once `execve` succeeded.
///
/// The caller must hold whatever lock keeps the reaper from reporting the pid
/// before the caller has recorded it.
pub fn spawn(plan: &SpawnPlan) -> Result<i32, SpawnError> {
    let argv = null_terminated(&plan.argv);
    let envp = null_terminated(&plan.envp);
    let (mut status_read, status_write) = sys::pipe().map_err(SpawnError::Pipe)?;
    let pid = clone_child(plan, &argv, &envp, status_write.as_raw_fd())?;
    drop(status_write);
    let mut report = [0u8; REPORT_LEN];
    let mut filled = 0;
    while filled < report.len() {
        match status_read.read(&mut report[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SpawnError::Pipe(e)),
        }
    }
    if filled == 0 {
        return Ok(pid);
    }
    let word = |at: usize| report[at..at + 4].try_into().expect("4 bytes");
    let step = u32::from_le_bytes(word(0));
    let errno = i32::from_le_bytes(word(4));
    let detail = u32::from_le_bytes(word(8));
    match Step::ALL.get(step as usize) {
        Some(Step::Exec) => Err(SpawnError::Exec { errno }),
        Some(Step::Rlimit) => Err(SpawnError::Rlimit {
            index: detail as usize,
            source: io::Error::from_raw_os_error(errno),
        }),
        step => Err(SpawnError::Setup {
            step: step.map_or("start", |s| s.describe()),
            source: io::Error::from_raw_os_error(errno),
        }),
    }
}

fn clone_child(
    plan: &SpawnPlan,
    argv: &[*const c_char],
    envp: &[*const c_char],
    status: RawFd,
) -> Result<i32, SpawnError> {
    let mut flags = libc::SIGCHLD as libc::c_long;
    let mut restore_pid_ns = None;
    match &plan.namespaces {
        Namespaces::New { .. } => {
            flags |= (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as libc::c_long;
        }
        Namespaces::Join { pid_ns, .. } => {
            // setns on a PID namespace changes only where this thread's
            // children go; put it back right after the clone, since a thread
            // in that state cannot start threads.
            let own = File::open("/proc/self/ns/pid").map_err(SpawnError::JoinPidNamespace)?;
            setns(pid_ns, libc::CLONE_NEWPID).map_err(SpawnError::JoinPidNamespace)?;
            restore_pid_ns = Some(own);
        }
    }
    // SAFETY: a fork-like clone (no new stack, no shared memory); the child
    // runs only `child`, which makes async-signal-safe calls and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid == 0 {
        // SAFETY: we are the freshly cloned child, single-threaded.
        unsafe { child(plan, argv, envp, status) }
    }
    let clone_error = io::Error::last_os_error();
    if let Some(own) = restore_pid_ns {
        setns(&own, libc::CLONE_NEWPID).expect("returning to the agent's own PID namespace");
    }
    if pid == -1 {
        return Err(SpawnError::Clone(clone_error));
    }
    Ok(pid as i32)
}

fn setns(ns: &File, kind: libc::c_int) -> io::Result<()> {
    // SAFETY: setns takes an open namespace descriptor and a flag.
    if unsafe { libc::setns(ns.as_raw_fd(), kind) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What the child reports when it fails: its step, the errno, and which
/// item of the step failed (the index of a resource limit), each a
/// little-endian 32-bit word.
const REPORT_LEN: usize = 12;

/// Reports `step` and the current errno to the parent and exits.
///
/// # Safety
/// Only in the cloned child.
unsafe fn fail(status: RawFd, step: Step) -> ! {
    // SAFETY: in the child, as our caller is.
    unsafe { fail_at(status, step, 0) }
}

/// [`fail`], naming the step's `detail`'th item.
///
/// # Safety
/// Only in the cloned child.
unsafe fn fail_at(status: RawFd, step: Step, detail: u32) -> ! {
    // SAFETY: errno is thread-local storage this (only) thread owns.
    let errno = unsafe { *libc::__errno_location() };
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&(step as u32).to_le_bytes());
    report[4..8].copy_from_slice(&errno.to_le_bytes());
    report[8..].copy_from_slice(&detail.to_le_bytes());
    // SAFETY: write and _exit are async-signal-safe; `report` outlives the call.
    unsafe {
        libc::write(status, report.as_ptr().cast(), report.len());
        libc::_exit(127)
    }
}

/// The child: from clone to execve.
///
/// # Safety
/// Only in the cloned child of `clone_child`, with `argv`/`envp` built from `plan`.
unsafe fn child(
    plan: &SpawnPlan,
    argv: &[*const c_char],
    envp: &[*const c_char],
    status: RawFd,
) -> ! {
    // Used only inside the unsafe block below.
    macro_rules! check {
        ($step:expr, $ret:expr) => {
            if ($ret as i64) < 0 {
                fail(status, $step)
            }
        };
    }
    // SAFETY: raw system calls on descriptors and C strings
    // prepared by the parent, all alive in this copy of its memory.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let null = std::ptr::null_mut();
        check!(
            Step::Signals,
            libc::sigprocmask(libc::SIG_SETMASK, &empty, null)
        );
        check!(Step::Session, libc::setsid());
        if plan.terminal {
            let tty = plan.stdio[0].as_raw_fd();
            check!(Step::Terminal, libc::ioctl(tty, libc::TIOCSCTTY, 0));
        }
        for (target, file) in plan.stdio.iter().enumerate() {
            check!(
                Step::Stdio,
                libc::dup2(file.as_raw_fd(), target as libc::c_int)
            );
        }
        match &plan.namespaces {
            Namespaces::New { rootfs } => enter_new_root(rootfs, status),
            Namespaces::Join { mnt_ns, .. } => {
                check!(
                    Step::JoinMounts,
                    libc::setns(mnt_ns.as_raw_fd(), libc::CLONE_NEWNS)
                );
            }
        }
        for dir in &plan.cwd_dirs {
            libc::mkdir(dir.as_ptr(), 0o755);
        }
        for (index, limit) in plan.rlimits.iter().enumerate() {
            let new: *const libc::rlimit64 = &limit.limit;
            let old = std::ptr::null_mut::<libc::rlimit64>();
            // pid 0: this process.
            if libc::syscall(libc::SYS_prlimit64, 0, limit.resource, new, old) == -1 {
                fail_at(status, Step::Rlimit, index as u32);
            }
        }
        let groups = (plan.groups.len(), plan.groups.as_ptr());
        check!(
            Step::Groups,
            libc::syscall(libc::SYS_setgroups, groups.0, groups.1)
        );
        let (uid, gid) = (plan.uid, plan.gid);
        check!(Step::Gid, libc::syscall(libc::SYS_setresgid, gid, gid, gid));
        check!(Step::Uid, libc::syscall(libc::SYS_setresuid, uid, uid, uid));
        check!(Step::Cwd, libc::chdir(plan.cwd.as_ptr()));
        exec_candidates(&plan.candidates, argv, envp, status)
    }
}

/// Makes the container rootfs the root of this (new) mount namespace and
/// mounts a /proc that shows the new PID namespace.
///
/// # Safety
/// Only in the cloned child, in its own mount namespace.
unsafe fn enter_new_root(rootfs: &CStr, status: RawFd) {
    let null = std::ptr::null::<c_char>();
    let no_data = std::ptr::null::<libc::c_void>();
    // SAFETY: raw system calls on static or parent-prepared C strings.
    unsafe {
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(null, c"/".as_ptr(), null, private, no_data) == -1 {
            fail(status, Step::PrivateMounts);
        }
        if libc::chdir(rootfs.as_ptr()) == -1 {
            fail(status, Step::EnterRootfs);
        }
        // pivot_root(".", "."): the old root ends up on top of the new one,
        // where a lazy unmount drops it and every guest mount under it.
        let dot = c".".as_ptr();
        if libc::syscall(libc::SYS_pivot_root, dot, dot) == -1 {
            fail(status, Step::PivotRoot);
        }
        if libc::umount2(dot, libc::MNT_DETACH) == -1 {
            fail(status, Step::DetachOldRoot);
        }
        libc::chdir(c"/".as_ptr());
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let proc_ = c"proc".as_ptr();
        if libc::mount(proc_, c"/proc".as_ptr(), proc_, flags, no_data) == -1 {
            fail(status, Step::MountProc);
        }
    }
}

/// execve each candidate in turn, like execvp: a missing file moves on, a
/// file that exists but cannot run is remembered, anything else stops.
///
/// # Safety
/// Only in the cloned child.
unsafe fn exec_candidates(
    candidates: &[CString],
    argv: &[*const c_char],
    envp: &[*const c_char],
    status: RawFd,
) -> ! {
    let mut denied = false;
    for candidate in candidates {
        let path: &CStr = candidate;
        // SAFETY: NUL-terminated path and null-terminated pointer arrays.
        unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        // SAFETY: errno is this thread's own.
        match unsafe { *libc::__errno_location() } {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => denied = true,
            // SAFETY: in the child.
            _ => unsafe { fail(status, Step::Exec) },
        }
    }
    let errno = if denied { libc::EACCES } else { libc::ENOENT };
    // SAFETY: errno is this thread's own; then report it as the exec error.
    unsafe {
        *libc::__errno_location() = errno;
        fail(status, Step::Exec)
    }
}
