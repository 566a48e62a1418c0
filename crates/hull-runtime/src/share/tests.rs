use std::io::Write;
use std::os::unix::process::CommandExt;

use super::*;

/// Whether `path` is a mount point, and its mount options.
fn mount_options(path: &Path) -> Option<String> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_string_lossy().into_owned();
    mountinfo
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
        .map(|line| line.split(' ').nth(5).unwrap_or_default().to_owned())
}

/// Mounts in the host's namespace: root only, and each test's own
/// directories, detached again even when the test fails.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Option<Host> {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: bind mounts need root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("vm")).unwrap();
        fs::create_dir(dir.path().join("source")).unwrap();
        Some(Host { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn share(&self) -> Share {
        let share = Share::of(&self.path("vm"));
        share.prepare().unwrap();
        share
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for point in mountinfo.lines().rev().filter_map(|l| l.split(' ').nth(4)) {
            if point.starts_with(&prefix) {
                let c = CString::new(point).unwrap();
                // SAFETY: a NUL-terminated path that outlives the call.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

#[test]
fn a_read_only_bind_is_read_only_nosuid_and_nodev_on_the_host() {
    let Some(host) = Host::new() else { return };
    let share = host.share();
    let relative = share.mount("c1", 0, &host.path("source"), true).unwrap();
    assert_eq!(relative, "c1/0");
    let point = share.path().join("c1/0");
    let options = mount_options(&point).expect("the bind is mounted");
    for option in ["ro", "nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == option),
            "{option} not in {options}"
        );
    }
    let err = fs::write(point.join("new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    assert!(!host.path("source").join("new").exists());

    share.release("c1");
    assert_eq!(mount_options(&point), None);
    assert!(!share.path().join("c1").exists());
    assert!(share.release_all());
    assert_eq!(mount_options(&share.path()), None);
    assert!(!share.path().exists());
}

#[test]
fn binds_propagate_to_a_namespace_that_sees_the_share_read_only() {
    let Some(host) = Host::new() else { return };
    let share = host.share();
    // A namespace that receives the share's later mounts, as QEMU's does:
    // it waits for a line, then writes through each bind and at the top.
    let script = "read _; for d in c1/0 c1/1 .; do echo x > $d/new 2>&1 || true; done";
    let mut command = std::process::Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .current_dir(share.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: unshare and mount are system calls on static strings.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0
                || libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let (ro_source, rw_source) = (host.path("source"), host.path("rw"));
    fs::create_dir(&rw_source).unwrap();
    share.mount("c1", 0, &ro_source, true).unwrap();
    share.mount("c1", 1, &rw_source, false).unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(said.matches("Read-only file system").count(), 2, "{said}");
    assert!(!ro_source.join("new").exists(), "{said}");
    assert!(rw_source.join("new").exists(), "{said}");
    assert!(!host.path("vm/share.host/new").exists(), "{said}");
    share.release("c1");
    assert!(share.release_all());
}

#[test]
fn a_symlink_planted_where_a_mount_point_goes_is_refused() {
    let Some(host) = Host::new() else { return };
    let share = host.share();
    let victim = host.path("victim");
    fs::create_dir(&victim).unwrap();
    let view = host.path("vm/share.host");
    std::os::unix::fs::symlink(&victim, view.join("c1")).unwrap();
    let source = host.path("source");
    assert!(share.mount("c1", 0, &source, false).is_err());
    assert!(!victim.join("0").exists());

    fs::create_dir(view.join("c2")).unwrap();
    std::os::unix::fs::symlink(&victim, view.join("c2/0")).unwrap();
    assert!(share.mount("c2", 0, &source, false).is_err());
    assert_eq!(
        mount_options(&victim),
        None,
        "the bind landed on the symlink's target"
    );
}

#[test]
fn releasing_a_container_never_follows_a_planted_symlink() {
    let Some(host) = Host::new() else { return };
    let share = host.share();
    // A mount of the host's own, which a release must leave alone.
    let victim = host.path("victim");
    fs::create_dir_all(victim.join("0")).unwrap();
    let c_source = c_path(&host.path("source")).unwrap();
    let point = at::open_dir(None, &victim.join("0")).unwrap();
    at::bind(&c_source, &point, false).unwrap();
    drop(point);
    assert!(mount_options(&victim.join("0")).is_some());

    let view = host.path("vm/share.host");
    std::os::unix::fs::symlink(&victim, view.join("c1")).unwrap();
    share.release("c1");
    fs::create_dir(view.join("c2")).unwrap();
    std::os::unix::fs::symlink(victim.join("0"), view.join("c2/0")).unwrap();
    share.release("c2");

    assert!(
        mount_options(&victim.join("0")).is_some(),
        "a release unmounted the host's mount"
    );
    assert!(victim.join("0").is_dir());
}

#[test]
fn a_share_never_prepared_is_gone_already() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Share::of(dir.path()).release_all());
}
