//! Freezing a volume's filesystem while the host copies its disk: FIFREEZE
//! writes everything out to the disk and holds new writes until FITHAW, so
//! the copy is a consistent filesystem. A freeze the host never ends (the
//! host died meanwhile) is ended by the agent after [`FREEZE_LIMIT`], so the
//! container's writers do not hang forever.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::container::{is_mount_point, validate_id, VOLUME_DIRS};

/// `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` of linux/fs.h.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;
/// Longer than any copy the host makes of a frozen disk.
const FREEZE_LIMIT: Duration = Duration::from_secs(600);

/// Each frozen volume's freeze, counted, so that a late timer of an
/// earlier freeze leaves a later one alone.
static FROZEN: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
static FREEZES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("invalid disk serial {0:?}")]
    InvalidSerial(String),
    #[error("no volume disk {0} is mounted in this VM")]
    NotMounted(String),
    #[error("cannot {what} the filesystem at {}", .path.display())]
    Ioctl {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn volume_dir(serial: &str) -> Result<PathBuf, FreezeError> {
    validate_id(serial).map_err(|_| FreezeError::InvalidSerial(serial.to_owned()))?;
    let dir = Path::new(VOLUME_DIRS).join(serial);
    if !is_mount_point(&dir) {
        return Err(FreezeError::NotMounted(serial.to_owned()));
    }
    Ok(dir)
}

fn ioctl(dir: &Path, request: libc::c_ulong, what: &'static str) -> Result<(), FreezeError> {
    let failed = |source| FreezeError::Ioctl {
        what,
        path: dir.to_owned(),
        source,
    };
    let file = File::open(dir).map_err(failed)?;
    // SAFETY: FIFREEZE and FITHAW take no argument beyond the descriptor,
    // which is open for the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), request as _, 0) };
    if ret == -1 {
        return Err(failed(io::Error::last_os_error()));
    }
    Ok(())
}

/// Freezes the filesystem of the volume disk `serial`.
pub fn freeze(serial: &str) -> Result<(), FreezeError> {
    let dir = volume_dir(serial)?;
    ioctl(&dir, FIFREEZE, "freeze")?;
    let generation = FREEZES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    FROZEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(serial.to_owned(), generation);
    let serial = serial.to_owned();
    let _ = std::thread::Builder::new()
        .name("freeze-limit".into())
        .spawn(move || {
            std::thread::sleep(FREEZE_LIMIT);
            let still_frozen = FROZEN
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .and_then(|frozen| frozen.get(&serial).copied())
                == Some(generation);
            if still_frozen && thaw(&serial).is_ok() {
                crate::log!("thawed volume {serial}: the host never did");
            }
        });
    Ok(())
}

/// Lets writes to the volume disk `serial` go on.
pub fn thaw(serial: &str) -> Result<(), FreezeError> {
    let dir = volume_dir(serial)?;
    FROZEN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .remove(serial);
    ioctl(&dir, FITHAW, "thaw")
}
