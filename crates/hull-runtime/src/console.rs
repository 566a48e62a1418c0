//! Guests' consoles kept to a cap. QEMU appends what a guest prints to
//! `console.log` in the VM's directory, and its own messages to
//! `qemu.log`, some of which a guest can provoke at will (a device it
//! misuses, memory it frees); either would fill the host's disk. hulld
//! looks every few seconds and, when a log passes its cap, cuts its start
//! away and keeps its end, which is what error messages quote. QEMU
//! writes both with O_APPEND, so its next write lands at the new end.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A console is cut when it passes this size…
pub const MAX_CONSOLE_BYTES: u64 = 1 << 20;
/// …down to about its last this many bytes.
pub const KEPT_CONSOLE_BYTES: u64 = 256 << 10;
/// How often consoles are looked at.
const INTERVAL: Duration = Duration::from_secs(2);

/// Cuts the file at `path` to about its last `keep` bytes if it holds
/// more than `max`; returns whether it did.
pub fn cap(path: &Path, max: u64, keep: u64) -> io::Result<bool> {
    let file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if meta.len() <= max {
        return Ok(false);
    }
    // Removing whole blocks from the start is atomic to QEMU's appends, on
    // filesystems that can (ext4, xfs); others are rewritten.
    let block = meta.blksize().max(1);
    let cut = (meta.len().saturating_sub(keep) / block) * block;
    // SAFETY: fallocate on a descriptor we own, with a range inside the file.
    let collapsed = cut > 0
        && unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_COLLAPSE_RANGE,
                0,
                cut as libc::off_t,
            )
        } == 0;
    if !collapsed {
        rewrite_tail(file, meta.len(), keep)?;
    }
    Ok(true)
}

/// Keeps the last `keep` bytes by truncating and writing them back; what
/// QEMU writes in between may land before them.
fn rewrite_tail(mut file: File, len: u64, keep: u64) -> io::Result<()> {
    let start = len.saturating_sub(keep);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    (&mut file).take(keep).read_to_end(&mut tail)?;
    file.set_len(0)?;
    file.write_all(&tail)
}

/// Caps the console of every VM under `run_root`.
pub fn cap_all(run_root: &Path) {
    for entry in std::fs::read_dir(run_root).into_iter().flatten().flatten() {
        cap_vm(&entry.path());
    }
}

/// The logs in a VM's directory that QEMU appends to.
pub const CAPPED_LOGS: [&str; 2] = ["console.log", "qemu.log"];

/// Caps the console and QEMU's log of the VM whose directory is `run_dir`.
pub fn cap_vm(run_dir: &Path) {
    for name in CAPPED_LOGS {
        let path = run_dir.join(name);
        match cap(&path, MAX_CONSOLE_BYTES, KEPT_CONSOLE_BYTES) {
            Ok(true) => tracing::info!(path = %path.display(), "cut a VM's log to its cap"),
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot cap a VM's log")
            }
        }
    }
}

/// Caps the consoles of VMs under `run_root` every few seconds, for as
/// long as the runtime runs.
pub fn keep_capped(run_root: PathBuf) {
    every_interval(move || cap_all(&run_root));
}

/// Caps the console of the one VM whose directory is `run_dir` every few
/// seconds (the containerd shim's sandbox VM), until the handle is aborted.
pub fn keep_vm_capped(run_dir: PathBuf) -> tokio::task::JoinHandle<()> {
    every_interval(move || cap_vm(&run_dir))
}

/// Runs `work` on a blocking thread every [`INTERVAL`].
fn every_interval(work: impl Fn() + Send + Sync + 'static) -> tokio::task::JoinHandle<()> {
    let work = std::sync::Arc::new(work);
    tokio::spawn(async move {
        loop {
            let work = work.clone();
            let _ = tokio::task::spawn_blocking(move || work()).await;
            tokio::time::sleep(INTERVAL).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_past_its_cap_keeps_its_end_and_takes_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let text: String = (0..20_000).map(|i| format!("line {i:05}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        // Held open for appending as QEMU holds it.
        let mut qemu = OpenOptions::new().append(true).open(&path).unwrap();
        assert!(!cap(&path, text.len() as u64, 4096).unwrap());
        assert!(cap(&path, 64 * 1024, 8192).unwrap());
        qemu.write_all(b"after the cut\n").unwrap();
        let left = std::fs::read_to_string(&path).unwrap();
        assert!(left.len() <= 8192 + 4096 + 14, "{} bytes left", left.len());
        assert!(left.len() >= 8192, "{} bytes left", left.len());
        assert!(left.ends_with("line 19999\nafter the cut\n"), "{left}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_vm_console_written_without_end_stays_under_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut qemu = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let capper = keep_vm_capped(dir.path().to_owned());
        // Ten caps' worth, in bursts of a quarter cap, no faster than
        // the capper looks.
        let line = format!("{}\n", "x".repeat(1023));
        let burst = (MAX_CONSOLE_BYTES / 4) as usize / line.len();
        let mut largest = 0;
        for _ in 0..40 {
            for _ in 0..burst {
                qemu.write_all(line.as_bytes()).unwrap();
            }
            tokio::time::sleep(INTERVAL / 4).await;
            largest = largest.max(std::fs::metadata(&path).unwrap().len());
        }
        capper.abort();
        // Between two looks at most one interval's writing piles up.
        assert!(
            largest <= MAX_CONSOLE_BYTES + 5 * (MAX_CONSOLE_BYTES / 4),
            "the console reached {largest} bytes"
        );
        let left = std::fs::metadata(&path).unwrap().len();
        assert!(
            left <= MAX_CONSOLE_BYTES + 5 * (MAX_CONSOLE_BYTES / 4),
            "{left}"
        );
    }

    #[test]
    fn both_logs_of_a_vm_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(MAX_CONSOLE_BYTES as usize + 4096);
        for name in CAPPED_LOGS {
            std::fs::write(dir.path().join(name), &big).unwrap();
        }
        cap_vm(dir.path());
        for name in CAPPED_LOGS {
            let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
            assert!(len <= KEPT_CONSOLE_BYTES + 4096, "{name}: {len} bytes");
        }
    }

    #[test]
    fn the_rewrite_keeps_the_end_where_blocks_cannot_be_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "0123456789").unwrap();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .unwrap();
        rewrite_tail(file, 10, 4).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "6789");
    }
}
