//! What the tests leave behind, taken away: the processes that name a
//! test's directory, the mounts below it (every VM's share is a bind mount,
//! which a plain remove cannot take), then the directory itself.

use std::path::{Path, PathBuf};

/// Directories to remove when the test process exits: the shared daemons
/// live in statics, which are never dropped.
static TO_REMOVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

extern "C" fn remove_registered_dirs() {
    if let Ok(dirs) = TO_REMOVE.lock() {
        for dir in dirs.iter() {
            release(dir);
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Kills what uses `dir` and detaches the mounts below it, so that it can
/// be removed.
pub fn release(dir: &Path) {
    kill_processes_using(dir);
    unmount_under(dir);
}

/// Kills the processes whose command line names `dir`: the VMs of
/// containers, which outlive hulld by design, must not outlive the tests.
pub fn kill_processes_using(dir: &Path) {
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            // SAFETY: signalling a process this test run started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Lazily unmounts every mount at or below `dir`, the deepest first.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        // Test directories hold no spaces, which the table would escape.
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in points {
        let Ok(path) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: umount2 reads a NUL-terminated path that lives across the call.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Removes `dir`, with what uses it, when the test process exits.
pub fn remove_at_exit(dir: &Path) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain function that lives for the whole program.
        unsafe { libc::atexit(remove_registered_dirs) };
    });
    TO_REMOVE.lock().unwrap().push(dir.to_owned());
}
