//! A layer's check (decompression, tar bounds, diff_id) run beside its
//! download on a blocking thread, fed the very chunks that are hashed and
//! written. The pull's commit then has nothing left to read: the check's
//! time hides behind the network's instead of following it.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::layer::{self, LayerInfo};
use crate::limits::Limits;

/// Chunks in flight between the download and the check: a few hundred KiB,
/// so a slower check holds the download back instead of piling it up.
const QUEUE: usize = 16;

/// The check of one layer, started with its download.
pub(crate) struct StreamedCheck {
    chunks: Option<mpsc::Sender<Bytes>>,
    /// Bytes handed over so far.
    fed: u64,
    task: tokio::task::JoinHandle<Result<LayerInfo, layer::LayerError>>,
}

impl StreamedCheck {
    pub(crate) fn start(limits: Limits) -> StreamedCheck {
        let (tx, rx) = mpsc::channel(QUEUE);
        // The walk reads the tar stream to its end, so the whole blob
        // flows through: the download never waits on a reader gone early.
        let task = tokio::task::spawn_blocking(move || {
            let reader = ChunkReader {
                rx,
                current: Bytes::new(),
            };
            layer::inspect_pipelined(reader, &limits)
        });
        StreamedCheck {
            chunks: Some(tx),
            fed: 0,
            task,
        }
    }

    /// Hands the check the next chunk of the blob; waits while it is behind.
    pub(crate) async fn feed(&mut self, chunk: &Bytes) {
        if let Some(tx) = &self.chunks {
            if tx.send(chunk.clone()).await.is_err() {
                // The check ended early (a bad layer): the commit's own
                // check will name what is wrong.
                self.chunks = None;
            }
            self.fed += chunk.len() as u64;
        }
    }

    /// The blob starts over (the registry ignored `Range`): what the check
    /// read so far is void, so it is given up.
    pub(crate) fn abandon(&mut self) {
        self.chunks = None;
        self.task.abort();
    }

    /// The layer's facts, if the check saw all of its `size` bytes and
    /// passed; the commit checks the blob itself otherwise.
    pub(crate) async fn finish(mut self, size: u64) -> Option<LayerInfo> {
        let whole = self.chunks.take().is_some() && self.fed == size;
        let info = (&mut self.task).await.ok()?.ok()?;
        whole.then_some(info)
    }
}

impl Drop for StreamedCheck {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The blob's bytes, as the download receives them.
struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    async fn check_of(blob: &[u8], chunk: usize) -> Option<LayerInfo> {
        let mut check = StreamedCheck::start(Limits::default());
        for piece in blob.chunks(chunk) {
            check.feed(&Bytes::copy_from_slice(piece)).await;
        }
        check.finish(blob.len() as u64).await
    }

    #[tokio::test]
    async fn a_layer_checked_while_it_streams_tells_what_a_whole_read_does() {
        let blob = gzip(&testutil::layer(&[("a", b"hello"), ("b/c", &[7; 100_000])]));
        let whole = layer::inspect(&blob[..], &Limits::default()).unwrap();
        for chunk in [1, 7, 4096, blob.len()] {
            assert_eq!(check_of(&blob, chunk).await.as_ref(), Some(&whole));
        }
    }

    #[tokio::test]
    async fn a_bad_or_abandoned_layer_leaves_the_check_to_the_commit() {
        let mut blob = gzip(&testutil::layer(&[("a", &[1; 300_000])]));
        blob.truncate(blob.len() / 2);
        assert_eq!(check_of(&blob, 1000).await, None);
        assert_eq!(check_of(b"not a layer at all", 3).await, None);
        let good = gzip(&testutil::layer(&[("a", b"x")]));
        let mut check = StreamedCheck::start(Limits::default());
        check.feed(&Bytes::copy_from_slice(&good)).await;
        check.abandon();
        assert_eq!(check.finish(good.len() as u64).await, None);
        // A check that saw less than the whole blob tells nothing.
        let mut check = StreamedCheck::start(Limits::default());
        check.feed(&Bytes::copy_from_slice(&good)).await;
        assert_eq!(check.finish(good.len() as u64 + 1).await, None);
        let check = StreamedCheck::start(Limits::default());
        assert_eq!(check.finish(good.len() as u64).await, None);
    }
}
