//! A container's log as a set of files, as docker's `json-file` driver
//! keeps it: `<id>-json.log` is written, `<id>-json.log.1` is the one
//! before it, up to `.N-1` for `max-file` N. Rotation renames the files
//! up by one and drops the oldest; readers hold files open, so a rename
//! under them loses them nothing.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `path` for 0, `path.N` for N.
pub(super) fn numbered(path: &Path, index: u32) -> PathBuf {
    if index == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

/// Shifts the files up by one, keeping `max_files` with the new current
/// one: the oldest goes, the current one becomes `.1`.
pub(super) fn rotate(path: &Path, max_files: u32) -> std::io::Result<()> {
    let oldest = numbered(path, max_files.max(1) - 1);
    match std::fs::remove_file(&oldest) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    for index in (1..max_files.max(1)).rev() {
        match std::fs::rename(numbered(path, index - 1), numbered(path, index)) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// An open file of the set, and which file it is.
pub(super) struct LogFile {
    pub file: File,
    pub id: (u64, u64),
}

pub(super) fn file_id(file: &File) -> std::io::Result<(u64, u64)> {
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

fn open(path: &Path) -> std::io::Result<Option<LogFile>> {
    match File::open(path) {
        Ok(file) => Ok(Some(LogFile {
            id: file_id(&file)?,
            file,
        })),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// The files of the log, oldest first, all opened before any is read.
/// They are opened newest first and a file seen twice (renamed by a
/// rotation between two opens) is kept once, so the list is in order and
/// whole up to the moment the current file was opened. A rotation renames
/// from the oldest down, so while it runs one name is missing: a missing
/// name is the end only if the next one is missing too.
pub(super) fn open_all(path: &Path) -> std::io::Result<Vec<LogFile>> {
    let mut files: Vec<LogFile> = Vec::new();
    let mut index = 0;
    let mut gap = false;
    loop {
        let Some(file) = open(&numbered(path, index))? else {
            if gap {
                break;
            }
            gap = true;
            index += 1;
            continue;
        };
        gap = false;
        if !files.iter().any(|f| f.id == file.id) {
            files.push(file);
        }
        index += 1;
    }
    files.reverse();
    Ok(files)
}

/// Whether `file` was removed from the set (dropped as the oldest).
pub(super) fn is_removed(file: &File) -> std::io::Result<bool> {
    Ok(file.metadata()?.nlink() == 0)
}

/// The file written now, if there is one.
pub(super) fn current_id(path: &Path) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(path: &Path) -> Vec<String> {
        open_all(path)
            .unwrap()
            .into_iter()
            .map(|mut f| {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f.file, &mut text).unwrap();
                text
            })
            .collect()
    }

    #[test]
    fn rotation_keeps_the_newest_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        for generation in 0..5 {
            std::fs::write(&path, format!("{generation}")).unwrap();
            if generation < 4 {
                rotate(&path, 3).unwrap();
            }
        }
        assert_eq!(contents(&path), ["2", "3", "4"]);
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn a_single_file_rotates_into_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(&path, "old").unwrap();
        rotate(&path, 1).unwrap();
        assert!(!path.exists());
        assert!(contents(&path).is_empty());
    }

    #[test]
    fn a_rotation_half_done_hides_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        for generation in 0..3 {
            std::fs::write(&path, format!("{generation}")).unwrap();
            if generation < 2 {
                rotate(&path, 10).unwrap();
            }
        }
        // A rotation has moved .2 and .1 up but not yet the current file.
        std::fs::rename(numbered(&path, 2), numbered(&path, 3)).unwrap();
        std::fs::rename(numbered(&path, 1), numbered(&path, 2)).unwrap();
        assert_eq!(contents(&path), ["0", "1", "2"]);
    }

    #[test]
    fn a_rotated_away_current_file_is_still_found_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(&path, "a").unwrap();
        rotate(&path, 5).unwrap();
        // The current file is missing between a rotation and the next write.
        assert_eq!(contents(&path), ["a"]);
    }
}
