//! Image references typed by users parse or fail cleanly, and a parsed one
//! prints back to a string that parses to itself.
#![no_main]

use hull_image::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Ok(reference) = Reference::parse(data) {
        let printed = reference.to_string();
        let again = Reference::parse(&printed).expect("a printed reference parses");
        assert_eq!(again.to_string(), printed);
    }
});
