//! Framing: a 9-byte header (kind, channel, payload length) then the payload.

use std::io::{self, Read, Write};

/// Header bytes: kind (u8), channel (u32 LE), payload length (u32 LE).
pub const HEADER_LEN: usize = 9;

/// Largest payload accepted; a larger length means a corrupt or hostile peer.
pub const MAX_PAYLOAD: u32 = 1 << 20;

/// What a frame carries; decides how `channel` and the payload are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Handshake, JSON [`crate::Hello`]; channel 0. On a reconnection the
    /// host's comes first and the agent's follows [`crate::RESYNC`].
    Hello = 1,
    /// JSON [`crate::Request`]; channel is the request id.
    Request = 2,
    /// JSON [`crate::Response`]; channel is the id of the request answered.
    Response = 3,
    /// JSON [`crate::Event`]; channel 0.
    Event = 4,
    /// Raw stdio bytes; channel is the stream id.
    Data = 5,
    /// The sender will write no more to the stream named by channel.
    Eof = 6,
    /// The receiver of a stream grants the sender more bytes: payload is a u32 LE.
    Credit = 7,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Request,
            3 => Self::Response,
            4 => Self::Event,
            5 => Self::Data,
            6 => Self::Eof,
            7 => Self::Credit,
            _ => return None,
        })
    }
}

/// Errors of reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer sent a kind byte this version does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The declared payload is larger than [`MAX_PAYLOAD`].
    #[error("frame payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u32),
    /// The stream ended inside a frame.
    #[error("the channel closed in the middle of a frame")]
    Truncated,
    /// A credit frame whose payload is not 4 bytes.
    #[error("malformed credit frame of {0} bytes")]
    BadCredit(usize),
    /// A JSON payload that does not decode as the expected message.
    #[error("malformed {kind:?} frame")]
    BadJson {
        kind: FrameKind,
        #[source]
        source: serde_json::Error,
    },
    /// Reading from or writing to the channel failed.
    #[error("control channel I/O failed")]
    Io(#[from] io::Error),
}

/// One frame of the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub channel: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame whose payload is `message` as JSON.
    pub fn json<T: serde::Serialize>(kind: FrameKind, channel: u32, message: &T) -> Self {
        let payload = serde_json::to_vec(message).expect("protocol messages always serialize");
        Self {
            kind,
            channel,
            payload,
        }
    }

    pub fn data(stream: u32, bytes: &[u8]) -> Self {
        Self {
            kind: FrameKind::Data,
            channel: stream,
            payload: bytes.to_vec(),
        }
    }

    pub fn eof(stream: u32) -> Self {
        Self {
            kind: FrameKind::Eof,
            channel: stream,
            payload: Vec::new(),
        }
    }

    pub fn credit(stream: u32, bytes: u32) -> Self {
        Self {
            kind: FrameKind::Credit,
            channel: stream,
            payload: bytes.to_le_bytes().to_vec(),
        }
    }

    /// Decodes the JSON payload.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, FrameError> {
        serde_json::from_slice(&self.payload).map_err(|source| FrameError::BadJson {
            kind: self.kind,
            source,
        })
    }

    /// The bytes granted by a credit frame.
    pub fn credit_bytes(&self) -> Result<u32, FrameError> {
        let bytes: [u8; 4] = self
            .payload
            .as_slice()
            .try_into()
            .map_err(|_| FrameError::BadCredit(self.payload.len()))?;
        Ok(u32::from_le_bytes(bytes))
    }

    /// The header for this frame.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut header = [0u8; HEADER_LEN];
        header[0] = self.kind as u8;
        header[1..5].copy_from_slice(&self.channel.to_le_bytes());
        let len = u32::try_from(self.payload.len()).expect("payload fits u32");
        header[5..9].copy_from_slice(&len.to_le_bytes());
        header
    }

    /// Header and payload as one buffer, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.payload);
        out
    }

    /// Writes the frame with one `write_all`, so frames from several threads
    /// sharing a locked writer never interleave.
    pub fn write_to(&self, writer: &mut impl Write) -> Result<(), FrameError> {
        writer.write_all(&self.encode())?;
        Ok(())
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream between frames.
    pub fn read_from(reader: &mut impl Read) -> Result<Option<Self>, FrameError> {
        let mut header = [0u8; HEADER_LEN];
        match read_full(reader, &mut header)? {
            0 => return Ok(None),
            HEADER_LEN => {}
            _ => return Err(FrameError::Truncated),
        }
        let (kind, channel, len) = parse_header(&header)?;
        let mut payload = vec![0u8; len as usize];
        if read_full(reader, &mut payload)? != payload.len() {
            return Err(FrameError::Truncated);
        }
        Ok(Some(Self {
            kind,
            channel,
            payload,
        }))
    }
}

/// Validates a header and returns its kind, channel and payload length.
pub fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(FrameKind, u32, u32), FrameError> {
    let kind = FrameKind::from_byte(header[0]).ok_or(FrameError::UnknownKind(header[0]))?;
    let channel = u32::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok((kind, channel, len))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Incremental decoder for callers that read the channel in arbitrary chunks
/// (non-blocking or async readers).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the channel.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Takes the next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.buffer.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let (kind, channel, len) = parse_header(header)?;
        let end = HEADER_LEN + len as usize;
        if self.buffer.len() < end {
            return Ok(None);
        }
        let payload = self.buffer[HEADER_LEN..end].to_vec();
        self.buffer.drain(..end);
        Ok(Some(Frame {
            kind,
            channel,
            payload,
        }))
    }

    /// Bytes held that do not yet form a frame.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_strategy() -> impl Strategy<Value = FrameKind> {
        (1u8..=7).prop_map(|b| FrameKind::from_byte(b).unwrap())
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        (
            kind_strategy(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..2048),
        )
            .prop_map(|(kind, channel, payload)| Frame {
                kind,
                channel,
                payload,
            })
    }

    proptest! {
        #[test]
        fn frames_survive_a_round_trip_through_a_stream(frames in proptest::collection::vec(frame_strategy(), 0..16)) {
            let mut wire = Vec::new();
            for frame in &frames {
                frame.write_to(&mut wire).unwrap();
            }
            let mut reader = wire.as_slice();
            let mut decoded = Vec::new();
            while let Some(frame) = Frame::read_from(&mut reader).unwrap() {
                decoded.push(frame);
            }
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn decoder_reassembles_frames_from_any_chunking(
            frames in proptest::collection::vec(frame_strategy(), 1..8),
            chunk in 1usize..64,
        ) {
            let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
            let mut decoder = FrameDecoder::new();
            let mut decoded = Vec::new();
            for piece in wire.chunks(chunk) {
                decoder.extend(piece);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert_eq!(decoded, frames);
            prop_assert_eq!(decoder.pending(), 0);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = FrameDecoder::new();
            decoder.extend(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
            let _ = Frame::read_from(&mut bytes.as_slice());
        }
    }

    #[test]
    fn oversized_payload_is_rejected_before_allocating() {
        let mut header = [0u8; HEADER_LEN];
        header[0] = FrameKind::Data as u8;
        header[5..9].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        let err = Frame::read_from(&mut header.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(n) if n == MAX_PAYLOAD + 1));
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let header = [99u8, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            Frame::read_from(&mut header.as_slice()),
            Err(FrameError::UnknownKind(99))
        ));
    }

    #[test]
    fn stream_cut_inside_a_frame_is_truncated_not_eof() {
        let wire = Frame::data(3, b"hello").encode();
        for cut in 1..wire.len() {
            let err = Frame::read_from(&mut &wire[..cut]).unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "cut at {cut}");
        }
        assert!(Frame::read_from(&mut &wire[..0]).unwrap().is_none());
    }

    #[test]
    fn credit_frames_carry_a_u32() {
        let frame = Frame::credit(7, 4096);
        assert_eq!(frame.credit_bytes().unwrap(), 4096);
        let bad = Frame {
            kind: FrameKind::Credit,
            channel: 7,
            payload: vec![1, 2],
        };
        assert!(matches!(bad.credit_bytes(), Err(FrameError::BadCredit(2))));
    }
}
