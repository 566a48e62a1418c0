use super::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

/// (name, type, contents or link target) of every entry.
fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            let mut body = String::new();
            if let Some(link) = entry.link_name().unwrap() {
                body = link.to_string_lossy().into_owned();
            } else {
                io::Read::read_to_string(&mut entry, &mut body).unwrap();
            }
            (name, kind, body)
        })
        .collect()
}

fn pack(dir: &Path, view: FilesystemView, opaque: &[&str]) -> Vec<u8> {
    let root = File::open(dir).unwrap();
    let is_opaque = |fd: &File| {
        let path = fs::read_link(fsat::fd_path(fd)).unwrap();
        opaque.iter().any(|o| path == dir.join(o))
    };
    let walk = Walk {
        view,
        is_opaque: &is_opaque,
    };
    let mut out = Vec::new();
    walk.pack(&root, &mut out).unwrap();
    out
}

/// A tree with /etc/hostname (the agent's), /etc/passwd, /bin/sh ->
/// busybox, and /data/a.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("data")).unwrap();
    fs::write(root.join("etc/hostname"), "box\n").unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::set_permissions(root.join("etc/passwd"), fs::Permissions::from_mode(0o4644)).unwrap();
    symlink("busybox", root.join("bin/sh")).unwrap();
    fs::write(root.join("data/a"), "a").unwrap();
    dir
}

#[test]
fn the_whole_filesystem_is_named_from_the_root_without_the_root_itself() {
    let dir = tree();
    let tar = pack(dir.path(), FilesystemView::Whole, &[]);
    let names: Vec<(String, String)> = entries(&tar)
        .into_iter()
        .map(|(name, _, body)| (name, body))
        .collect();
    let expected = [
        ("bin/", ""),
        ("bin/sh", "busybox"),
        ("data/", ""),
        ("data/a", "a"),
        ("etc/", ""),
        ("etc/hostname", "box\n"),
        ("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_string()))
        .collect();
    assert_eq!(names, expected);
    let mut archive = tar::Archive::new(tar.as_slice());
    let passwd = archive.entries().unwrap().nth(6).unwrap().unwrap();
    assert_eq!(passwd.header().mode().unwrap(), 0o4644);
}

#[test]
fn changes_turn_overlay_whiteouts_into_oci_ones_and_leave_the_agents_files_out() {
    let dir = tree();
    let root = dir.path();
    let whiteout = root.join("etc/shadow");
    let can_mknod = sys::mknod_char(&whiteout, 0, 0).is_ok();
    if !can_mknod {
        eprintln!("no CAP_MKNOD: the whiteout device is left out of this test");
    }
    let tar = pack(root, FilesystemView::Changes, &["data"]);
    let names: Vec<String> = entries(&tar).into_iter().map(|(n, _, _)| n).collect();
    let mut expected = vec![
        "bin/",
        "bin/sh",
        "data/",
        "data/.wh..wh..opq",
        "data/a",
        "etc/",
        "etc/passwd",
    ];
    if can_mknod {
        expected.push("etc/.wh.shadow");
    }
    assert_eq!(names, expected);
    let kinds: Vec<tar::EntryType> = entries(&tar).into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(kinds[3], tar::EntryType::Regular);
}

#[test]
fn device_nodes_other_than_whiteouts_are_left_out_of_a_layer_but_exported() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    if sys::mknod_char(&null, 0o666, libc::makedev(1, 3)).is_err() {
        eprintln!("skipped: no CAP_MKNOD");
        return;
    }
    assert!(entries(&pack(dir.path(), FilesystemView::Changes, &[])).is_empty());
    let whole = entries(&pack(dir.path(), FilesystemView::Whole, &[]));
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].1, tar::EntryType::Char);
}

#[test]
fn a_tree_deeper_than_a_layer_may_go_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_owned();
    for _ in 0..=MAX_DEPTH + 1 {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    let root = File::open(dir.path()).unwrap();
    let walk = Walk {
        view: FilesystemView::Whole,
        is_opaque: &|_| false,
    };
    let err = walk.pack(&root, io::sink()).unwrap_err();
    assert!(matches!(err, ExportError::TooDeep { .. }), "{err}");
}

#[test]
fn a_directory_copied_up_for_the_agents_files_alone_is_no_change() {
    let dir = tree();
    let root = dir.path();
    fs::remove_file(root.join("etc/passwd")).unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let tar = pack(root, FilesystemView::Changes, &[]);
    let names: Vec<String> = entries(&tar).into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(names, ["bin/", "bin/sh", "data/", "data/a"]);
    // The whole view keeps it.
    let tar = pack(root, FilesystemView::Whole, &[]);
    assert!(entries(&tar).iter().any(|(n, _, _)| n == "etc/"));
}
