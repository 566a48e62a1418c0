//! A running call's output kept on disk as it comes, and whether its
//! request body was all handed over, so the next hulld can take the call
//! back after a restart. Each is bounded as the call's output is; writes
//! are not synced: a hulld that stops keeps them in the page cache, and a
//! host that stops takes the call's VM with it anyway.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hull_runtime::container::LogStream;
use tracing::warn;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot keep the call's output in {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The spool files of one call.
#[derive(Debug, Clone)]
pub(super) struct Spool {
    base: PathBuf,
    /// Open for appending; `None` once writing failed (logged once).
    files: Arc<Mutex<Option<(File, File)>>>,
}

/// Where calls' spools are, under the daemon's root.
fn dir(root: &Path) -> PathBuf {
    root.join("funcs").join("calls")
}

impl Spool {
    fn paths(&self) -> [PathBuf; 3] {
        ["stdout", "stderr", "fed"].map(|ext| self.base.with_extension(ext))
    }

    /// A new, empty spool for call `id` (a call id is hex: a safe name).
    pub fn create(root: &Path, id: &str) -> Result<Self, SpoolError> {
        let base = dir(root).join(id);
        fs::create_dir_all(dir(root)).map_err(|source| SpoolError::Create {
            path: base.clone(),
            source,
        })?;
        let _ = fs::remove_file(base.with_extension("fed"));
        Self::with_files(
            base,
            OpenOptions::new().create(true).write(true).truncate(true),
        )
    }

    /// Call `id`'s spool as a stopped hulld left it, to go on appending.
    pub fn open(root: &Path, id: &str) -> Result<Self, SpoolError> {
        Self::with_files(dir(root).join(id), OpenOptions::new().append(true))
    }

    fn with_files(base: PathBuf, options: &OpenOptions) -> Result<Self, SpoolError> {
        let open = |ext: &str| {
            options
                .open(base.with_extension(ext))
                .map_err(|source| SpoolError::Create {
                    path: base.clone(),
                    source,
                })
        };
        let files = (open("stdout")?, open("stderr")?);
        Ok(Self {
            base,
            files: Arc::new(Mutex::new(Some(files))),
        })
    }

    /// Notes that the whole request body went to the call's stdin.
    pub fn mark_fed(&self) {
        if let Err(err) = File::create(self.base.with_extension("fed")) {
            warn!(spool = %self.base.display(), error = %err, "cannot note a call's input as sent");
        }
    }

    pub fn fed(&self) -> bool {
        self.base.with_extension("fed").exists()
    }

    pub fn append(&self, stream: LogStream, bytes: &[u8]) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let Some((stdout, stderr)) = files.as_mut() else {
            return;
        };
        let file = match stream {
            LogStream::Stdout => stdout,
            LogStream::Stderr => stderr,
        };
        if let Err(err) = file.write_all(bytes) {
            // The call goes on; only a restart would miss what is lost.
            warn!(spool = %self.base.display(), error = %err, "cannot spool a call's output");
            *files = None;
        }
    }

    /// What was spooled: at most `max_stdout` and `max_stderr` bytes.
    pub fn read(&self, max_stdout: usize, max_stderr: usize) -> (Vec<u8>, Vec<u8>) {
        let [stdout, stderr, _] = self.paths();
        (
            read_at_most(&stdout, max_stdout),
            read_at_most(&stderr, max_stderr),
        )
    }

    /// Removes the spool's files.
    pub fn remove(&self) {
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for path in self.paths() {
            let _ = fs::remove_file(path);
        }
    }
}

fn read_at_most(path: &Path, max: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Ok(file) = File::open(path) {
        let _ = file.take(max as u64).read_to_end(&mut bytes);
    }
    bytes
}

/// Removes spools no call owns any more (calls done while no hulld ran, or
/// whose function was removed): `keep` names the calls still running.
pub(super) fn sweep(root: &Path, keep: &[String]) {
    let Ok(entries) = fs::read_dir(dir(root)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let owned = path
            .file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|id| keep.iter().any(|k| k == id));
        if !owned {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_keeps_output_across_a_reopen_within_bounds() {
        let root = tempfile::tempdir().unwrap();
        let spool = Spool::create(root.path(), "abc").unwrap();
        spool.append(LogStream::Stdout, b"hello ");
        spool.append(LogStream::Stderr, b"warn");
        assert!(!spool.fed());
        spool.mark_fed();
        drop(spool);
        let spool = Spool::open(root.path(), "abc").unwrap();
        assert!(spool.fed());
        spool.append(LogStream::Stdout, b"world");
        assert_eq!(
            spool.read(1024, 1024),
            (b"hello world".to_vec(), b"warn".to_vec())
        );
        assert_eq!(spool.read(5, 2), (b"hello".to_vec(), b"wa".to_vec()));

        // A new spool of the same call starts empty and unfed.
        let again = Spool::create(root.path(), "abc").unwrap();
        assert!(!again.fed());
        assert_eq!(again.read(1024, 1024), (Vec::new(), Vec::new()));
        again.remove();
        assert!(Spool::open(root.path(), "abc").is_err());
    }

    #[test]
    fn a_sweep_keeps_only_the_running_calls_spools() {
        let root = tempfile::tempdir().unwrap();
        Spool::create(root.path(), "live").unwrap().mark_fed();
        Spool::create(root.path(), "done").unwrap();
        sweep(root.path(), &["live".to_owned()]);
        let live = Spool::open(root.path(), "live").unwrap();
        assert!(live.fed());
        assert!(Spool::open(root.path(), "done").is_err());
    }
}
