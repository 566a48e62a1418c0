//! Any JSON a host or guest sends decodes to a message or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<hull_proto::Request>(data);
    let _ = serde_json::from_slice::<hull_proto::Response>(data);
    let _ = serde_json::from_slice::<hull_proto::Event>(data);
    let _ = serde_json::from_slice::<hull_proto::Hello>(data);
});
