//! Building erofs images with erofs-utils' `mkfs.erofs`.

use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

const MKFS: &str = "mkfs.erofs";

/// Errors of erofs image creation.
#[derive(Debug, thiserror::Error)]
pub enum ErofsError {
    #[error("mkfs.erofs not found: install erofs-utils")]
    NotFound,
    #[error("cannot run mkfs.erofs")]
    Spawn(#[source] io::Error),
    #[error("mkfs.erofs failed ({status}) building {image} from {dir}: {stderr}")]
    Failed {
        status: ExitStatus,
        image: String,
        dir: String,
        stderr: String,
    },
}

/// Builds the erofs image `image` holding the tree under `dir`.
pub fn mkfs(dir: &Path, image: &Path) -> Result<(), ErofsError> {
    let output = Command::new(MKFS)
        .arg("--quiet")
        .arg(image)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ErofsError::NotFound,
            _ => ErofsError::Spawn(e),
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(ErofsError::Failed {
        status: output.status,
        image: image.display().to_string(),
        dir: dir.display().to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
