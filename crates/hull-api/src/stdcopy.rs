//! Reading docker's multiplexed streams (`stdcopy`): each chunk of a
//! container's output behind an 8-byte header naming its stream and length.

use bytes::{Buf, Bytes, BytesMut};

/// The stream a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdin,
    Stdout,
    Stderr,
    /// Docker's `systemerr`: the daemon's own error, sent in the stream.
    SystemError,
}

#[derive(Debug, thiserror::Error)]
pub enum StdcopyError {
    #[error("the stream has a chunk of unknown kind {0}")]
    UnknownStream(u8),
}

/// Splits bytes, given as they arrive, into chunks.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole chunk, or `None` until more bytes arrive.
    pub fn next_chunk(&mut self) -> Result<Option<(Stream, Bytes)>, StdcopyError> {
        if self.buffer.len() < 8 {
            return Ok(None);
        }
        let stream = match self.buffer[0] {
            0 => Stream::Stdin,
            1 => Stream::Stdout,
            2 => Stream::Stderr,
            3 => Stream::SystemError,
            other => return Err(StdcopyError::UnknownStream(other)),
        };
        let length = u32::from_be_bytes([
            self.buffer[4],
            self.buffer[5],
            self.buffer[6],
            self.buffer[7],
        ]) as usize;
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        self.buffer.advance(8);
        Ok(Some((stream, self.buffer.split_to(length).freeze())))
    }

    /// Whether bytes of an unfinished chunk are left.
    pub fn has_partial_chunk(&self) -> bool {
        !self.buffer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![stream, 0, 0, 0];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn chunks_come_out_whatever_the_split_of_the_bytes() {
        let mut wire = frame(1, b"out\n");
        wire.extend(frame(2, b"err\n"));
        wire.extend(frame(1, b""));
        wire.extend(frame(1, &[7u8; 300]));
        for step in 1..wire.len() {
            let mut decoder = Decoder::default();
            let mut chunks = Vec::new();
            for piece in wire.chunks(step) {
                decoder.extend(piece);
                while let Some(chunk) = decoder.next_chunk().unwrap() {
                    chunks.push(chunk);
                }
            }
            assert!(!decoder.has_partial_chunk());
            assert_eq!(chunks.len(), 4, "split every {step} bytes");
            assert_eq!(chunks[0], (Stream::Stdout, Bytes::from_static(b"out\n")));
            assert_eq!(chunks[1], (Stream::Stderr, Bytes::from_static(b"err\n")));
            assert_eq!(chunks[3].1.len(), 300);
        }
    }

    #[test]
    fn an_unknown_stream_is_an_error() {
        let mut decoder = Decoder::default();
        decoder.extend(&frame(9, b"x"));
        assert!(decoder.next_chunk().is_err());
    }
}
