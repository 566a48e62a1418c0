//! QEMU's confinement end to end: each container's QEMU in a cgroup of its
//! own with its VM's memory, pids and CPU limits, removed with the
//! container; and in a mount namespace of its own that holds only what
//! QEMU needs, with host binds `nosuid,nodev`.

mod common;

use std::path::{Path, PathBuf};

use common::{daemon, eventually, stdout_of, Daemon};
use hull_vm::jail::{QEMU_CPUS, QEMU_OVERHEAD_MIB, QEMU_THREADS};

/// Whether this run can confine QEMU at all (hulld as root); says so when not.
fn confinable() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: confinement needs hulld to run as root");
    }
    root
}

/// Starts `sleep` in a detached busybox container; returns its id.
fn run_detached(daemon: &Daemon, flags: &[&str]) -> String {
    let mut args = vec!["run", "-d"];
    args.extend(flags);
    args.extend(["busybox", "sleep", "600"]);
    stdout_of(&daemon.hull(&args)).trim().to_owned()
}

/// The VM name and QEMU pid of container `id`: its VM's directory is
/// named after the id's first 16 characters.
fn qemu_of(daemon: &Daemon, id: &str) -> (String, i32) {
    let vms = daemon.root.join("vms");
    let (mut name, mut pid) = (String::new(), 0);
    eventually(30, || {
        name = std::fs::read_dir(&vms)
            .map_err(|e| format!("{}: {e}", vms.display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.ends_with(&id[..16]))
            .ok_or_else(|| format!("no VM directory for {id} in {}", vms.display()))?;
        let pid_file = vms.join(&name).join("qemu.pid");
        pid = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{e}"))?;
        Ok(())
    });
    (name, pid)
}

/// QEMU's `-smp` and `-m` (MiB) from its command line.
fn vm_size(pid: i32) -> (u64, u64) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let after = |flag: &str| {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].clone()
    };
    let memory = after("-m");
    (
        after("-smp").parse().unwrap(),
        memory.trim_end_matches('M').parse().unwrap(),
    )
}

/// The directory of `pid`'s cgroup holding `controller` (v1), or its v2 one.
fn cgroup_dir(pid: i32, controller: &str) -> PathBuf {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, list, path) = (
            fields.next().unwrap(),
            fields.next().unwrap(),
            fields.next().unwrap(),
        );
        if list.split(',').any(|c| c == controller) {
            let mount = [
                "/sys/fs/cgroup".to_string() + "/" + list,
                format!("/sys/fs/cgroup/{controller}"),
            ]
            .into_iter()
            .map(PathBuf::from)
            .find(|d| d.exists())
            .unwrap();
            return mount.join(path.trim_start_matches('/'));
        }
    }
    let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    Path::new("/sys/fs/cgroup").join(v2.trim_start_matches('/'))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A cgroup file of `pid`'s, under its v1 or v2 name.
fn limit(pid: i32, controller: &str, v1: &str, v2: &str) -> String {
    let dir = cgroup_dir(pid, controller);
    if dir.join(v1).exists() {
        read(&dir.join(v1))
    } else {
        read(&dir.join(v2))
    }
}

#[test]
fn a_containers_qemu_has_a_cgroup_of_its_own_with_its_limits_removed_with_it() {
    if !confinable() {
        return;
    }
    let daemon = daemon();
    let id = run_detached(daemon, &[]);
    let (vm, pid) = qemu_of(daemon, &id);
    assert!(
        daemon.log().contains("start=\"template clone\""),
        "{}",
        daemon.log()
    );
    let (vcpus, memory_mib) = vm_size(pid);

    let mut dirs = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        let dir = cgroup_dir(pid, controller);
        // Under the daemon's own parent, `hull/hulld-<root>`, which no
        // other daemon sweeps.
        let parent = dir.parent().unwrap();
        assert!(dir.ends_with(&vm), "{}", dir.display());
        assert!(
            parent.parent().unwrap().ends_with("hull"),
            "{}",
            dir.display()
        );
        let name = parent.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("hulld-"), "{}", dir.display());
        assert_ne!(dir, cgroup_dir(std::process::id() as i32, controller));
        dirs.push(dir);
    }
    // The VM's size, QEMU's measured overhead and TCG's translation cache.
    let memory =
        (memory_mib + QEMU_OVERHEAD_MIB + u64::from(hull_vm::DEFAULT_TCG_TB_SIZE_MIB)) << 20;
    assert_eq!(
        limit(pid, "memory", "memory.limit_in_bytes", "memory.max"),
        memory.to_string()
    );
    assert_eq!(
        limit(pid, "pids", "pids.max", "pids.max"),
        (u64::from(QEMU_THREADS) + vcpus).to_string()
    );
    // The vCPUs' time and QEMU's own threads'.
    let quota = ((vcpus + u64::from(QEMU_CPUS)) * 100_000).to_string();
    let cpu = limit(pid, "cpu", "cpu.cfs_quota_us", "cpu.max");
    assert!(cpu == quota || cpu == format!("{quota} 100000"), "{cpu}");
    // The guest still runs under them.
    assert_eq!(
        stdout_of(&daemon.hull(&["exec", &id, "echo", "alive"])),
        "alive\n"
    );

    stdout_of(&daemon.hull(&["rm", "-f", &id]));
    eventually(30, || match dirs.iter().find(|d| d.exists()) {
        Some(dir) => Err(format!("{} outlived its container", dir.display())),
        None => Ok(()),
    });
}

/// The mount points of `pid`'s namespace, with their options.
fn mounts(pid: i32) -> Vec<(String, String)> {
    read(Path::new(&format!("/proc/{pid}/mountinfo")))
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields[4].to_owned(), fields[5].to_owned())
        })
        .collect()
}

#[test]
fn qemu_sees_only_the_files_it_needs() {
    if !confinable() {
        return;
    }
    let daemon = daemon();
    let id = run_detached(daemon, &[]);
    let (name, pid) = qemu_of(daemon, &id);
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(&pid.to_string()), ns("self"));

    let root = PathBuf::from(format!("/proc/{pid}/root"));
    for absent in ["etc/shadow", "etc/passwd", "home", "root/.ssh", "sys"] {
        assert!(!root.join(absent).exists(), "QEMU sees /{absent}");
    }
    // Of the state directory, only the way to the VM's own 9p share.
    let share = daemon.root.join("vms").join(&name).join("share");
    let mut dir = PathBuf::from("/");
    for component in share.strip_prefix("/").unwrap().components() {
        let seen: Vec<_> = std::fs::read_dir(root.join(dir.strip_prefix("/").unwrap()))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        dir.push(component);
        if dir.parent() != Some(Path::new("/")) {
            assert_eq!(
                seen,
                [component.as_os_str()],
                "QEMU sees more of {}",
                dir.display()
            );
        }
    }
    let shared: Vec<_> = std::fs::read_dir(root.join(share.strip_prefix("/").unwrap()))
        .unwrap()
        .collect();
    assert!(shared.is_empty(), "{shared:?}");
    assert!(root.join("usr/share/qemu").is_dir());
    // Its own processes only, and no kernel knobs.
    assert!(root.join("proc/self/fd").is_dir());
    assert!(!root.join("proc/sys").exists() && !root.join("proc/kcore").exists());
    let etc: Vec<String> = std::fs::read_dir(root.join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        etc.iter().all(|f| f == "ld.so.cache" || f == "resolv.conf"),
        "{etc:?}"
    );

    // Every mount is one of the binds QEMU needs (its files come as
    // descriptors), none lets a set-uid program run, and only /usr runs
    // programs.
    let allowed = [
        "/",
        "/usr",
        "/proc",
        "/dev/null",
        "/dev/urandom",
        "/dev/kvm",
        "/etc/ld.so.cache",
        "/etc/resolv.conf",
    ];
    let share = share.display().to_string();
    let allowed = |point: &str| allowed.contains(&point) || point == share;
    let mounts = mounts(pid);
    assert!(mounts.len() <= 8, "{mounts:#?}");
    for (point, options) in &mounts {
        assert!(allowed(point), "unexpected mount {point} in {mounts:#?}");
        if point != "/" {
            assert!(options.contains("nosuid"), "{point} {options}");
        }
        if point != "/usr" {
            assert!(
                options.contains("noexec") || point == "/",
                "{point} {options}"
            );
        }
    }
    assert!(
        mounts.iter().any(|(p, o)| p == "/" && o.starts_with("ro")),
        "{mounts:#?}"
    );
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
}

#[test]
fn a_host_bind_is_nosuid_nodev_in_qemus_namespace_and_read_only_when_asked() {
    if !confinable() {
        return;
    }
    let daemon = daemon();
    let host = tempfile::tempdir().unwrap();
    let (rw, ro) = (host.path().join("rw"), host.path().join("ro"));
    for dir in [&rw, &ro] {
        std::fs::create_dir(dir).unwrap();
        std::fs::write(dir.join("file"), "from the host\n").unwrap();
    }
    let rw_flag = format!("{}:/rw", rw.display());
    let ro_flag = format!("{}:/ro:ro", ro.display());
    let id = run_detached(daemon, &["-v", &rw_flag, "-v", &ro_flag]);
    let (name, pid) = qemu_of(daemon, &id);
    let mounts = mounts(pid);
    // Binds land below the VM's share, as `<container>/<index>`.
    let share = daemon.root.join("vms").join(&name).join("share").join(&id);
    let (rw, ro) = (share.join("0"), share.join("1"));
    let options = |dir: &Path| {
        mounts
            .iter()
            .find(|(p, _)| Path::new(p) == dir)
            .unwrap_or_else(|| panic!("{} is not bound in {mounts:#?}", dir.display()))
            .1
            .clone()
    };
    let (rw_options, ro_options) = (options(&rw), options(&ro));
    for options in [&rw_options, &ro_options] {
        assert!(
            options.contains("nosuid") && options.contains("nodev"),
            "{options}"
        );
    }
    assert!(rw_options.starts_with("rw"), "{rw_options}");
    assert!(ro_options.starts_with("ro"), "{ro_options}");
    // The guest still reads both and writes the writable one.
    let output = daemon.hull(&["exec", &id, "sh", "-c", "cat /ro/file && echo hi > /rw/new"]);
    assert_eq!(stdout_of(&output), "from the host\n");
    assert_eq!(read(&host.path().join("rw/new")), "hi");
    stdout_of(&daemon.hull(&["rm", "-f", &id]));
}
