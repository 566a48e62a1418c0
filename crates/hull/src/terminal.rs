//! The user's terminal: raw mode for `-t`, and its size.

use std::os::fd::RawFd;

/// Puts a terminal in raw mode and restores it when dropped, so keys such as
/// Ctrl-C travel to the container's pty instead of signalling `hull`.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// `None` when `fd` is not a terminal.
    pub fn enable(fd: RawFd) -> Option<Self> {
        // SAFETY: an all-zero termios is a valid value to be overwritten by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios copied from the terminal's own settings.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios; fd is a terminal (tcgetattr succeeded).
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same terminal in `enable`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Rows and columns of the terminal on `fd`, if it is one.
pub fn size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes into it.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ takes a pointer to a winsize, which `size` is.
    let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}
