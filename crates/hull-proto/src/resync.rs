//! Re-attaching a host to a running agent: the marker that ends the stale
//! bytes of a reconnected channel.
//!
//! When hulld restarts it connects to the control socket again and speaks
//! first, with its `Hello`. The host→agent direction starts clean, but the
//! agent→host direction may first deliver frames the agent wrote before it
//! noticed the new host, the first of them perhaps cut in half. The agent
//! answers the `Hello` with [`RESYNC`] followed by its own `Hello` frame,
//! written as one piece, so the host discards everything it reads before
//! the marker.

/// Precedes the agent's `Hello` on a reconnection. The leading NUL is no
/// frame kind, so a host that reads it as a frame header fails loudly.
pub const RESYNC: [u8; 16] = *b"\0HULL-RESYNC-v1\0";

/// Finds the end of [`RESYNC`] in bytes read in pieces of any size.
#[derive(Debug, Default)]
pub struct ResyncScanner {
    /// The last bytes seen, which may hold the start of the marker.
    tail: Vec<u8>,
}

impl ResyncScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes read. Once the marker is complete, returns the
    /// bytes that followed it in this piece (the start of the agent's
    /// `Hello` frame); until then, `None`. Keeps fewer than 16 bytes.
    pub fn scan(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        self.tail.extend_from_slice(bytes);
        if let Some(end) = find_resync(&self.tail) {
            let rest = self.tail.split_off(end);
            self.tail.clear();
            return Some(rest);
        }
        let keep = self.tail.len().min(RESYNC.len() - 1);
        self.tail.drain(..self.tail.len() - keep);
        None
    }
}

/// The offset just past the first [`RESYNC`] in `bytes`.
pub fn find_resync(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(RESYNC.len())
        .position(|window| window == RESYNC)
        .map(|start| start + RESYNC.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frame, FrameKind, Hello};
    use proptest::prelude::*;

    fn hello_frame() -> Vec<u8> {
        let hello = Hello {
            version: crate::PROTOCOL_VERSION,
            software: "hull-agent test".into(),
        };
        Frame::json(FrameKind::Hello, 0, &hello).encode()
    }

    proptest! {
        #[test]
        fn the_hello_after_the_marker_is_found_behind_any_garbage_in_any_pieces(
            garbage in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40,
        ) {
            prop_assume!(find_resync(&garbage).is_none());
            let mut wire = garbage.clone();
            wire.extend_from_slice(&RESYNC);
            wire.extend_from_slice(&hello_frame());
            let mut scanner = ResyncScanner::new();
            let mut after = None;
            let mut pieces = wire.chunks(chunk);
            for piece in pieces.by_ref() {
                if let Some(rest) = scanner.scan(piece) {
                    after = Some(rest);
                    break;
                }
            }
            let mut after = after.expect("the marker was found");
            after.extend(pieces.flatten());
            prop_assert_eq!(after, hello_frame());
        }
    }

    #[test]
    fn a_partial_marker_in_the_garbage_does_not_hide_the_real_one() {
        let mut wire = RESYNC[..9].to_vec();
        wire.extend_from_slice(&RESYNC);
        wire.extend_from_slice(b"rest");
        let mut scanner = ResyncScanner::new();
        let found: Vec<_> = wire.iter().filter_map(|b| scanner.scan(&[*b])).collect();
        assert_eq!(found, vec![Vec::<u8>::new()]);
        assert_eq!(find_resync(&wire), Some(9 + RESYNC.len()));
    }

    #[test]
    fn the_marker_is_not_a_frame_header() {
        let header: [u8; crate::HEADER_LEN] = RESYNC[..crate::HEADER_LEN].try_into().unwrap();
        assert!(crate::parse_header(&header).is_err());
    }
}
