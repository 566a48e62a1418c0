//! Layer tars from images: unpacking any bytes never writes outside the rootfs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).expect("rootfs dir");
    let mut unpacker = hull_image::unpack::Unpacker::new(&root);
    if unpacker.apply_layer(data).is_ok() {
        let _ = unpacker.finish();
    }
    for entry in std::fs::read_dir(dir.path()).expect("temp dir lists") {
        let name = entry.expect("entry").file_name();
        assert_eq!(name, "rootfs", "unpacking wrote outside the rootfs");
    }
});
