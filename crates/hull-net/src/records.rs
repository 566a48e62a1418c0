//! What every store of Hull's records shares (networks here; containers,
//! pods and volumes in the runtime above): random ids, writing a record
//! atomically, and finding one as docker finds containers.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

/// `N` bytes from the kernel's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes
}

/// A new id as docker makes them: 64 hex digits.
pub fn new_id() -> String {
    hex::encode(random_bytes::<32>())
}

/// Writes `value` as JSON to `path` through a temporary file, synced and
/// renamed into place: a crash leaves the old record or the new one.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut temp_name = path.file_name().unwrap_or_default().to_owned();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let mut file = fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec_pretty(value).expect("records serialize"))?;
    file.sync_all()?;
    fs::rename(&temp, path)
}

/// The entry `reference` names: its full id, its name, or a prefix of its
/// id that no other shares, as docker resolves references.
pub fn find<'a, T>(
    table: &'a BTreeMap<String, T>,
    reference: &str,
    name_of: impl Fn(&T) -> String,
) -> Option<&'a T> {
    if let Some(entry) = table.get(reference) {
        return Some(entry);
    }
    if let Some(entry) = table.values().find(|e| name_of(e) == reference) {
        return Some(entry);
    }
    let mut matches = table
        .range(reference.to_owned()..)
        .take_while(|(id, _)| id.starts_with(reference));
    match (matches.next(), matches.next(), reference.is_empty()) {
        (Some((_, entry)), None, false) => Some(entry),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_ids_names_or_unique_prefixes() {
        let table = BTreeMap::from([
            ("abc1".to_owned(), "web".to_owned()),
            ("abd2".to_owned(), "db".to_owned()),
        ]);
        let name = |n: &String| n.clone();
        assert_eq!(find(&table, "abc1", name), Some(&"web".to_owned()));
        assert_eq!(find(&table, "db", name), Some(&"db".to_owned()));
        assert_eq!(find(&table, "abc", name), Some(&"web".to_owned()));
        assert_eq!(find(&table, "ab", name), None);
        assert_eq!(find(&table, "", name), None);
    }

    #[test]
    fn records_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_json(&path, &[1, 2]).unwrap();
        write_json(&path, &[3]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "[\n  3\n]");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn ids_are_64_hex_digits_and_differ() {
        let id = new_id();
        assert_eq!(id.len(), 64);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_id());
    }
}
