//! `WWW-Authenticate` headers from registries parse or are ignored, never panic.
#![no_main]

use hull_image::registry::auth::Challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Some(Challenge::Bearer { realm, .. }) = Challenge::parse(data) {
        assert!(data.len() >= realm.len(), "a realm longer than its header");
    }
});
