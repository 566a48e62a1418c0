//! What containers, pods and volumes share in keeping their records:
//! writing one atomically and finding one (both shared with the network
//! store, below the runtime), and sweeping what a crashed create left.

use std::fs;
use std::path::Path;

pub(crate) use hull_net::records::{find, write_json};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
