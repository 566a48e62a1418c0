use super::*;
use crate::layer::tests::gzip;

/// One raw entry: its name and link bytes go into the header as they are,
/// as a hostile client would write them.
struct Raw<'a> {
    name: &'a str,
    kind: EntryType,
    link: &'a str,
    data: &'a [u8],
}

fn entry<'a>(name: &'a str, kind: EntryType, link: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind,
        link,
        data: b"",
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: EntryType::Regular,
        link: "",
        data,
    }
}

fn tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        header.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(0o644);
        header.set_size(e.data.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn checked(entries: &[Raw<'_>]) -> Result<CheckedLayer, CheckError> {
    check(&tar(entries)[..], &Limits::default())
}

#[test]
fn a_rootfs_tar_passes_with_its_digests_and_size() {
    let body = tar(&[
        entry("./", EntryType::Directory, ""),
        entry("./bin/", EntryType::Directory, ""),
        file("./bin/busybox", b"ELF"),
        entry("./bin/sh", EntryType::Symlink, "busybox"),
        entry("bin/ash", EntryType::Symlink, "/bin/busybox"),
        entry("bin/sh2", EntryType::Link, "bin/busybox"),
        entry("usr/lib/up", EntryType::Symlink, "../../bin"),
        entry("run/fifo", EntryType::Fifo, ""),
        file("etc/.wh.gone", b""),
    ]);
    let layer = check(&body[..], &Limits::default()).unwrap();
    assert_eq!(layer.compression, Compression::None);
    assert_eq!(layer.digest, Digest::of(&body));
    assert_eq!(layer.diff_id, Digest::of(&body));
    assert_eq!((layer.size, layer.unpacked_size), (body.len() as u64, 3));
    let zipped = gzip(&body);
    let layer = check(&zipped[..], &Limits::default()).unwrap();
    assert_eq!(layer.compression, Compression::Gzip);
    assert_eq!(layer.digest, Digest::of(&zipped));
    assert_eq!(layer.diff_id, Digest::of(&body));
}

#[test]
fn paths_that_leave_the_root_are_refused() {
    let err = checked(&[file("../evil", b"x")]).unwrap_err();
    assert!(
        matches!(err, CheckError::Parent(ref e) if e == "../evil"),
        "{err}"
    );
    let err = checked(&[file("a/../../evil", b"x")]).unwrap_err();
    assert!(matches!(err, CheckError::Parent(_)), "{err}");
    let err = checked(&[file("/etc/passwd", b"x")]).unwrap_err();
    assert!(matches!(err, CheckError::Absolute(_)), "{err}");
    let err = checked(&[file("", b"x")]).unwrap_err();
    assert!(matches!(err, CheckError::NoName(_)), "{err}");
}

#[test]
fn symlinks_that_lead_out_or_are_walked_through_are_refused() {
    let err = checked(&[entry("evil", EntryType::Symlink, "../../etc")]).unwrap_err();
    assert!(matches!(err, CheckError::LinkOut { .. }), "{err}");
    let err = checked(&[entry("a/b", EntryType::Symlink, "../../x")]).unwrap_err();
    assert!(matches!(err, CheckError::LinkOut { .. }), "{err}");
    let err = checked(&[
        entry("etc", EntryType::Symlink, "/etc"),
        file("etc/passwd", b"root::0:0::/:/bin/sh\n"),
    ])
    .unwrap_err();
    assert!(
        matches!(err, CheckError::BeneathLink { ref link, .. } if link == "etc"),
        "{err}"
    );
    let err = checked(&[
        entry("d/l", EntryType::Symlink, "."),
        entry("./d/l/x/", EntryType::Directory, ""),
    ])
    .unwrap_err();
    assert!(matches!(err, CheckError::BeneathLink { .. }), "{err}");
}

#[test]
fn hard_links_name_only_earlier_files_of_the_archive() {
    for target in ["/etc/shadow", "../x", "missing", "dir", "s/f"] {
        let err = checked(&[
            entry("dir/", EntryType::Directory, ""),
            entry("s", EntryType::Symlink, "dir"),
            entry("h", EntryType::Link, target),
        ])
        .unwrap_err();
        assert!(
            matches!(err, CheckError::HardLink { .. }),
            "{target}: {err}"
        );
    }
}

#[test]
fn device_nodes_and_odd_kinds_are_refused() {
    for kind in [EntryType::Char, EntryType::Block] {
        let err = checked(&[entry("dev/sda", kind, "")]).unwrap_err();
        assert!(matches!(err, CheckError::Device(_)), "{err}");
    }
    let err = checked(&[entry("x", EntryType::new(b'V'), "")]).unwrap_err();
    assert!(matches!(err, CheckError::Kind(..)), "{err}");
}

#[test]
fn truncated_empty_and_foreign_bodies_are_refused() {
    let body = tar(&[file("a", &[7u8; 3000])]);
    for cut in [100, 700, 2000] {
        let err = check(&body[..cut], &Limits::default()).unwrap_err();
        assert!(matches!(err, CheckError::Read(_)), "{cut}: {err}");
    }
    let err = check(&b""[..], &Limits::default()).unwrap_err();
    assert!(matches!(err, CheckError::Empty), "{err}");
    for foreign in [&b"not a tar at all"[..], &[0x42u8; 4096][..]] {
        let err = check(foreign, &Limits::default()).unwrap_err();
        assert!(matches!(err, CheckError::Read(_)), "{err}");
    }
    let zipped = gzip(&body);
    let err = check(&zipped[..zipped.len() / 2], &Limits::default()).unwrap_err();
    assert!(matches!(err, CheckError::Read(_)), "{err}");
}

#[test]
fn a_size_field_past_the_limit_and_a_huge_header_are_refused_unread() {
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        max_header_bytes: 64 << 10,
        ..Limits::default()
    };
    let mut claims = tar(&[file("big", b"")]);
    // An octal size of 8 GiB in a header whose data never comes.
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..3].copy_from_slice(b"big");
    header.set_size(8 << 30);
    header.set_cksum();
    claims[..512].copy_from_slice(header.as_bytes());
    let err = check(&claims[..], &limits).unwrap_err();
    assert!(
        matches!(err, CheckError::Limit(LimitError::Unpacked { .. })),
        "{err}"
    );
    let bomb = crate::unpack::hostile_tests::long_name_bomb(4 << 20);
    let err = check(&bomb[..], &limits).unwrap_err();
    assert!(
        matches!(err, CheckError::Limit(LimitError::Header { .. })),
        "{err}"
    );
}

#[test]
fn a_gzip_bomb_stops_at_the_limit() {
    let limits = Limits {
        max_unpacked_bytes: 4 << 20,
        ..Limits::default()
    };
    // A file of 64 MiB of zeros: about 64 KiB compressed.
    let mut body = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_size(64 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    let mut builder = tar::Builder::new(&mut body);
    builder
        .append_data(&mut header, "zeros", io::repeat(0).take(64 << 20))
        .unwrap();
    builder.finish().unwrap();
    drop(builder);
    let bomb = gzip(&body);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let err = check(&bomb[..], &limits).unwrap_err();
    assert!(
        matches!(err, CheckError::Limit(LimitError::Unpacked { .. })),
        "{err}"
    );
    // Zeros alone end the tar at once; what follows is bounded too.
    let zeros = gzip(&vec![0u8; 16 << 20]);
    let err = check(&zeros[..], &limits).unwrap_err();
    assert!(
        matches!(err, CheckError::Limit(LimitError::Trailer)),
        "{err}"
    );
}

proptest::proptest! {
    #[test]
    fn any_bytes_are_taken_or_refused_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
        let _ = check(&bytes[..], &Limits::default());
    }
}
