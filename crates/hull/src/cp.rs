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
    let top = base_name(&stat.name).unwrap_or_else(|| stat.name.clone());
    let (archive, dir) = (spool.path().to_owned(), dir.clone());
    tokio::task::spawn_blocking(move || unpack(&archive, &dir, &top, rename.as_deref()))
        .await
        .context("the unpack failed")?
}

/// Unpacks the tar `archive` into `dir`; with `rename`, its top entry
/// `top` lands as `dir/rename` (unpacked next to it first, then moved).
fn unpack(archive: &Path, dir: &Path, top: &str, rename: Option<&Path>) -> Result<()> {
    let open = || -> Result<tar::Archive<std::fs::File>> {
        let mut archive = tar::Archive::new(std::fs::File::open(archive)?);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        Ok(archive)
    };
    let Some(rename) = rename else {
        return unpack_in(open()?, dir);
    };
    let staging = tempfile::Builder::new()
        .prefix(".hull-cp-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    unpack_in(open()?, staging.path())?;
    let from = staging.path().join(top);
    let to = dir.join(rename);
    if std::fs::symlink_metadata(&from).is_err() {
        bail!("the container's archive holds no {top}");
    }
    // A directory replaces nothing: its files merge into one that exists.
    if to.is_dir() && !to.is_symlink() {
        bail!("{} exists and is a directory", to.display());
    }
    std::fs::rename(&from, &to).with_context(|| format!("cannot write {}", to.display()))
}

fn unpack_in(mut archive: tar::Archive<std::fs::File>, dir: &Path) -> Result<()> {
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.into_owned();
        // `unpack_in` refuses what would land outside `dir` and says so
        // with `false`.
        if !entry
            .unpack_in(dir)
            .with_context(|| format!("cannot unpack {}", name.display()))?
        {
            bail!(
                "the container's archive names {}, outside the destination: refused",
                name.display()
            );
        }
    }
    Ok(())
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
}
