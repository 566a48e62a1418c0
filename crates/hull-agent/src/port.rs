//! Finding and opening the virtio-serial port of the control channel.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no virtio-serial port named {name:?} appeared in /sys/class/virtio-ports within {waited:?}")]
    NotFound { name: String, waited: Duration },
    #[error("cannot open the control port {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The directory name (`vport0p1`, …) of the port named `name`: without udev,
/// the name is only in sysfs, and devtmpfs names the node after that directory.
pub fn find_port(class_dir: &Path, name: &str) -> Option<String> {
    fs::read_dir(class_dir)
        .ok()?
        .flatten()
        .find(|entry| {
            fs::read_to_string(entry.path().join("name")).is_ok_and(|n| n.trim_end() == name)
        })
        .and_then(|entry| entry.file_name().into_string().ok())
}

/// Waits for the port named `name` and opens its device for reading and writing.
pub fn open(name: &str, timeout: Duration) -> Result<File, PortError> {
    let start = Instant::now();
    loop {
        if let Some(dir) = find_port(Path::new("/sys/class/virtio-ports"), name) {
            let path = Path::new("/dev").join(dir);
            if path.exists() {
                return OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|source| PortError::Open { path, source });
            }
        }
        if start.elapsed() >= timeout {
            return Err(PortError::NotFound {
                name: name.to_owned(),
                waited: timeout,
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_found_by_its_name_file() {
        let class = tempfile::tempdir().unwrap();
        for (dir, name) in [("vport0p0", "other\n"), ("vport0p1", "hull.ctl\n")] {
            fs::create_dir(class.path().join(dir)).unwrap();
            fs::write(class.path().join(dir).join("name"), name).unwrap();
        }
        fs::create_dir(class.path().join("vport0p2")).unwrap();
        assert_eq!(
            find_port(class.path(), "hull.ctl").as_deref(),
            Some("vport0p1")
        );
        assert_eq!(find_port(class.path(), "hull.data"), None);
    }
}
