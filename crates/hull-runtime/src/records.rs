//! What containers, pods and volumes share in keeping their records:
//! writing one atomically, and finding one as docker finds containers.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Writes `value` as JSON to `path` through a temporary file, synced and
/// renamed into place: a crash leaves the old record or the new one.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut temp_name = path.file_name().unwrap_or_default().to_owned();
    temp_name.push(".tmp");
    let temp = path.with_file_name(temp_name);
    let mut file = fs::File::create(&temp)?;
    file.write_all(&serde_json::to_vec_pretty(value).expect("records serialize"))?;
    file.sync_all()?;
    fs::rename(&temp, path)
}

/// Removes the directories under `dir` that hold no `record_file`: what a
/// crash left of a create cut short before its record was written. Names
/// starting with a dot are not records' and are left alone.
pub(crate) fn sweep_unrecorded(dir: &Path, record_file: &str) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || !path.is_dir() || path.join(record_file).exists() {
            continue;
        }
        tracing::info!(dir = %path.display(), "removing what a crash left of a create");
        crate::run::remove_dir(&path);
    }
}

/// The entry `reference` names: its full id, its name, or a prefix of its
/// id that no other shares, as docker resolves references.
pub(crate) fn find<'a, T>(
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
    fn directories_without_their_record_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["kept", "half", ".hidden"] {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        write_json(&dir.path().join("kept/r.json"), &1).unwrap();
        fs::write(dir.path().join("half/r.json.tmp"), b"{").unwrap();
        sweep_unrecorded(dir.path(), "r.json");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".hidden", "kept"]);
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
}
