//! Layers built to attack the host, and layers past the limits: each is
//! refused or made harmless, and nothing outside the rootfs changes.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::tests::{dir, file, layer, link, Scratch, E};
use super::UnpackError;
use crate::limits::{LimitError, MAX_DEPTH, MAX_NAME};

/// Mode, owner and mtime of a file outside the rootfs, which no layer may change.
fn host_meta(path: &Path) -> (u32, u32, u32, i64) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.mode(), m.uid(), m.gid(), m.mtime())
}

/// A host directory beside the rootfs with a child `etc`, the target of the swapped-directory attack.
fn victim(s: &Scratch) -> PathBuf {
    let victim = s.tmp.path().join("victim");
    fs::create_dir_all(victim.join("etc")).unwrap();
    fs::set_permissions(victim.join("etc"), fs::Permissions::from_mode(0o750)).unwrap();
    filetime::set_file_mtime(
        victim.join("etc"),
        filetime::FileTime::from_unix_time(42, 0),
    )
    .unwrap();
    victim
}

fn swapped_directory(target: &str) -> Vec<u8> {
    let mut etc = dir("d/etc");
    etc.mode = 0o777;
    etc.uid = 1000;
    layer(&[dir("d"), etc, link(EntryType::Symlink, "d", target)])
}

#[test]
fn a_directory_swapped_for_a_symlink_keeps_its_metadata_off_the_host() {
    for target in ["../victim", "../../victim", "VICTIM"] {
        let s = Scratch::new();
        let victim = victim(&s);
        let target = target.replace("VICTIM", &victim.display().to_string());
        let before = host_meta(&victim.join("etc"));
        s.unpack(&[swapped_directory(&target)]).unwrap();
        assert_eq!(host_meta(&victim.join("etc")), before, "through {target}");
        assert!(fs::symlink_metadata(s.root().join("d"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

#[test]
fn a_directory_swapped_in_a_later_layer_keeps_its_metadata_off_the_host() {
    let s = Scratch::new();
    let victim = victim(&s);
    let before = host_meta(&victim.join("etc"));
    let mut etc = dir("d/etc");
    etc.mode = 0o777;
    etc.uid = 1000;
    s.unpack(&[
        layer(&[dir("d"), etc]),
        layer(&[link(EntryType::Symlink, "d", victim.to_str().unwrap())]),
    ])
    .unwrap();
    assert_eq!(host_meta(&victim.join("etc")), before);
}

#[test]
fn a_directory_swapped_for_another_inside_the_root_gets_its_own_metadata() {
    let s = Scratch::new();
    let mut etc = dir("d/etc");
    etc.mode = 0o777;
    let mut other = dir("x/etc");
    other.mode = 0o700;
    s.unpack(&[layer(&[
        dir("d"),
        etc,
        dir("x"),
        other,
        link(EntryType::Symlink, "d", "x"),
    ])])
    .unwrap();
    let mode = fs::metadata(s.root().join("x/etc")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_directory_replaced_by_a_new_one_gets_the_new_metadata_only() {
    let s = Scratch::new();
    let mut first = dir("d");
    first.mode = 0o777;
    let mut second = dir("d");
    second.mode = 0o701;
    s.unpack(&[
        layer(&[first, file("d/f", b"x")]),
        layer(&[file(".wh.d", b""), second]),
    ])
    .unwrap();
    assert_eq!(
        fs::metadata(s.root().join("d")).unwrap().mode() & 0o7777,
        0o701
    );
    assert!(!s.exists("d/f"));
}

#[test]
fn whiteouts_hardlinks_and_nodes_through_symlinks_stay_inside() {
    let s = Scratch::new();
    let victim = victim(&s);
    fs::write(victim.join("secret"), "host").unwrap();
    let before = host_meta(&victim.join("etc"));
    let host = victim.to_str().unwrap();
    s.unpack(&[
        layer(&[
            link(EntryType::Symlink, "v", host),
            link(EntryType::Symlink, "r", "../victim"),
        ]),
        layer(&[
            file("v/.wh.etc", b""),
            file("r/.wh.secret", b""),
            file("v/.wh..wh..opq", b""),
            E {
                kind: EntryType::Fifo,
                ..file("v/etc", b"")
            },
            link(EntryType::Link, "copy", "v/secret"),
        ]),
    ])
    .unwrap_or_else(|e| assert!(matches!(e, UnpackError::LinkTarget { .. }), "{e}"));
    assert_eq!(host_meta(&victim.join("etc")), before);
    assert_eq!(fs::read_to_string(victim.join("secret")).unwrap(), "host");
    assert_eq!(s.outside(), vec!["victim".to_owned()]);
}

/// A tar whose first entry's GNU long name claims `claimed` bytes and has them.
pub(crate) fn long_name_bomb(claimed: usize) -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(EntryType::GNULongName);
    header.set_size(claimed as u64);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    // A name of short components, so that the small bombs unpack.
    tar.extend(b"abcdefgh/".iter().cycle().take(claimed - 1));
    tar.push(b'z');
    tar.resize(512 + claimed.div_ceil(512) * 512, 0);
    tar.extend(layer(&[file("x", b"")]));
    tar
}

#[test]
fn a_long_name_past_the_header_limit_is_refused_before_it_is_read() {
    let mut s = Scratch::new();
    s.limits.max_header_bytes = 64 << 10;
    let err = s.unpack(&[long_name_bomb(8 << 20)]).unwrap_err();
    assert!(
        matches!(err, UnpackError::Limit(LimitError::Header { limit }) if limit == 64 << 10),
        "{err}"
    );
    // Names up to the limit are fine.
    s.unpack(&[long_name_bomb(1000)]).unwrap();
}

#[test]
fn a_pax_header_past_the_limit_is_refused() {
    let mut s = Scratch::new();
    s.limits.max_header_bytes = 64 << 10;
    let mut builder = tar::Builder::new(Vec::new());
    let value = "v".repeat(100 << 10);
    builder
        .append_pax_extensions([("SCHILY.xattr.user.big", value.as_bytes())])
        .unwrap();
    builder.append(&file_header(1), &b"x"[..]).unwrap();
    let err = s.unpack(&[builder.into_inner().unwrap()]).unwrap_err();
    assert!(
        matches!(err, UnpackError::Limit(LimitError::Header { .. })),
        "{err}"
    );
}

fn file_header(size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_path("f").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

#[test]
fn layers_past_the_entry_limit_are_refused() {
    let mut s = Scratch::new();
    s.limits.max_entries = 10;
    let names: Vec<String> = (0..11).map(|i| format!("f{i}")).collect();
    let entries: Vec<E<'_>> = names.iter().map(|n| file(n, b"")).collect();
    let err = s.unpack(&[layer(&entries)]).unwrap_err();
    assert!(
        matches!(err, UnpackError::Limit(LimitError::Entries { limit: 10 })),
        "{err}"
    );
    s.unpack(&[layer(&entries[..10])]).unwrap();
}

#[test]
fn files_past_the_unpacked_limit_are_refused_across_layers() {
    let mut s = Scratch::new();
    s.limits.max_unpacked_bytes = 1000;
    let data = [7u8; 600];
    let err = s
        .unpack(&[layer(&[file("a", &data)]), layer(&[file("b", &data)])])
        .unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Limit(LimitError::Unpacked { limit: 1000 })
        ),
        "{err}"
    );
    assert!(!s.exists("b"));
}

#[test]
fn names_longer_than_path_max_and_trees_too_deep_are_refused() {
    let s = Scratch::new();
    let mut builder = tar::Builder::new(Vec::new());
    let long = "n/".repeat(MAX_NAME / 2 + 1);
    builder
        .append_data(&mut file_header(0), format!("{long}f"), &[][..])
        .unwrap();
    let err = s.unpack(&[builder.into_inner().unwrap()]).unwrap_err();
    assert!(
        matches!(err, UnpackError::Limit(LimitError::Name { .. })),
        "{err}"
    );

    // Deeper than the limit through a symlink, with names within it.
    let half = vec!["d"; MAX_DEPTH / 2 + 1].join("/");
    let mut builder = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    builder.append_data(&mut h, &half, &[][..]).unwrap();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    builder.append_link(&mut h, "l", &half).unwrap();
    builder
        .append_data(&mut file_header(0), format!("l/{half}/x"), &[][..])
        .unwrap();
    let err = s.unpack(&[builder.into_inner().unwrap()]).unwrap_err();
    assert!(
        matches!(err, UnpackError::Limit(LimitError::Depth { .. })),
        "{err:?}"
    );
}
