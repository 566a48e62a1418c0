//! Where `save` and `export` stream an archive: a file, written beside its
//! target and renamed once complete so that a failure leaves no partial
//! archive, or standard output when it is not a terminal.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;
use tokio::io::{AsyncWrite, AsyncWriteExt};

pub struct ArchiveOut {
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// The temporary file and the path it becomes; none for standard output.
    file: Option<(NamedTempFile, PathBuf)>,
}

impl ArchiveOut {
    /// Opens `path`'s temporary neighbour (named with `prefix`), or standard output.
    pub fn open(path: Option<&Path>, prefix: &str) -> Result<Self> {
        let Some(path) = path else {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            return Ok(Self {
                writer: Box::new(tokio::io::stdout()),
                file: None,
            });
        };
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(dir.unwrap_or(Path::new(".")))
            .with_context(|| format!("cannot create {}", path.display()))?;
        let writer = tokio::fs::File::from_std(
            tmp.reopen()
                .with_context(|| format!("cannot open {}", tmp.path().display()))?,
        );
        Ok(Self {
            writer: Box::new(writer),
            file: Some((tmp, path.to_owned())),
        })
    }

    pub fn writer(&mut self) -> &mut Box<dyn AsyncWrite + Unpin + Send> {
        &mut self.writer
    }

    /// Flushes the archive and, for a file, makes it durable under its name.
    pub async fn finish(mut self) -> Result<()> {
        self.writer
            .flush()
            .await
            .context("cannot flush the archive")?;
        if let Some((tmp, path)) = self.file {
            tmp.as_file()
                .sync_all()
                .with_context(|| format!("cannot write {}", path.display()))?;
            tmp.persist(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}
