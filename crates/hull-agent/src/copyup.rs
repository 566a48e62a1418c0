//! Copy-up: a new volume starts with what the image holds where it is
//! mounted, as docker fills an empty volume.
//!
//! It is done here, in the guest, because only here are both sides at hand
//! without privileges or extra tools: the image's tree (the container's
//! rootfs, before the volume covers it) and the volume's filesystem,
//! mounted. The tree is streamed as a tar through a pipe, with the same
//! descriptor walk and unpacking as `docker cp`, so owners, modes, times,
//! symlinks and device nodes are kept and no symlink of the image can lead
//! the copy outside either side.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{archive, fsat, sys, unpack};

/// What a fresh ext4 filesystem holds before anything is written to it.
const FRESH_EXT4_ENTRIES: [&str; 1] = ["lost+found"];

#[derive(Debug, thiserror::Error)]
pub enum CopyUpError {
    #[error("cannot read the volume at {}", .path.display())]
    Volume {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {target} of the image")]
    Source {
        target: String,
        #[source]
        source: archive::ArchiveError,
    },
    #[error("cannot copy {target} of the image into the volume")]
    Copy {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot copy {target} of the image into the volume")]
    Unpack {
        target: String,
        #[source]
        source: unpack::UnpackError,
    },
}

/// Whether the mounted volume at `dir` holds nothing yet.
pub fn is_empty(dir: &Path) -> io::Result<bool> {
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if !FRESH_EXT4_ENTRIES.iter().any(|fresh| name == *fresh) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies what the rootfs holds at `target` (a directory) into the volume
/// mounted at `volume`, if the volume is empty; the volume's root takes the
/// directory's owner and mode. Returns whether anything was copied.
pub fn populate(rootfs: &Path, target: &str, volume: &Path) -> Result<bool, CopyUpError> {
    let volume_error = |source| CopyUpError::Volume {
        path: volume.to_owned(),
        source,
    };
    if !is_empty(volume).map_err(volume_error)? {
        return Ok(false);
    }
    let root = File::open(rootfs).map_err(|source| CopyUpError::Copy {
        target: target.to_owned(),
        source,
    })?;
    // `dir/.` names the directory's contents, following a final symlink
    // inside the rootfs as the mount itself will.
    let source = match archive::resolve(&root, &format!("{}/.", target.trim_end_matches('/'))) {
        Ok(source) => source,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(source) => {
            return Err(CopyUpError::Source {
                target: target.to_owned(),
                source,
            })
        }
    };
    let copy_error = |source| CopyUpError::Copy {
        target: target.to_owned(),
        source,
    };
    let meta = source.fd.metadata().map_err(copy_error)?;
    if !meta.is_dir() {
        // Mounting on it fails, with its own error.
        return Ok(false);
    }
    let destination = File::open(volume).map_err(volume_error)?;
    let (reader, writer) = sys::pipe().map_err(copy_error)?;
    let packer = std::thread::spawn(move || archive::pack(&source, BufWriter::new(writer)));
    let unpacked = unpack::unpack(&destination, BufReader::new(reader));
    // The reader is gone: a packer still writing gets EPIPE and ends.
    let packed = packer.join().expect("packing does not panic");
    unpacked.map_err(|source| CopyUpError::Unpack {
        target: target.to_owned(),
        source,
    })?;
    packed.map_err(|source| CopyUpError::Source {
        target: target.to_owned(),
        source,
    })?;
    let volume_root = Path::new(".");
    fsat::chown_at(&destination, volume_root, meta.uid(), meta.gid())
        .and_then(|()| fsat::chmod_fd(&destination, meta.mode() & 0o7777))
        .map_err(volume_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_filesystem_counts_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(is_empty(dir.path()).unwrap());
        fs::create_dir(dir.path().join("lost+found")).unwrap();
        assert!(is_empty(dir.path()).unwrap());
        fs::write(dir.path().join("data"), "x").unwrap();
        assert!(!is_empty(dir.path()).unwrap());
    }

    #[test]
    fn the_images_tree_is_copied_into_an_empty_volume_only() {
        let rootfs = tempfile::tempdir().unwrap();
        let seed = rootfs.path().join("seed");
        fs::create_dir_all(seed.join("sub")).unwrap();
        fs::write(seed.join("sub/file"), "image data").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", seed.join("link")).unwrap();
        fs::set_permissions(
            seed.join("sub/file"),
            std::os::unix::fs::PermissionsExt::from_mode(0o640),
        )
        .unwrap();

        let volume = tempfile::tempdir().unwrap();
        assert!(populate(rootfs.path(), "/seed", volume.path()).unwrap());
        let copied = volume.path().join("sub/file");
        assert_eq!(fs::read_to_string(&copied).unwrap(), "image data");
        assert_eq!(fs::metadata(&copied).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(
            fs::read_link(volume.path().join("link")).unwrap(),
            Path::new("/etc/passwd")
        );

        // A volume with data keeps it.
        fs::write(seed.join("later"), "new").unwrap();
        assert!(!populate(rootfs.path(), "/seed", volume.path()).unwrap());
        assert!(!volume.path().join("later").exists());
        // Nothing at the path in the image: nothing to copy.
        let other = tempfile::tempdir().unwrap();
        assert!(!populate(rootfs.path(), "/absent", other.path()).unwrap());
    }
}
