//! Layer tars from images: unpacking any layers never changes anything
//! outside the rootfs. The rootfs is a directory beside a "host" directory
//! that symlinks in the layers aim at, by relative and absolute paths; after
//! unpacking, every file outside the rootfs keeps its name, kind, mode,
//! owner, size and mtime, not only the set of names.
#![no_main]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hull_image::limits::Limits;
use hull_image::unpack::Unpacker;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tar::{EntryType, Header};

#[derive(Arbitrary, Debug)]
enum Input {
    /// Raw bytes, one layer.
    Raw(Vec<u8>),
    /// Layers of entries made from a few names that meet often.
    Layers(Vec<Vec<Entry>>),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    kind: Kind,
    name: Vec<u8>,
    target: Vec<u8>,
    mode: u16,
    uid: u8,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Fifo,
    Whiteout,
    Opaque,
}

/// Path components; `@` stands for the host directory's absolute path.
const WORDS: &[&str] = &["d", "etc", "host", "..", ".", "x", "@", ""];

fn path(indexes: &[u8], host: &Path) -> String {
    let words: Vec<String> = indexes
        .iter()
        .take(6)
        .map(|i| match WORDS[*i as usize % WORDS.len()] {
            "@" => host.display().to_string(),
            w => w.to_owned(),
        })
        .collect();
    words.join("/")
}

fn layer(entries: &[Entry], host: &Path) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries.iter().take(32) {
        let mut name = path(&e.name, host);
        let mut header = Header::new_gnu();
        header.set_mode(u32::from(e.mode) & 0o7777);
        header.set_uid(u64::from(e.uid) * 500);
        header.set_gid(u64::from(e.uid) * 500);
        header.set_mtime(1_000_000);
        header.set_size(0);
        let kind = match e.kind {
            Kind::File => EntryType::Regular,
            Kind::Dir => EntryType::Directory,
            Kind::Symlink => EntryType::Symlink,
            Kind::Hardlink => EntryType::Link,
            Kind::Fifo => EntryType::Fifo,
            Kind::Whiteout | Kind::Opaque => {
                let marker = match e.kind {
                    Kind::Opaque => ".wh..wh..opq".to_owned(),
                    _ => format!(".wh.{}", path(&e.target[..e.target.len().min(1)], host)),
                };
                name = format!("{name}/{marker}");
                EntryType::Regular
            }
        };
        header.set_entry_type(kind);
        let appended = match kind {
            EntryType::Symlink | EntryType::Link => {
                builder.append_link(&mut header, &name, path(&e.target, host))
            }
            _ => builder.append_data(&mut header, &name, &[][..]),
        };
        // Names the tar crate refuses to write (empty ones) are left out.
        let _ = appended;
    }
    builder.into_inner().expect("in-memory tar")
}

/// What must not change outside the rootfs: every file's kind, mode, owner, size and mtime.
fn snapshot(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u32, u32, u32, u64, i64)>) {
    let m = std::fs::symlink_metadata(dir).expect("stat");
    out.insert(dir.to_owned(), (m.mode(), m.uid(), m.gid(), m.len(), m.mtime()));
    if !m.is_dir() {
        return;
    }
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path != skip {
            snapshot(&path, skip, out);
        }
    }
}

fuzz_target!(|input: Input| {
    let dir = tempfile::tempdir().expect("temp dir");
    let host = dir.path().join("host");
    std::fs::create_dir_all(host.join("etc")).expect("host dir");
    std::fs::create_dir_all(host.join("d/etc")).expect("host dir");
    std::fs::write(host.join("x"), "host").expect("host file");
    std::fs::set_permissions(host.join("etc"), std::fs::Permissions::from_mode(0o750))
        .expect("chmod");
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).expect("rootfs dir");
    let mut before = BTreeMap::new();
    snapshot(dir.path(), &root, &mut before);

    let layers = match &input {
        Input::Raw(bytes) => vec![bytes.clone()],
        Input::Layers(layers) => layers.iter().take(4).map(|l| layer(l, &host)).collect(),
    };
    let limits = Limits {
        max_unpacked_bytes: 16 << 20,
        ..Limits::default()
    };
    let mut unpacker = Unpacker::new(&root, limits).expect("unpacker");
    let applied = layers.iter().try_for_each(|l| unpacker.apply_layer(&l[..]));
    if applied.is_ok() {
        let _ = unpacker.finish();
    }

    let mut after = BTreeMap::new();
    snapshot(dir.path(), &root, &mut after);
    assert_eq!(before, after, "unpacking changed files outside the rootfs");
});
