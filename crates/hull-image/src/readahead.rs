//! A reader whose source runs on a thread of its own, a few blocks ahead of
//! its consumer: a layer's decompression on one core while its tar stream
//! is hashed and parsed on another.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Bytes the source thread reads at a time.
const BLOCK: usize = 256 << 10;
/// Blocks it may run ahead: memory stays within about 1 MiB.
const AHEAD: usize = 4;

/// Reads what `open`'s reader yields, produced on another thread.
pub struct ReadAhead {
    blocks: Receiver<io::Result<Vec<u8>>>,
    /// Blocks read out, back to the source thread to be filled again: a
    /// fresh 256 KiB block each time cost a zeroing and its page faults on
    /// the thread that is a layer check's slowest.
    spent: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl ReadAhead {
    /// Starts a thread that opens the source (so that it need not be
    /// `Send`, only what opens it) and reads it to its end or first error.
    pub fn new<R, F>(open: F) -> io::Result<ReadAhead>
    where
        R: Read,
        F: FnOnce() -> io::Result<R> + Send + 'static,
    {
        let (tx, blocks) = mpsc::sync_channel(AHEAD);
        // Room for every block there can be: those queued, the one read
        // out and the one being filled.
        let (spent, reuse) = mpsc::sync_channel::<Vec<u8>>(AHEAD + 2);
        std::thread::Builder::new()
            .name("hull-readahead".into())
            .spawn(move || {
                let mut source = match open() {
                    Ok(source) => source,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    let mut block = match reuse.try_recv() {
                        Ok(mut block) => {
                            block.resize(BLOCK, 0);
                            block
                        }
                        Err(_) => vec![0u8; BLOCK],
                    };
                    let read = fill(&mut source, &mut block);
                    let end = !matches!(read, Ok(n) if n == BLOCK);
                    let sent = match read {
                        Ok(0) => true,
                        Ok(n) => {
                            block.truncate(n);
                            tx.send(Ok(block)).is_ok()
                        }
                        Err(e) => tx.send(Err(e)).is_ok(),
                    };
                    // Ends at the source's end, its error, or a consumer gone.
                    if end || !sent {
                        return;
                    }
                }
            })?;
        Ok(ReadAhead {
            blocks,
            spent,
            current: Vec::new(),
            at: 0,
        })
    }
}

/// Reads until `block` is full or the source ends; returns how much it read.
pub(crate) fn fill(source: &mut impl Read, block: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < block.len() {
        match source.read(&mut block[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.current.len() {
            match self.blocks.recv() {
                Ok(block) => {
                    let spent = std::mem::replace(&mut self.current, block?);
                    if spent.capacity() > 0 {
                        // Full only if the thread is gone: the block is dropped.
                        let _ = self.spent.try_send(spent);
                    }
                    self.at = 0;
                }
                // The source ended: the thread is gone.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_read_ahead_is_the_source_byte_for_byte() {
        for len in [0, 1, BLOCK - 1, BLOCK, 3 * BLOCK + 17] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let source = data.clone();
            let mut ahead = ReadAhead::new(move || Ok(io::Cursor::new(source))).unwrap();
            let mut out = Vec::new();
            ahead.read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{len} bytes");
        }
    }

    #[test]
    fn the_sources_error_reaches_the_reader() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(9);
                self.0 -= n;
                Ok(n)
            }
        }
        let mut ahead = ReadAhead::new(|| Ok(Failing(10))).unwrap();
        let err = ahead.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        let opened = ReadAhead::new(|| Err::<io::Empty, _>(io::Error::other("no source")));
        let err = opened.unwrap().read(&mut [0; 4]).unwrap_err();
        assert_eq!(err.to_string(), "no source");
    }
}
