//! Image archives uploaded by users: any bytes end in images or an error.
#![no_main]

use hull_image::limits::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let limits = Limits {
        max_unpacked_bytes: 16 << 20,
        ..Limits::default()
    };
    let _ = hull_image::archive::import(data, dir.path(), &limits, &mut |_| {});
});
