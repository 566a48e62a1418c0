//! Paths confined to a root directory, resolved the way a process chroot-ed
//! into that root would see them: an absolute symlink target starts again at
//! the root and `..` never climbs above it. This is what keeps a layer's
//! `etc -> /` or `lib -> ../../..` from redirecting later writes out of the rootfs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one path before giving up, as Linux does.
const MAX_SYMLINKS: u32 = 40;

/// Cleans a tar entry name lexically: drops `.` and a leading `/`, applies `..`.
/// Returns `None` when a `..` would climb above the root.
pub fn clean(name: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Resolves the clean relative path `rel` inside `root`, following every
/// symlink met on the way within the root, the last component only if
/// `follow_last`. Returns a relative path free of symlinks (except possibly
/// its last component) and of `..`; components that do not exist are kept as they are.
pub fn resolve(root: &Path, rel: &Path, follow_last: bool) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(c) => Some(c.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        if pending.is_empty() && !follow_last {
            return Ok(candidate);
        }
        let full = root.join(&candidate);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fs::read_link(&full)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for component in target.components().rev() {
                    match component {
                        Component::Normal(c) => pending.push_front(c.to_owned()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved = candidate,
            Err(e) => return Err(e),
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_treats_absolute_names_as_relative_and_rejects_escapes() {
        assert_eq!(clean(Path::new("/etc/passwd")), Some("etc/passwd".into()));
        assert_eq!(clean(Path::new("./a/./b/../c")), Some("a/c".into()));
        assert_eq!(clean(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(clean(Path::new("../x")), None);
        assert_eq!(clean(Path::new("a/../../x")), None);
    }

    #[test]
    fn absolute_symlinks_resolve_from_the_root() {
        let root = tempfile::tempdir().unwrap();
        symlink("/", root.path().join("etc")).unwrap();
        let r = resolve(root.path(), Path::new("etc/passwd"), false).unwrap();
        assert_eq!(r, PathBuf::from("passwd"));
    }

    #[test]
    fn relative_symlinks_cannot_climb_above_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("usr")).unwrap();
        symlink("../../../..", root.path().join("usr/lib")).unwrap();
        let r = resolve(root.path(), Path::new("usr/lib/x"), false).unwrap();
        assert_eq!(r, PathBuf::from("x"));
        symlink("usr/lib", root.path().join("lib")).unwrap();
        let r = resolve(root.path(), Path::new("lib/y"), true).unwrap();
        assert_eq!(r, PathBuf::from("y"));
    }

    #[test]
    fn the_last_component_is_followed_only_on_request() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        symlink("real", root.path().join("link")).unwrap();
        let r = resolve(root.path(), Path::new("link"), false).unwrap();
        assert_eq!(r, PathBuf::from("link"));
        let r = resolve(root.path(), Path::new("link"), true).unwrap();
        assert_eq!(r, PathBuf::from("real"));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let root = tempfile::tempdir().unwrap();
        symlink("b", root.path().join("a")).unwrap();
        symlink("a", root.path().join("b")).unwrap();
        let e = resolve(root.path(), Path::new("a/x"), false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }
}
