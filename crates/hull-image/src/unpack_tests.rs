use super::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// One tar entry; names are written raw so tests can use `..` and absolute paths.
struct E<'a> {
    kind: EntryType,
    name: &'a str,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
    uid: u64,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        kind: EntryType::Regular,
        name,
        link: "",
        data,
        mode: 0o644,
        uid: 0,
    }
}

fn dir(name: &str) -> E<'_> {
    E {
        kind: EntryType::Directory,
        name,
        link: "",
        data: b"",
        mode: 0o755,
        uid: 0,
    }
}

fn link<'a>(kind: EntryType, name: &'a str, target: &'a str) -> E<'a> {
    E {
        kind,
        name,
        link: target,
        data: b"",
        mode: 0o777,
        uid: 0,
    }
}

fn layer(entries: &[E<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = Header::new_old();
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(0);
        header.set_mtime(1_000_000);
        let old = header.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_cksum();
        builder.append(&header, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A scratch area with the rootfs at `<tmp>/root`, so escapes would land in `<tmp>`.
struct Scratch {
    tmp: tempfile::TempDir,
    limits: Limits,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        Scratch {
            tmp,
            limits: Limits::default(),
        }
    }

    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    fn unpack(&self, layers: &[Vec<u8>]) -> Result<(), UnpackError> {
        let mut u = Unpacker::new(&self.root(), self.limits).unwrap();
        for l in layers {
            u.apply_layer(&l[..])?;
        }
        u.finish()
    }

    fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.root().join(rel)).ok()
    }

    fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.root().join(rel)).is_ok()
    }

    /// Every name outside the rootfs, to check nothing escaped.
    fn outside(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "root")
            .collect();
        names.sort();
        names
    }
}

#[test]
fn files_directories_and_symlinks_keep_modes_and_mtimes() {
    let s = Scratch::new();
    let mut exe = file("bin/tool", b"#!");
    exe.mode = 0o4755;
    let mut ro = dir("ro");
    ro.mode = 0o555;
    s.unpack(&[layer(&[
        dir("bin"),
        exe,
        ro,
        file("ro/inside", b"x"),
        link(EntryType::Symlink, "bin/sh", "tool"),
    ])])
    .unwrap();
    let m = fs::metadata(s.root().join("bin/tool")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(m.mtime(), 1_000_000);
    assert_eq!(
        fs::metadata(s.root().join("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(
        fs::metadata(s.root().join("ro")).unwrap().mtime(),
        1_000_000
    );
    assert_eq!(s.read("ro/inside").as_deref(), Some("x"));
    assert_eq!(
        fs::read_link(s.root().join("bin/sh")).unwrap(),
        PathBuf::from("tool")
    );
    assert_eq!(fs::metadata(s.root()).unwrap().mode() & 0o7777, 0o755);
}

#[test]
fn missing_parent_directories_are_created() {
    let s = Scratch::new();
    s.unpack(&[layer(&[file("a/b/c", b"deep")])]).unwrap();
    assert_eq!(s.read("a/b/c").as_deref(), Some("deep"));
}

#[test]
fn whiteouts_delete_lower_files_and_do_not_appear() {
    let s = Scratch::new();
    s.unpack(&[
        layer(&[file("etc/a", b"1"), file("etc/b", b"2"), file("d/x", b"3")]),
        layer(&[
            E {
                kind: EntryType::Regular,
                ..file("etc/.wh.a", b"")
            },
            file("./.wh.d", b""),
            file(".wh.never-existed", b""),
        ]),
    ])
    .unwrap();
    assert!(!s.exists("etc/a"));
    assert!(!s.exists("etc/.wh.a"));
    assert!(!s.exists("d"));
    assert!(!s.exists(".wh.d"));
    assert_eq!(s.read("etc/b").as_deref(), Some("2"));
}

#[test]
fn opaque_directories_hide_lower_content_but_keep_their_own() {
    let s = Scratch::new();
    s.unpack(&[
        layer(&[
            file("d/old", b"1"),
            file("d/sub/old", b"2"),
            file("keep", b"k"),
        ]),
        layer(&[
            dir("d"),
            file("d/before", b"b"),
            file("d/.wh..wh..opq", b""),
            file("d/after", b"a"),
            file("d/sub/new", b"n"),
        ]),
    ])
    .unwrap();
    assert!(!s.exists("d/old"));
    assert!(!s.exists("d/sub/old"));
    assert!(!s.exists("d/.wh..wh..opq"));
    assert_eq!(s.read("d/before").as_deref(), Some("b"));
    assert_eq!(s.read("d/after").as_deref(), Some("a"));
    assert_eq!(s.read("d/sub/new").as_deref(), Some("n"));
    assert_eq!(s.read("keep").as_deref(), Some("k"));
}

#[test]
fn dot_dot_escaping_the_root_is_an_error() {
    let s = Scratch::new();
    let err = s.unpack(&[layer(&[file("../x", b"evil")])]).unwrap_err();
    assert_eq!(err.to_string(), "entry '../x' escapes the rootfs");
    let err = s
        .unpack(&[layer(&[file("a/../../x", b"evil")])])
        .unwrap_err();
    assert!(matches!(err, UnpackError::Escape { .. }));
    assert!(s.outside().is_empty());
}

#[test]
fn absolute_names_land_inside_the_root() {
    let s = Scratch::new();
    s.unpack(&[layer(&[file("/etc/passwd", b"root")])]).unwrap();
    assert_eq!(s.read("etc/passwd").as_deref(), Some("root"));
}

#[test]
fn a_symlink_to_slash_from_a_lower_layer_is_resolved_within_the_root() {
    let s = Scratch::new();
    s.unpack(&[
        layer(&[link(EntryType::Symlink, "etc", "/")]),
        layer(&[file("etc/passwd", b"root")]),
    ])
    .unwrap();
    assert_eq!(s.read("passwd").as_deref(), Some("root"));
    assert!(s.outside().is_empty());
}

#[test]
fn a_relative_symlink_climbing_out_is_clamped_at_the_root() {
    let s = Scratch::new();
    s.unpack(&[layer(&[
        dir("usr"),
        link(EntryType::Symlink, "usr/lib", "../../.."),
        file("usr/lib/evil", b"x"),
    ])])
    .unwrap();
    assert_eq!(s.read("evil").as_deref(), Some("x"));
    assert!(s.outside().is_empty());
}

#[test]
fn a_file_replacing_a_symlink_does_not_write_through_it() {
    let s = Scratch::new();
    fs::write(s.tmp.path().join("victim"), "safe").unwrap();
    s.unpack(&[
        layer(&[link(EntryType::Symlink, "x", "../victim")]),
        layer(&[file("x", b"new")]),
    ])
    .unwrap();
    assert_eq!(
        fs::read_to_string(s.tmp.path().join("victim")).unwrap(),
        "safe"
    );
    assert!(!fs::symlink_metadata(s.root().join("x"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(s.read("x").as_deref(), Some("new"));
}

#[test]
fn hardlinks_share_content_and_must_stay_inside() {
    let s = Scratch::new();
    s.unpack(&[layer(&[
        file("a", b"data"),
        link(EntryType::Link, "b", "a"),
        link(EntryType::Link, "/c", "/a"),
    ])])
    .unwrap();
    let ino = |p: &str| fs::metadata(s.root().join(p)).unwrap().ino();
    assert_eq!(ino("a"), ino("b"));
    assert_eq!(ino("a"), ino("c"));

    let err = s
        .unpack(&[layer(&[link(EntryType::Link, "d", "../outside")])])
        .unwrap_err();
    assert!(matches!(err, UnpackError::LinkEscape { .. }), "{err}");
    let err = s
        .unpack(&[layer(&[link(EntryType::Link, "d", "missing")])])
        .unwrap_err();
    assert!(matches!(err, UnpackError::LinkTarget { .. }), "{err}");
}

#[test]
fn hardlinks_through_a_symlink_to_slash_stay_inside() {
    let s = Scratch::new();
    fs::write(s.tmp.path().join("secret"), "host").unwrap();
    s.unpack(&[layer(&[
        link(EntryType::Symlink, "up", "/.."),
        file("secret", b"image"),
        link(EntryType::Link, "copy", "up/secret"),
    ])])
    .unwrap();
    assert_eq!(s.read("copy").as_deref(), Some("image"));
}

#[test]
fn a_file_replaces_a_directory_and_a_directory_replaces_a_file() {
    let s = Scratch::new();
    s.unpack(&[
        layer(&[file("d/x", b"1"), file("f", b"2")]),
        layer(&[file("d", b"now a file"), dir("f"), file("f/y", b"3")]),
    ])
    .unwrap();
    assert_eq!(s.read("d").as_deref(), Some("now a file"));
    assert_eq!(s.read("f/y").as_deref(), Some("3"));
}

#[test]
fn fifos_and_device_nodes_are_created() {
    let s = Scratch::new();
    let mut null = E {
        kind: EntryType::Char,
        ..file("dev/null", b"")
    };
    null.mode = 0o666;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::Char);
    h.set_path(null.name).unwrap();
    h.set_mode(null.mode);
    h.set_size(0);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_cksum();
    tar.append(&h, &[][..]).unwrap();
    let devices = tar.into_inner().unwrap();
    s.unpack(&[
        layer(&[E {
            kind: EntryType::Fifo,
            ..file("pipe", b"")
        }]),
        devices,
    ])
    .unwrap();
    use std::os::unix::fs::FileTypeExt;
    let ft = |p: &str| fs::symlink_metadata(s.root().join(p)).unwrap().file_type();
    assert!(ft("pipe").is_fifo());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(ft("dev/null").is_char_device());
        let m = fs::metadata(s.root().join("dev/null")).unwrap();
        assert_eq!(m.rdev(), libc::makedev(1, 3));
    }
}

#[test]
fn truncated_layers_are_read_errors() {
    let s = Scratch::new();
    let tar = layer(&[file("a", &[1u8; 4000])]);
    let err = s.unpack(&[tar[..1024].to_vec()]).unwrap_err();
    assert!(
        matches!(err, UnpackError::Read(_) | UnpackError::Write { .. }),
        "{err}"
    );
}

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

fn path_strategy() -> &'static str {
    "(/|\\.\\./)?([a-c]|\\.\\.)(/([a-c]|\\.\\.)){0,3}"
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever names, link targets and kinds a layer holds, nothing lands outside the root.
    #[test]
    fn no_layer_writes_outside_the_root(
        entries in proptest::collection::vec((0u8..4, path_strategy(), path_strategy()), 1..12)
    ) {
        let s = Scratch::new();
        let layers: Vec<Vec<u8>> = entries
            .chunks(3)
            .map(|chunk| {
                let es: Vec<E<'_>> = chunk
                    .iter()
                    .map(|(kind, name, target)| match kind {
                        0 => file(name, b"x"),
                        1 => dir(name),
                        2 => link(EntryType::Symlink, name, target),
                        _ => link(EntryType::Link, name, target),
                    })
                    .collect();
                layer(&es)
            })
            .collect();
        let _ = s.unpack(&layers);
        proptest::prop_assert!(s.outside().is_empty(), "{:?}", s.outside());
    }
}
