//! The Dockerfile instructions of `commit --change` and `import --change`,
//! as any client sends them: applied or refused, never a panic.
#![no_main]

use hull_image::changes::apply;
use hull_image::ImageConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|changes: Vec<String>| {
    let mut config = ImageConfig::default();
    let _ = apply(&mut config, &changes);
});
