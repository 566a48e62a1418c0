//! Layer blobs, gzip, zstd or plain: inspecting any bytes ends in an answer
//! or an error within the limits, and never holds more than a few MiB
//! (`scripts/fuzz.sh` runs it under libFuzzer's malloc limit).
#![no_main]

use hull_image::layer::{self, Compression};
use hull_image::limits::Limits;
use libfuzzer_sys::fuzz_target;

const GZIP: &[u8] = &[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0xff];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else {
        return;
    };
    // Mostly with a magic number in front, so that the decoders are reached.
    let prefix: &[u8] = match choice % 3 {
        0 => GZIP,
        1 => ZSTD,
        _ => &[],
    };
    let blob = [prefix, rest].concat();
    let limits = Limits {
        max_unpacked_bytes: 1 << 20,
        max_entries: 1000,
        max_header_bytes: 64 << 10,
    };
    if let Ok(info) = layer::inspect(&blob[..], &limits) {
        assert!(info.unpacked_size <= limits.max_unpacked_bytes);
        if !prefix.is_empty() {
            assert_ne!(info.compression, Compression::None);
        }
    }
});
