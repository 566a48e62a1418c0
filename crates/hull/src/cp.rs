//! `hull cp`: files between the host and a container, running or stopped,
//! as `docker cp` copies them. What comes out of a container is unpacked
//! only inside the destination: entries that climb out of it (`..`, an
//! absolute path, a symlink the archive made) are refused by the unpack.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use hull_api::Client;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// `CONTAINER:SRC_PATH`, or a host path (`-`: a tar on standard input).
    src: String,
    /// `CONTAINER:DEST_PATH`, or a host path (`-`: a tar on standard output).
    dest: String,
}

/// One side of a copy.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Host(PathBuf),
    Container { name: String, path: String },
}

/// `NAME:PATH` names a container's path unless the part before the colon
/// holds a `/` (a host path like `./a:b`), as docker reads it.
fn side(text: &str) -> Side {
    match text.split_once(':') {
        Some((name, path)) if !name.is_empty() && !name.contains('/') => Side::Container {
            name: name.to_owned(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path.to_owned()
            },
        },
        _ => Side::Host(PathBuf::from(text)),
    }
}

pub async fn cp(client: &Client, args: CpArgs) -> Result<()> {
    match (side(&args.src), side(&args.dest)) {
        (Side::Container { name, path }, Side::Host(dest)) => {
            copy_out(client, &name, &path, &dest).await
        }
        (Side::Host(src), Side::Container { name, path }) => {
            copy_in(client, &src, &name, &path).await
        }
        (Side::Container { .. }, Side::Container { .. }) => {
            bail!("copying between containers is not supported: copy to the host first")
        }
        (Side::Host(_), Side::Host(_)) => {
            bail!("one of the paths must be CONTAINER:PATH (a local path with a colon: ./name:with:colons)")
        }
    }
}

/// The last normal component of `path`: what a copy of it is named.
fn base_name(path: &str) -> Option<String> {
    Path::new(path).components().rev().find_map(|c| match c {
        Component::Normal(name) => Some(name.to_string_lossy().into_owned()),
        _ => None,
    })
}

async fn copy_out(client: &Client, name: &str, path: &str, dest: &Path) -> Result<()> {
    if dest == Path::new("-") {
        let mut stdout = tokio::io::stdout();
        client.copy_from(name, path, &mut stdout).await?;
        return Ok(());
    }
    let stat = client
        .stat_path(name, path)
        .await?
        .with_context(|| format!("could not find the file {path} in container {name}"))?;
    // Into an existing directory under the source's name; otherwise as
    // the destination itself, in its parent.
    let (dir, rename) = match std::fs::metadata(dest) {
        Ok(meta) if meta.is_dir() => (dest.to_owned(), None),
        Ok(_) if stat.is_dir() => bail!(
            "cannot copy the directory {path} to the file {}",
            dest.display()
        ),
        _ => {
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                bail!(
                    "the destination directory {} does not exist",
                    parent.display()
                );
            }
            let file_name = dest
                .file_name()
                .with_context(|| format!("{} names no file", dest.display()))?;
            (parent.to_owned(), Some(PathBuf::from(file_name)))
        }
    };
    // Spooled beside the destination, unpacked once whole.
    let spool = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut file = tokio::fs::File::from_std(spool.reopen()?);
    client.copy_from(name, path, &mut file).await?;
    drop(file);
    let top = stat.name.clone();
    let (archive, dir) = (spool.path().to_owned(), dir.clone());
    tokio::task::spawn_blocking(move || unpack(&archive, &dir, &top, rename.as_deref()))
        .await
        .context("the unpack failed")?
}

/// Unpacks the tar `archive` into a staging directory beside the target,
/// then moves its top entry `top` to `dir/rename`, or to `dir/top`. Only
/// `top` and what is under it may be in the archive: a container that
/// adds other entries (say `.ssh/authorized_keys` beside the file asked
/// for) is refused, and nothing reaches `dir`. Modes lose setuid, setgid
/// and group and world write; owners are not kept.
fn unpack(archive: &Path, dir: &Path, top: &str, rename: Option<&Path>) -> Result<()> {
    let mut top_parts = Path::new(top).components();
    let (Some(Component::Normal(_)), None) = (top_parts.next(), top_parts.next()) else {
        bail!("the container names its file {top:?}: not a file name, refused");
    };
    let mut archive = tar::Archive::new(std::fs::File::open(archive)?);
    archive.set_preserve_permissions(false);
    archive.set_mask(0o7022);
    archive.set_overwrite(true);
    let staging = tempfile::Builder::new()
        .prefix(".hull-cp-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        if !name.starts_with(top) {
            bail!(
                "the container's archive holds {}, not under {top}: refused, nothing copied",
                name.display()
            );
        }
        // `unpack_in` refuses what would land outside the staging
        // directory (`..`, a symlink the archive made) and says so with
        // `false`.
        if !entry
            .unpack_in(staging.path())
            .with_context(|| format!("cannot unpack {}", name.display()))?
        {
            bail!(
                "the container's archive names {}, outside the destination: refused",
                name.display()
            );
        }
    }
    let from = staging.path().join(top);
    let to = dir.join(rename.unwrap_or(Path::new(top)));
    if std::fs::symlink_metadata(&from).is_err() {
        bail!("the container's archive holds no {top}");
    }
    if std::fs::symlink_metadata(&to).is_ok_and(|meta| meta.is_dir()) {
        bail!(
            "{} exists and is a directory: remove it first",
            to.display()
        );
    }
    std::fs::rename(&from, &to).with_context(|| format!("cannot write {}", to.display()))
}

async fn copy_in(client: &Client, src: &Path, name: &str, path: &str) -> Result<()> {
    if src == Path::new("-") {
        client.copy_to(name, path, src).await?;
        return Ok(());
    }
    let meta = std::fs::symlink_metadata(src)
        .with_context(|| format!("could not find the file {}", src.display()))?;
    let dest = client.stat_path(name, path).await?;
    // Into an existing directory under the source's name; otherwise as
    // the destination itself, in its parent.
    let (dir, entry_name) = match &dest {
        Some(stat) if stat.is_dir() => {
            let base = src
                .file_name()
                .with_context(|| format!("{} names no file", src.display()))?;
            (path.to_owned(), PathBuf::from(base))
        }
        Some(_) if meta.is_dir() => bail!(
            "cannot copy the directory {} to the file {path}",
            src.display()
        ),
        _ => {
            let base = base_name(path).with_context(|| format!("{path} names no file"))?;
            let parent = Path::new(path)
                .parent()
                .map_or("/".into(), |p| p.to_string_lossy().into_owned());
            (
                if parent.is_empty() {
                    "/".to_owned()
                } else {
                    parent
                },
                PathBuf::from(base),
            )
        }
    };
    let spool = tempfile::NamedTempFile::new().context("cannot make a temporary file")?;
    let (archive, source) = (spool.reopen()?, src.to_owned());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut builder = tar::Builder::new(archive);
        builder.follow_symlinks(false);
        if meta.is_dir() {
            builder.append_dir_all(&entry_name, &source)?;
        } else {
            builder.append_path_with_name(&source, &entry_name)?;
        }
        builder.into_inner()?;
        Ok(())
    })
    .await
    .context("packing the source failed")?
    .with_context(|| format!("cannot pack {}", src.display()))?;
    client.copy_to(name, &dir, spool.path()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_colon_names_a_container_unless_a_slash_comes_first() {
        assert_eq!(
            side("web:/etc/hosts"),
            Side::Container {
                name: "web".into(),
                path: "/etc/hosts".into()
            }
        );
        assert_eq!(side("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(side("/tmp/x"), Side::Host("/tmp/x".into()));
        assert_eq!(side(":x"), Side::Host(":x".into()));
        assert_eq!(
            side("web:"),
            Side::Container {
                name: "web".into(),
                path: "/".into()
            }
        );
    }

    #[test]
    fn an_archive_that_climbs_out_is_refused_and_writes_nothing_outside() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let archive = root.path().join("evil.tar");
        {
            let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            // A symlink out of the destination, then a file through it.
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            builder
                .append_link(&mut link, "escape", root.path())
                .unwrap();
            let mut file = tar::Header::new_gnu();
            file.set_size(4);
            file.set_mode(0o644);
            builder
                .append_data(&mut file, "escape/owned", &b"evil"[..])
                .unwrap();
            builder.into_inner().unwrap();
        }
        let err = unpack(&archive, &dest, "escape", None).unwrap_err();
        assert!(format!("{err:#}").contains("escape/owned"), "{err:#}");
        assert!(!root.path().join("owned").exists());
    }

    #[test]
    fn only_the_file_asked_for_lands_and_without_setuid_or_group_write() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("home");
        std::fs::create_dir(&dest).unwrap();
        let archive = root.path().join("out.tar");
        let build = |entries: &[(&str, u32)]| {
            let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            for (name, mode) in entries {
                let mut header = tar::Header::new_gnu();
                header.set_size(2);
                header.set_mode(*mode);
                builder.append_data(&mut header, name, &b"x\n"[..]).unwrap();
            }
            builder.into_inner().unwrap();
        };
        // A file beside the one asked for: refused, and nothing written.
        build(&[("out.txt", 0o644), (".bashrc", 0o644)]);
        let err = unpack(&archive, &dest, "out.txt", None).unwrap_err();
        assert!(format!("{err:#}").contains(".bashrc"), "{err:#}");
        let left: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
        // A setuid, group-writable file comes out plain.
        build(&[("tool", 0o6775)]);
        unpack(&archive, &dest, "tool", None).unwrap();
        let mode = std::fs::metadata(dest.join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        // A name that is no file name is refused.
        for top in ["..", "/", "a/b", ""] {
            assert!(unpack(&archive, &dest, top, None).is_err(), "{top}");
        }
    }
}
