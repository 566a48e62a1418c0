//! What an image may make the host hold, and the reader that holds a tar
//! stream to it.
//!
//! The `tar` crate reads an entry's extension headers (PAX, GNU long names
//! and links) into memory whole before it hands the entry out, however large
//! they claim to be. So the stream it reads is cut off: between two entries it
//! may read only a few header blocks and `max_header_bytes` more, and the
//! whole decompressed stream is bounded too.

use std::cell::Cell;
use std::io::{self, Read};
use std::path::PathBuf;
use std::rc::Rc;

/// Deepest directory a layer may create, counted from the rootfs. Real images
/// stay far below; the bound keeps every walk of the tree to this many open
/// descriptors.
pub const MAX_DEPTH: usize = 256;
/// Longest entry name or link target, as Linux's `PATH_MAX`.
pub const MAX_NAME: usize = 4096;
/// Largest image manifest or index, as registries accept (the distribution spec).
pub const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config.
pub const MAX_CONFIG: u64 = 8 << 20;
/// Bytes a layer may hold after its end-of-archive marker (tar's record padding).
const MAX_TRAILER: u64 = 1 << 20;
/// Header blocks and padding read between two entries, beside their extensions.
const HEADER_SLACK: u64 = 4096;

/// Bounds on what one image may make the host hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of files an image may unpack to, all layers together. Never more
    /// than the free space where it is unpacked, whatever this says.
    pub max_unpacked_bytes: u64,
    /// Entries of one layer.
    pub max_entries: u64,
    /// Bytes of the extension headers (PAX, GNU long names and links) of one entry.
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_unpacked_bytes: 32 << 30,
            max_entries: 1_000_000,
            max_header_bytes: 1 << 20,
        }
    }
}

impl Limits {
    /// Longest decompressed tar stream of a layer within these limits.
    pub(crate) fn max_stream_bytes(&self) -> u64 {
        self.max_unpacked_bytes
            .saturating_add(self.max_entries.saturating_mul(HEADER_SLACK))
            .saturating_add(self.max_header_bytes)
    }
}

/// A size with an optional binary suffix: `512`, `64k`, `100M`, `20G`, `1T`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let shift = match suffix.to_ascii_lowercase().trim_end_matches(['b', 'i']) {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// A limit an image passed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("an entry's extension headers (PAX, GNU long names and links) pass {limit} bytes, the most one entry may have")]
    Header { limit: u64 },
    #[error("it has more than {limit} entries, the most a layer may have")]
    Entries { limit: u64 },
    #[error(
        "its files pass {limit} bytes, the most an image may unpack to (hulld --max-image-size)"
    )]
    Unpacked { limit: u64 },
    #[error("its files need {needed} bytes, more than the {available} bytes free in {}", .path.display())]
    Disk {
        needed: u64,
        available: u64,
        path: PathBuf,
    },
    #[error("its uncompressed tar stream passes {limit} bytes")]
    Stream { limit: u64 },
    #[error("it holds more than {MAX_TRAILER} bytes after the end of its tar stream")]
    Trailer,
    #[error("an entry's name or link target is {len} bytes long, more than {MAX_NAME}")]
    Name { len: usize },
    #[error("entry '{entry}' lies deeper than {MAX_DEPTH} directories")]
    Depth { entry: String },
    #[error("the {what} is larger than {limit} bytes")]
    Document { what: &'static str, limit: u64 },
}

/// Checks that `needed` bytes fit within the free space `available` of `path`.
pub(crate) fn check_disk(needed: u64, available: u64, path: PathBuf) -> Result<(), LimitError> {
    if needed > available {
        return Err(LimitError::Disk {
            needed,
            available,
            path,
        });
    }
    Ok(())
}

/// The shared state of a [`Guarded`] reader and its owner.
#[derive(Debug)]
pub(crate) struct Guard {
    limits: Limits,
    /// Bytes the reader may still return before its owner allows more.
    allowance: Cell<u64>,
    /// Bytes read so far.
    total: Cell<u64>,
    /// What the reader is reading now.
    mode: Cell<Trip>,
    /// Which limit an error of the reader came from.
    tripped: Cell<Option<Trip>>,
}

#[derive(Clone, Copy, Debug)]
enum Trip {
    Header,
    Stream,
    Trailer,
}

impl Guard {
    /// A guard at the start of a tar stream: headers come first.
    pub(crate) fn new(limits: Limits) -> Rc<Guard> {
        let guard = Guard {
            limits,
            allowance: Cell::new(0),
            total: Cell::new(0),
            mode: Cell::new(Trip::Header),
            tripped: Cell::new(None),
        };
        guard.headers();
        Rc::new(guard)
    }

    /// The next read goes through headers: a few blocks and the extensions of one entry.
    pub(crate) fn headers(&self) {
        self.mode.set(Trip::Header);
        self.allowance
            .set(self.limits.max_header_bytes.saturating_add(HEADER_SLACK));
    }

    /// The next reads are an entry's data, which the stream bound alone limits.
    pub(crate) fn data(&self) {
        self.allowance.set(u64::MAX);
    }

    /// The next reads are what follows the end-of-archive marker.
    pub(crate) fn trailer(&self) {
        self.mode.set(Trip::Trailer);
        self.allowance.set(MAX_TRAILER);
    }

    /// The limit that made the reader fail, if one did.
    pub(crate) fn tripped(&self) -> Option<LimitError> {
        self.tripped.get().map(|trip| match trip {
            Trip::Header => LimitError::Header {
                limit: self.limits.max_header_bytes,
            },
            Trip::Stream => LimitError::Stream {
                limit: self.limits.max_stream_bytes(),
            },
            Trip::Trailer => LimitError::Trailer,
        })
    }
}

/// A reader that fails once it has read what its [`Guard`] allows.
pub(crate) struct Guarded<R> {
    inner: R,
    guard: Rc<Guard>,
    /// A byte read to tell the end of the stream from more than allowed.
    probed: Option<u8>,
}

impl<R: Read> Guarded<R> {
    pub(crate) fn new(inner: R, guard: Rc<Guard>) -> Guarded<R> {
        Guarded {
            inner,
            guard,
            probed: None,
        }
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let guard = &self.guard;
        let allowance = guard.allowance.get();
        let stream_left = guard
            .limits
            .max_stream_bytes()
            .saturating_sub(guard.total.get());
        let room = allowance.min(stream_left);
        if buf.is_empty() {
            return Ok(0);
        }
        if room == 0 {
            // Only more data than allowed is an error: probe for one byte.
            if self.probed.is_none() {
                let mut probe = [0u8; 1];
                if self.inner.read(&mut probe)? == 0 {
                    return Ok(0);
                }
                self.probed = Some(probe[0]);
            }
            let trip = if stream_left == 0 {
                Trip::Stream
            } else {
                guard.mode.get()
            };
            guard.tripped.set(Some(trip));
            return Err(io::Error::other(
                "the tar stream passes a limit of the image store",
            ));
        }
        let n = match self.probed.take() {
            Some(byte) => {
                buf[0] = byte;
                1
            }
            None => {
                let len = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                self.inner.read(&mut buf[..len])?
            }
        };
        guard.allowance.set(allowance.saturating_sub(n as u64));
        guard.total.set(guard.total.get() + n as u64);
        Ok(n)
    }
}

/// The entries of a tar stream read through a [`Guarded`] reader: the
/// headers before each entry are held to the guard's header allowance, its
/// data to the stream bound alone, and the entries to `max` in number.
pub(crate) struct GuardedEntries<'a, R: 'a + Read> {
    entries: tar::Entries<'a, R>,
    guard: Rc<Guard>,
    count: u64,
    max: u64,
}

impl<'a, R: Read> GuardedEntries<'a, R> {
    pub(crate) fn new(entries: tar::Entries<'a, R>, guard: Rc<Guard>, max: u64) -> Self {
        GuardedEntries {
            entries,
            guard,
            count: 0,
            max,
        }
    }

    /// The next entry, or `None` at the end of the archive; `read_err` turns
    /// a failed read into the caller's error.
    pub(crate) fn next_entry<E: From<LimitError>>(
        &mut self,
        read_err: impl FnOnce(io::Error) -> E,
    ) -> Result<Option<tar::Entry<'a, R>>, E> {
        self.guard.headers();
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        let entry = entry.map_err(read_err)?;
        self.guard.data();
        self.count += 1;
        if self.count > self.max {
            return Err(LimitError::Entries { limit: self.max }.into());
        }
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("100M"), Some(100 << 20));
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999999T"), None);
    }

    #[test]
    fn a_guarded_reader_stops_at_its_allowance_and_says_which() {
        let limits = Limits {
            max_header_bytes: 100,
            ..Limits::default()
        };
        let guard = Guard::new(limits);
        let data = vec![7u8; 10_000];
        let mut reader = Guarded::new(&data[..], guard.clone());
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).is_err());
        assert_eq!(out.len() as u64, 100 + HEADER_SLACK);
        assert_eq!(guard.tripped(), Some(LimitError::Header { limit: 100 }));

        guard.data();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(out.len() + rest.len(), data.len());
    }

    #[test]
    fn a_stream_ends_within_its_allowance_without_error() {
        let guard = Guard::new(Limits::default());
        let mut reader = Guarded::new(&[1u8; 10][..], guard.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(guard.tripped(), None);
    }
}
