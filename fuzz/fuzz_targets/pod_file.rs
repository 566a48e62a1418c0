//! Pod files (Kubernetes-shaped YAML) that users send parse or fail with an
//! error, whatever they hold: aliases, deep nesting, huge numbers, odd
//! names; and a pod that parses has names the checks allow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Ok(pod) = hull_runtime::pod::parse(data) {
        assert!(!pod.name.is_empty() && pod.name.len() <= 63, "{:?}", pod.name);
        assert!(!pod.hostname.is_empty() && pod.hostname.len() <= 63);
    }
});
