//! Image archives uploaded by users: any bytes end in images or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    let _ = hull_image::archive::import(data, dir.path(), &mut |_| {});
});
