use super::*;
use std::fs;
use std::os::unix::fs::MetadataExt;

/// One tar entry; names are written raw so tests can use `..` and absolute paths.
pub(super) struct E<'a> {
    pub(super) kind: EntryType,
    pub(super) name: &'a str,
    pub(super) link: &'a str,
    pub(super) data: &'a [u8],
    pub(super) mode: u32,
    pub(super) uid: u64,
}

pub(super) fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E {
        kind: EntryType::Regular,
        name,
        link: "",
        data,
        mode: 0o644,
        uid: 0,
    }
}

pub(super) fn dir(name: &str) -> E<'_> {
    E {
        kind: EntryType::Directory,
        name,
        link: "",
        data: b"",
        mode: 0o755,
        uid: 0,
    }
}

pub(super) fn link<'a>(kind: EntryType, name: &'a str, target: &'a str) -> E<'a> {
    E {
        kind,
        name,
        link: target,
        data: b"",
        mode: 0o777,
        uid: 0,
    }
}

pub(super) fn layer(entries: &[E<'_>]) -> Vec<u8> {
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
pub(super) struct Scratch {
    pub(super) tmp: tempfile::TempDir,
    pub(super) limits: Limits,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        Scratch {
            tmp,
            limits: Limits::default(),
        }
    }

    pub(super) fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    pub(super) fn unpack(&self, layers: &[Vec<u8>]) -> Result<(), UnpackError> {
        let mut u = Unpacker::new(&self.root(), self.limits).unwrap();
        for l in layers {
            u.apply_layer(&l[..])?;
        }
        u.finish()
    }

    pub(super) fn read(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.root().join(rel)).ok()
    }

    pub(super) fn exists(&self, rel: &str) -> bool {
        fs::symlink_metadata(self.root().join(rel)).is_ok()
    }

    /// Every name outside the rootfs, to check nothing escaped.
    pub(super) fn outside(&self) -> Vec<String> {
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
