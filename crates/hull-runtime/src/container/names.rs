//! Names for containers created without one: `adjective_noun`, as docker
//! makes them, from lists of Hull's own (ships and the sea).

const ADJECTIVES: &[&str] = &[
    "able", "bold", "brave", "bright", "calm", "clever", "cool", "crisp", "daring", "eager",
    "fair", "fast", "gentle", "glad", "grand", "happy", "hardy", "keen", "kind", "lively", "lucid",
    "mellow", "merry", "nimble", "noble", "plucky", "proud", "quick", "quiet", "rapid", "serene",
    "sharp", "shy", "sleek", "snug", "steady", "stout", "sturdy", "swift", "tidy", "true", "vivid",
    "wary", "warm", "wise", "witty", "young", "zesty",
];

const NOUNS: &[&str] = &[
    "anchor", "bilge", "bollard", "bow", "brig", "buoy", "cabin", "capstan", "clipper", "cutter",
    "davit", "deck", "dinghy", "dory", "frigate", "galley", "gunwale", "halyard", "harbor",
    "hatch", "helm", "jib", "keel", "ketch", "lantern", "mast", "mooring", "oar", "pennant",
    "pier", "port", "prow", "pump", "quay", "rudder", "sail", "schooner", "sextant", "skiff",
    "sloop", "spar", "stern", "tiller", "transom", "wake", "winch", "yard", "yawl",
];

/// A random name; `taken` says which are in use. After enough collisions a
/// number is appended, as docker does.
pub fn generate(mut taken: impl FnMut(&str) -> bool) -> String {
    for attempt in 0u32.. {
        let [a, b, c, d] = crate::run::random_bytes::<4>();
        let adjective = ADJECTIVES[usize::from(u16::from_le_bytes([a, b])) % ADJECTIVES.len()];
        let noun = NOUNS[usize::from(u16::from_le_bytes([c, d])) % NOUNS.len()];
        let mut name = format!("{adjective}_{noun}");
        if attempt >= 8 {
            name.push_str(&(attempt - 7).to_string());
        }
        if !taken(&name) {
            return name;
        }
    }
    unreachable!("the attempts never run out")
}

/// Docker's rule for user-given names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid_and_avoid_taken_ones() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let name = generate(|n| seen.contains(n));
            assert!(is_valid(&name), "{name}");
            assert!(seen.insert(name));
        }
        let numbered = generate(|n| !n.chars().last().unwrap().is_ascii_digit());
        assert!(numbered.ends_with(char::is_numeric), "{numbered}");
    }

    #[test]
    fn user_names_follow_dockers_rule() {
        assert!(is_valid("web-1.a_b"));
        for bad in ["", "-web", "we b", "a/b", "_x"] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
