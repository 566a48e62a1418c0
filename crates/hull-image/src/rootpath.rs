//! Paths confined to a root directory, resolved the way a process chroot-ed
//! into that root would see them: an absolute symlink target starts again at
//! the root and `..` never climbs above it. This is what keeps a layer's
//! `etc -> /` or `lib -> ../../..` from redirecting later writes out of the rootfs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::at::{At, Dir, Kind};
use crate::limits::MAX_DEPTH;

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

/// A directory deeper than [`crate::limits::MAX_DEPTH`] was to be created.
#[derive(Debug, thiserror::Error)]
#[error("the directory would lie deeper than the rootfs allows")]
pub(crate) struct TooDeep;

/// Opens the directory at the clean relative path `rel` inside `root`,
/// following the symlinks met on the way as a process chroot-ed into `root`
/// would, and returns it with its path free of symlinks and `..`. Missing
/// directories are created (mode 0755) when `create`, else the answer is
/// `None`. Every step opens one name with `O_NOFOLLOW` from the directory
/// before it: no path is ever handed to the kernel whole.
pub(crate) fn resolve_dir(
    root: &Dir,
    rel: &Path,
    create: bool,
) -> io::Result<Option<(Dir, PathBuf)>> {
    let mut pending: VecDeque<OsString> = components(rel).collect();
    // The directories below the root on the way, for `..`.
    let mut stack: Vec<Dir> = Vec::new();
    let mut names: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            stack.pop();
            names.pop();
            continue;
        }
        let current: &Dir = stack.last().unwrap_or(root);
        match current.stat_child(&name)? {
            Some(stat) if stat.kind == Kind::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = current.read_link(&name)?;
                if target.is_absolute() {
                    stack.clear();
                    names.clear();
                }
                for component in components(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(component);
                }
                continue;
            }
            Some(stat) if stat.kind == Kind::Dir => {}
            Some(_) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            None if !create => return Ok(None),
            None => {
                if names.len() >= MAX_DEPTH {
                    return Err(io::Error::other(TooDeep));
                }
                current.mkdir(&name, 0o755)?;
            }
        }
        let dir = current.open_dir(&name)?;
        stack.push(dir);
        names.push(name);
    }
    let dir = match stack.pop() {
        Some(dir) => dir,
        None => root.try_clone()?,
    };
    Ok(Some((dir, names.iter().collect())))
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(c) => Some(c.to_owned()),
        Component::ParentDir => Some("..".into()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_treats_absolute_names_as_relative_and_rejects_escapes() {
        assert_eq!(clean(Path::new("/etc/passwd")), Some("etc/passwd".into()));
        assert_eq!(clean(Path::new("./a/./b/../c")), Some("a/c".into()));
        assert_eq!(clean(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(clean(Path::new("../x")), None);
        assert_eq!(clean(Path::new("a/../../x")), None);
    }

    fn resolve(root: &Path, rel: &str) -> Option<PathBuf> {
        let root = Dir::open(root).unwrap();
        resolve_dir(&root, Path::new(rel), false)
            .unwrap()
            .map(|(_, p)| p)
    }

    #[test]
    fn absolute_symlinks_resolve_from_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("lib")).unwrap();
        symlink("/", root.path().join("etc")).unwrap();
        assert_eq!(resolve(root.path(), "etc/lib"), Some(PathBuf::from("lib")));
    }

    #[test]
    fn relative_symlinks_cannot_climb_above_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("usr/x")).unwrap();
        fs::create_dir(root.path().join("x")).unwrap();
        symlink("../../../..", root.path().join("usr/lib")).unwrap();
        assert_eq!(resolve(root.path(), "usr/lib/x"), Some(PathBuf::from("x")));
        symlink("usr/lib", root.path().join("lib")).unwrap();
        assert_eq!(resolve(root.path(), "lib/x"), Some(PathBuf::from("x")));
        assert_eq!(resolve(root.path(), "lib/missing"), None);
    }

    #[test]
    fn missing_directories_are_created_inside_and_not_too_deep() {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        fs::create_dir(&root_path).unwrap();
        symlink("../..", root_path.join("up")).unwrap();
        let root = Dir::open(&root_path).unwrap();
        let (_, path) = resolve_dir(&root, Path::new("up/a/b"), true)
            .unwrap()
            .unwrap();
        assert_eq!(path, PathBuf::from("a/b"));
        assert!(root_path.join("a/b").is_dir());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        let err = resolve_dir(&root, Path::new(&deep), true).unwrap_err();
        assert!(err.get_ref().is_some_and(|e| e.is::<TooDeep>()), "{err}");
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("f"), "").unwrap();
        let dir = Dir::open(root.path()).unwrap();
        let err = resolve_dir(&dir, Path::new("f/x"), true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let root = tempfile::tempdir().unwrap();
        symlink("b", root.path().join("a")).unwrap();
        symlink("a", root.path().join("b")).unwrap();
        let dir = Dir::open(root.path()).unwrap();
        let e = resolve_dir(&dir, Path::new("a/x"), true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }
}
