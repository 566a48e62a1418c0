//! Whatever bytes a guest sends, the host's frame decoder never panics and
//! never allocates past the payload limit.
#![no_main]

use hull_proto::{FrameDecoder, FrameKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new();
    decoder.extend(data);
    while let Ok(Some(frame)) = decoder.next_frame() {
        if frame.kind == FrameKind::Credit {
            let _ = frame.credit_bytes();
        }
    }
    let _ = hull_proto::Frame::read_from(&mut &data[..]);
});
