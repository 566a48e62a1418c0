//! The busybox image built by scripts/busybox-image.sh loads into a store,
//! resolves as `busybox`, and becomes an erofs rootfs with the expected content.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hull_image::ImageStore;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-image.sh")
}

/// Runs the script into `out`; returns the image id it prints.
fn build(out: &Path, tag: Option<&str>) -> String {
    let output = Command::new(script())
        .arg(out)
        .args(tag)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/busybox-image.sh");
    assert!(output.status.success(), "busybox-image.sh failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn have(path: &str) -> bool {
    Path::new(path).exists()
}

#[test]
fn busybox_archive_loads_resolves_and_builds_a_rootfs() {
    if !have("/bin/busybox") {
        eprintln!("/bin/busybox missing (apt-get install busybox-static): skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("busybox.tar");
    let id = build(&archive, None);

    let again = tmp.path().join("again.tar");
    assert_eq!(build(&again, None), id, "the image id is stable");
    assert_eq!(fs::read(&archive).unwrap(), fs::read(&again).unwrap());

    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    let mut messages = Vec::new();
    let loaded = store
        .load(fs::File::open(&archive).unwrap(), &mut |m| {
            messages.push(m.to_owned())
        })
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].id, id);
    assert_eq!(loaded[0].repo_tags, ["docker.io/library/busybox:latest"]);
    assert!(messages.contains(&"Loaded image: busybox:latest".to_owned()));

    let image = store.resolve("busybox").unwrap();
    assert_eq!(image.id, id);
    assert_eq!(image.config.cmd, Some(vec!["sh".to_owned()]));
    assert_eq!(image.config.entrypoint, None);
    assert_eq!(
        image.config.env,
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert_eq!(image.os, "linux");
    assert!(image.created.is_some());
    assert!(image.size > 1_000_000);

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].created_unix, Some(1_704_067_200));

    if !have("/usr/bin/mkfs.erofs") {
        eprintln!("mkfs.erofs missing (apt-get install erofs-utils): skipping the rootfs");
        return;
    }
    let rootfs = store.rootfs(&image).unwrap();
    assert!(fs::metadata(&rootfs).unwrap().len() > 1_000_000);
    assert_eq!(store.rootfs(&image).unwrap(), rootfs);

    if !have("/usr/bin/fsck.erofs") {
        return;
    }
    let extracted = tmp.path().join("extracted");
    let status = Command::new("fsck.erofs")
        .arg(format!("--extract={}", extracted.display()))
        .arg(&rootfs)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read_link(extracted.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert_eq!(
        fs::read(extracted.join("bin/busybox")).unwrap(),
        fs::read("/bin/busybox").unwrap()
    );
    let passwd = fs::read_to_string(extracted.join("etc/passwd")).unwrap();
    assert!(passwd.contains("hull:x:1000:1000:hull:/home/hull:/bin/sh"));
    let mode = |p: &str| {
        fs::metadata(extracted.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("root"), 0o700);
    assert_eq!(mode("bin/busybox"), 0o755);
    let home = fs::metadata(extracted.join("home/hull")).unwrap();
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    for dir in ["proc", "sys", "dev"] {
        assert!(extracted.join(dir).is_dir(), "{dir}");
    }
}

#[test]
fn a_custom_tag_is_normalized() {
    if !have("/bin/busybox") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("bb.tar");
    build(&archive, Some("127.0.0.1:5000/tools/bb"));
    let store = ImageStore::open(&tmp.path().join("store")).unwrap();
    store
        .load(fs::File::open(&archive).unwrap(), &mut |_| {})
        .unwrap();
    let image = store.resolve("127.0.0.1:5000/tools/bb:latest").unwrap();
    assert_eq!(image.repo_tags, ["127.0.0.1:5000/tools/bb:latest"]);
    assert!(store.resolve("bb").is_err());
}
