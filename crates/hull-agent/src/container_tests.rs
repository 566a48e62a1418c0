//! Tests of preparing a container's root filesystem.

use super::*;

#[test]
fn ids_that_are_not_plain_names_are_refused() {
    for bad in ["", ".", "..", "a/b", "/x", "a\0b"] {
        assert!(validate_id(bad).is_err(), "{bad:?}");
    }
    validate_id("c1-abc_def.2").unwrap();
}

#[test]
fn a_share_subdirectory_is_plain_directories_all_the_way() {
    let share = tempfile::tempdir().unwrap();
    fs::create_dir_all(share.path().join("c1/0")).unwrap();
    std::os::unix::fs::symlink("/etc", share.path().join("c1/link")).unwrap();
    let found = host_subdir(share.path(), "c1/0").unwrap();
    assert_eq!(found, share.path().join("c1/0"));
    for bad in ["c1/link", "c1/../c1/0", "/c1/0", "c1//0", "c1/missing"] {
        assert!(host_subdir(share.path(), bad).is_err(), "{bad:?}");
    }
}

fn spec(writable: Option<RootfsSpec>) -> ContainerSpec {
    ContainerSpec {
        id: "c1".into(),
        hostname: "c1".into(),
        rootfs: RootfsSpec {
            serial: "hull-rootfs".into(),
            fs_type: "erofs".into(),
        },
        writable,
        mounts: Vec::new(),
        host_etc_files: Vec::new(),
    }
}

#[test]
fn without_a_writable_disk_the_upper_layer_is_a_tmpfs() {
    let dir = Path::new("/run/c1");
    let disk = Image::Disk("/dev/sda".into());
    let [image, rw, overlay] = layer_mounts(&spec(None), dir, &disk, None);
    assert_eq!(
        (image.source.as_str(), image.fstype.as_str()),
        ("/dev/sda", "erofs")
    );
    assert_eq!(image.flags, libc::MS_RDONLY);
    assert_eq!((rw.source.as_str(), rw.fstype.as_str()), ("tmpfs", "tmpfs"));
    assert_eq!(
        overlay.data.as_deref(),
        Some("lowerdir=/run/c1/image,upperdir=/run/c1/rw/upper,workdir=/run/c1/rw/work")
    );
    assert_eq!(overlay.target, dir.join("rootfs"));
}

#[test]
fn a_primed_image_is_bound_not_mounted_again() {
    let dir = Path::new("/run/c1");
    let primed = Image::Mounted("/run/hull/primed/hull-rootfs".into());
    let [image, _, overlay] = layer_mounts(&spec(None), dir, &primed, None);
    assert_eq!(
        (image.source.as_str(), image.fstype.as_str(), image.flags),
        ("/run/hull/primed/hull-rootfs", "bind", libc::MS_BIND)
    );
    assert_eq!(image.target, dir.join("image"));
    assert!(overlay.data.unwrap().starts_with("lowerdir=/run/c1/image,"));
}

#[test]
fn a_writable_disk_holds_the_upper_and_work_dirs() {
    let writable = RootfsSpec {
        serial: "hull-rw".into(),
        fs_type: "ext4".into(),
    };
    let dir = Path::new("/run/c1");
    let disk = Image::Disk("/dev/sda".into());
    let [_, rw, overlay] = layer_mounts(
        &spec(Some(writable)),
        dir,
        &disk,
        Some(Path::new("/dev/sdb")),
    );
    assert_eq!(
        (rw.source.as_str(), rw.fstype.as_str()),
        ("/dev/sdb", "ext4")
    );
    assert_eq!(
        (rw.target.as_path(), rw.data),
        (dir.join("rw").as_path(), None)
    );
    let options = overlay.data.unwrap();
    assert!(options.contains("upperdir=/run/c1/rw/upper,workdir=/run/c1/rw/work"));
}

#[test]
fn etc_files_replace_symlinks_instead_of_following_them() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(&victim, root.path().join("etc/hosts")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.path().join("etc/resolv.conf")).unwrap();
    write_etc(root.path(), "box", &NetworkSpec::default(), &[]).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    let etc = root.path().join("etc");
    assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "box\n");
    assert_eq!(
        fs::read_to_string(etc.join("hosts")).unwrap(),
        hosts_file("box", &NetworkSpec::default())
    );
    assert_eq!(fs::read_to_string(etc.join("resolv.conf")).unwrap(), "");
}

#[test]
fn an_existing_resolv_conf_is_kept() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
    write_etc(root.path(), "box", &NetworkSpec::default(), &[]).unwrap();
    let kept = fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap();
    assert_eq!(kept, "nameserver 1.1.1.1\n");
}

#[test]
fn files_the_host_put_in_etc_are_kept() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/hosts"), "10.88.0.7\tweb\n").unwrap();
    write_etc(
        root.path(),
        "box",
        &NetworkSpec::default(),
        &["hosts".into()],
    )
    .unwrap();
    let etc = root.path().join("etc");
    assert_eq!(
        fs::read_to_string(etc.join("hosts")).unwrap(),
        "10.88.0.7\tweb\n"
    );
    assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "box\n");
}

#[test]
fn an_image_without_etc_gets_no_files() {
    let root = tempfile::tempdir().unwrap();
    write_etc(root.path(), "box", &NetworkSpec::default(), &[]).unwrap();
    assert!(!root.path().join("etc").exists());
}

#[test]
fn mount_targets_are_made_inside_the_rootfs_even_through_symlinks() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let climb = "../".repeat(20);
    std::os::unix::fs::symlink(&climb, root.path().join("up")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("dangling")).unwrap();
    fs::create_dir(root.path().join("data")).unwrap();
    std::os::unix::fs::symlink("/data", root.path().join("link")).unwrap();
    // `..` stops at the rootfs: the directories land inside it.
    mount_point_in_root(root.path(), "/up/x/y").unwrap();
    assert!(root.path().join("x/y").is_dir());
    mount_point_in_root(root.path(), "/link/sub").unwrap();
    assert!(root.path().join("data/sub").is_dir());
    // An absolute symlink is the rootfs's path, which is missing here.
    assert!(mount_point_in_root(root.path(), "/dangling/z").is_err());
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    for bad in ["relative", "/", "/a/../b", ""] {
        assert!(
            matches!(
                mount_point_in_root(root.path(), bad),
                Err(ContainerError::InvalidTarget(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn mount_points_are_created_but_symlinks_refused() {
    let root = tempfile::tempdir().unwrap();
    assert!(mount_point(root.path(), "proc").unwrap().is_dir());
    std::os::unix::fs::symlink("/", root.path().join("sys")).unwrap();
    assert!(matches!(
        mount_point(root.path(), "sys"),
        Err(ContainerError::NotADirectory(_))
    ));
}
