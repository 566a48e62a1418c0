//! hulld's own log, kept to a few files of bounded size: when the file
//! passes its cap it becomes `<name>.1` (older ones shift up, the oldest
//! goes) and a new one starts. stdout and stderr follow the current file,
//! so that a panic's message lands in it too.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A log file that rotates by size.
pub struct RotatingLog {
    path: PathBuf,
    file: File,
    len: u64,
    max_size: u64,
    /// Files kept, the current one included.
    max_files: u32,
    /// Whether stdout and stderr follow the current file.
    stdio: bool,
}

impl RotatingLog {
    /// The log at `path`, with stdout and stderr following it.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> io::Result<Self> {
        Self::open_with(path, max_size, max_files, true)
    }

    fn open_with(path: &Path, max_size: u64, max_files: u32, stdio: bool) -> io::Result<Self> {
        let file = open_append(path)?;
        let len = file.metadata()?.len();
        let log = Self {
            path: path.to_owned(),
            file,
            len,
            max_size: max_size.max(1),
            max_files: max_files.max(1),
            stdio,
        };
        log.redirect_stdio();
        Ok(log)
    }

    fn rotate(&mut self) -> io::Result<()> {
        for index in (1..self.max_files).rev() {
            let from = numbered(&self.path, index - 1);
            let _ = std::fs::rename(&from, numbered(&self.path, index));
        }
        if self.max_files == 1 {
            let _ = std::fs::remove_file(&self.path);
        }
        self.file = open_append(&self.path)?;
        self.len = 0;
        self.redirect_stdio();
        Ok(())
    }

    fn redirect_stdio(&self) {
        if !self.stdio {
            return;
        }
        for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
            // SAFETY: dup2 onto the standard descriptors, from a descriptor
            // this struct owns; Rust's std keeps no state about fds 1 and 2.
            unsafe { libc::dup2(self.file.as_raw_fd(), target) };
        }
    }
}

/// `path` for 0, `path.N` for N.
fn numbered(path: &Path, index: u32) -> PathBuf {
    if index == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{index}"));
    PathBuf::from(name)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for RotatingLog {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.len > 0 && self.len + bytes.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let written = self.file.write(bytes)?;
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_into_a_bounded_set_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hulld.log");
        // Not stdio: the harness prints other tests' results there meanwhile.
        let mut log = RotatingLog::open_with(&path, 100, 3, false).unwrap();
        for i in 0..50 {
            writeln!(log, "line {i:03} of the log").unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["hulld.log", "hulld.log.1", "hulld.log.2"]);
        for name in &names {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= 100, "{name} has {len} bytes");
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.ends_with("line 049 of the log\n"), "{current}");
    }
}
