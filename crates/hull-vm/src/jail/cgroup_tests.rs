use super::*;

/// A cgroup filesystem laid out in a temporary directory. Unlike the
/// kernel's, a directory holds files the fake wrote, so removal takes
/// them too; a directory with a `busy` file stands for one in use.
#[derive(Debug)]
struct FakeFs;

impl CgroupFs for FakeFs {
    fn exists(&self, path: &Path) -> bool {
        SysFs.exists(path)
    }
    fn read(&self, path: &Path) -> io::Result<String> {
        SysFs.read(path)
    }
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        SysFs.mkdir(path)
    }
    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // The kernel's directories come with their files; the fake's
        // get them on first write, in an existing directory only.
        if !path.parent().is_some_and(Path::is_dir) {
            return Err(io::ErrorKind::NotFound.into());
        }
        fs::write(path, value)
    }
    fn rmdir(&self, path: &Path) -> io::Result<()> {
        if path.join("busy").exists() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        fs::remove_dir_all(path)
    }
    fn children(&self, path: &Path) -> io::Result<Vec<String>> {
        SysFs.children(path)
    }
    fn open_procs(&self, path: &Path) -> io::Result<OwnedFd> {
        Ok(fs::File::create(path.join("cgroup.procs"))?.into())
    }
}

const HYBRID: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/job/7\n2:cpu,cpuacct:/\n0::/\n";

fn hybrid(mount: &Path) -> Cgroups<FakeFs> {
    for dir in ["memory/job/7", "pids", "cpu,cpuacct", "unified"] {
        fs::create_dir_all(mount.join(dir)).unwrap();
    }
    let layout = Layout::detect(&FakeFs, mount, HYBRID).unwrap();
    Cgroups {
        fs: FakeFs,
        layout,
        parent: "hull".into(),
    }
}

fn unified(mount: &Path) -> Cgroups<FakeFs> {
    fs::write(
        mount.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    let layout = Layout::detect(&FakeFs, mount, "0::/user.slice/hulld.service\n").unwrap();
    Cgroups {
        fs: FakeFs,
        layout,
        parent: "hull".into(),
    }
}

const LIMITS: Limits = Limits {
    memory_bytes: 192 << 20,
    pids: 100,
    cpus: 2,
};

fn read(path: PathBuf) -> String {
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_hybrid_host_uses_the_v1_controllers_below_the_daemons_own_cgroup() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = hybrid(mount.path());
    assert_eq!(
        cgroups.layout,
        Layout::V1 {
            memory: mount.path().join("memory/job/7"),
            pids: mount.path().join("pids/"),
            cpu: mount.path().join("cpu,cpuacct/"),
        }
    );
}

#[test]
fn v1_limits_are_written_in_each_controller() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = hybrid(mount.path());
    let vm = cgroups.create("vm1", LIMITS).unwrap();
    let m = mount.path();
    assert_eq!(
        read(m.join("memory/job/7/hull/vm1/memory.limit_in_bytes")),
        (192u64 << 20).to_string()
    );
    assert_eq!(read(m.join("pids/hull/vm1/pids.max")), "100");
    assert_eq!(
        read(m.join("cpu,cpuacct/hull/vm1/cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(
        read(m.join("cpu,cpuacct/hull/vm1/cpu.cfs_quota_us")),
        "200000"
    );
    assert_eq!(vm.dirs.len(), 3);
}

#[test]
fn v2_limits_are_written_once_with_controllers_enabled_above() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = unified(mount.path());
    let vm = cgroups.create("vm1", LIMITS).unwrap();
    let m = mount.path();
    assert_eq!(vm.dirs, vec![m.join("hull/vm1")]);
    assert_eq!(
        read(m.join("hull/vm1/memory.max")),
        (192u64 << 20).to_string()
    );
    assert_eq!(read(m.join("hull/vm1/pids.max")), "100");
    assert_eq!(read(m.join("hull/vm1/cpu.max")), "200000 100000");
    for dir in [m.to_owned(), m.join("hull")] {
        assert_eq!(
            read(dir.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
    }
}

#[test]
fn joining_writes_the_callers_own_pid_to_every_hierarchy() {
    for v2 in [false, true] {
        let mount = tempfile::tempdir().unwrap();
        let cgroups = if v2 {
            unified(mount.path())
        } else {
            hybrid(mount.path())
        };
        let vm = cgroups.create("vm1", LIMITS).unwrap();
        vm.join().unwrap();
        for dir in &vm.dirs {
            assert_eq!(read(dir.join("cgroup.procs")), "0", "{}", dir.display());
        }
    }
}

#[test]
fn removal_takes_every_hierarchys_directory_and_tolerates_a_missing_one() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = hybrid(mount.path());
    let vm = cgroups.create("vm1", LIMITS).unwrap();
    cgroups.remove("vm1").unwrap();
    for dir in &vm.dirs {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    cgroups.remove("vm1").unwrap();
}

#[test]
fn a_failed_limit_leaves_no_cgroup_behind() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = hybrid(mount.path());
    // A pids hierarchy that is not there: its limit cannot be written.
    fs::remove_dir_all(mount.path().join("pids")).unwrap();
    fs::write(mount.path().join("pids"), "").unwrap();
    let err = cgroups.create("vm1", LIMITS).unwrap_err();
    assert!(matches!(err, CgroupError::Create { .. }), "{err}");
    assert!(!mount.path().join("memory/job/7/hull/vm1").exists());
}

#[test]
fn the_sweep_removes_only_the_cgroups_nobody_is_in() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = unified(mount.path());
    cgroups.create("gone", LIMITS).unwrap();
    let live = cgroups.create("live", LIMITS).unwrap();
    fs::write(live.dirs[0].join("busy"), "").unwrap();
    assert_eq!(cgroups.sweep(), vec!["gone".to_string()]);
    assert!(live.dirs[0].exists());
    assert!(!mount.path().join("hull/gone").exists());
}

#[test]
fn vm_ids_that_are_not_one_name_are_refused() {
    let mount = tempfile::tempdir().unwrap();
    let cgroups = unified(mount.path());
    for bad in ["../x", "a/b", "", ".."] {
        assert!(
            matches!(cgroups.dirs(bad), Err(CgroupError::BadName(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_host_without_controllers_is_reported() {
    let mount = tempfile::tempdir().unwrap();
    let err = Layout::detect(&FakeFs, mount.path(), "0::/\n").unwrap_err();
    assert!(err.to_string().contains("HULL_JAIL=off"), "{err}");
}

#[test]
fn a_nested_parent_hands_the_controllers_down_each_level_and_sweeps_only_its_own() {
    let mount = tempfile::tempdir().unwrap();
    let mut cgroups = unified(mount.path());
    cgroups.parent = "hull/hulld-a".into();
    let mine = cgroups.create("mine", LIMITS).unwrap();
    assert_eq!(mine.dirs, vec![mount.path().join("hull/hulld-a/mine")]);
    for level in ["", "hull", "hull/hulld-a"] {
        assert_eq!(
            read(mount.path().join(level).join("cgroup.subtree_control")),
            "+memory +pids +cpu",
            "{level}"
        );
    }
    assert_eq!(
        read(mine.dirs[0].join("memory.max")),
        (192u64 << 20).to_string()
    );
    // Another daemon's cgroup, made and not yet entered, is not this one's to sweep.
    let mut other = unified(mount.path());
    other.parent = "hull/hulld-b".into();
    other.create("theirs", LIMITS).unwrap();
    assert_eq!(cgroups.sweep(), vec!["mine".to_string()]);
    assert!(mount.path().join("hull/hulld-b/theirs").is_dir());
}

#[test]
fn a_nested_parent_on_v1_sits_below_the_daemons_own_cgroup() {
    let mount = tempfile::tempdir().unwrap();
    let mut cgroups = hybrid(mount.path());
    cgroups.parent = "hull/hulld-a".into();
    let vm = cgroups.create("vm", LIMITS).unwrap();
    assert!(vm
        .dirs
        .contains(&mount.path().join("memory/job/7/hull/hulld-a/vm")));
    assert!(vm.dirs.contains(&mount.path().join("pids/hull/hulld-a/vm")));
    assert_eq!(
        read(
            mount
                .path()
                .join("cpu,cpuacct/hull/hulld-a/vm/cpu.cfs_quota_us")
        ),
        "200000"
    );
}
