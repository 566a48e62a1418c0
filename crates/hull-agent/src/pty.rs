//! Pseudo-terminals for processes run with a terminal.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;

#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    #[error("cannot allocate a pseudo-terminal: {step} failed")]
    Allocate {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the pseudo-terminal {path}")]
    OpenSlave {
        path: String,
        #[source]
        source: io::Error,
    },
}

pub struct Pty {
    pub master: File,
    /// Open in the agent only until the process has it; the master reads EOF
    /// (EIO) once every slave descriptor is closed.
    pub slave: File,
}

fn step_error(step: &'static str) -> PtyError {
    PtyError::Allocate {
        step,
        source: io::Error::last_os_error(),
    }
}

/// Opens a new pty pair from the guest's devpts.
pub fn open(size: Option<(u16, u16)>) -> Result<Pty, PtyError> {
    // SAFETY: posix_openpt only takes flags and returns a new descriptor or -1.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd == -1 {
        return Err(step_error("posix_openpt"));
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let master = unsafe { File::from_raw_fd(fd) };
    // SAFETY: grantpt and unlockpt act on the open master descriptor.
    if unsafe { libc::grantpt(master.as_raw_fd()) } != 0 {
        return Err(step_error("grantpt"));
    }
    // SAFETY: as above.
    if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
        return Err(step_error("unlockpt"));
    }
    let mut name = [0u8; 64];
    // SAFETY: `name` is a writable buffer of the length passed.
    let ret = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr().cast(), name.len()) };
    if ret != 0 {
        return Err(PtyError::Allocate {
            step: "ptsname_r",
            source: io::Error::from_raw_os_error(ret),
        });
    }
    let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    let path = String::from_utf8_lossy(&name[..len]).into_owned();
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|source| PtyError::OpenSlave { path, source })?;
    let (rows, cols) = size.unwrap_or((24, 80));
    set_size(&master, rows, cols).map_err(|source| PtyError::Allocate {
        step: "TIOCSWINSZ",
        source,
    })?;
    Ok(Pty { master, slave })
}

/// Sets the window size; the kernel signals SIGWINCH to the foreground group.
pub fn set_size(master: &File, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size the terminal has, as its process reads it.
    fn size_of(pty: &Pty) -> (u16, u16) {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize struct that lives across the call.
        let read = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(read, 0, "{}", io::Error::last_os_error());
        (size.ws_row, size.ws_col)
    }

    #[test]
    fn a_terminal_has_the_size_asked_from_its_start_or_24_by_80() {
        assert_eq!(size_of(&open(Some((30, 100))).unwrap()), (30, 100));
        assert_eq!(size_of(&open(None).unwrap()), (24, 80));
    }
}
