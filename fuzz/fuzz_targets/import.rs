//! Archives a client imports or a guest sends as a commit's layer: the
//! check reads any bytes without a panic, and a tar it accepts unpacks
//! without changing anything outside the rootfs.
#![no_main]

use hull_image::layer::check::check;
use hull_image::limits::Limits;
use hull_image::unpack::Unpacker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_unpacked_bytes: 16 << 20,
        ..Limits::default()
    };
    if check(data, &limits).is_err() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).expect("rootfs dir");
    std::fs::write(dir.path().join("host"), "host").expect("host file");
    let mut unpacker = Unpacker::new(&root, limits).expect("unpacker");
    if unpacker.apply_layer(data).is_ok() {
        let _ = unpacker.finish();
    }
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "an accepted layer wrote beside the rootfs: {names:?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("host")).expect("host"), "host");
});
