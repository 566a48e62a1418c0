//! Detach keys: the key sequence (ctrl-p ctrl-q unless the client names
//! another) that an attached client types to leave a container's or an
//! exec's stdin without ending it. Docker watches the client's input for
//! it, holds back what might begin it, and closes the connection once it
//! is complete.

use bytes::Bytes;

/// Docker's sequence when the client names none.
pub(super) const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";
/// A sequence longer than this is refused: it bounds what is held back.
const MAX_KEYS: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum DetachKeysError {
    #[error("Invalid detach keys ({0}) provided")]
    Invalid(String),
}

/// Parses docker's notation: keys by comma, each a character or `ctrl-X`
/// (X one of `a`–`z`, `@`, `[`, `\`, `]`, `^`, `_`). Empty means the default.
pub(super) fn parse(text: &str) -> Result<Vec<u8>, DetachKeysError> {
    let text = if text.is_empty() {
        DEFAULT_DETACH_KEYS
    } else {
        text
    };
    let invalid = || DetachKeysError::Invalid(text.to_owned());
    let mut keys = Vec::new();
    for key in text.split(',') {
        let byte = match key.strip_prefix("ctrl-") {
            Some(rest) if rest.len() == 1 => match rest.as_bytes()[0] {
                c @ b'a'..=b'z' => c - b'a' + 1,
                b'@' => 0,
                c @ b'['..=b'_' => c - b'[' + 27,
                _ => return Err(invalid()),
            },
            _ if key.len() == 1 => key.as_bytes()[0],
            _ => return Err(invalid()),
        };
        keys.push(byte);
    }
    if keys.len() > MAX_KEYS {
        return Err(invalid());
    }
    Ok(keys)
}

/// What the client's input holds once the sequence is watched for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Input {
    /// Bytes for the process (perhaps none: a sequence begun).
    Data(Bytes),
    /// The sequence was typed: the bytes before it, then detach.
    Detach(Bytes),
}

/// Watches the client's input for the sequence across reads.
pub(super) struct DetachWatch {
    keys: Vec<u8>,
    /// How many of the keys the input's last bytes matched.
    matched: usize,
}

impl DetachWatch {
    pub(super) fn new(keys: Vec<u8>) -> Self {
        Self { keys, matched: 0 }
    }

    /// The bytes of `chunk` to pass on, holding back a sequence begun.
    pub(super) fn filter(&mut self, chunk: &[u8]) -> Input {
        let mut out = Vec::with_capacity(chunk.len() + self.matched);
        for &byte in chunk {
            if self.keys.is_empty() {
                out.push(byte);
                continue;
            }
            if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return Input::Detach(Bytes::from(out));
                }
                continue;
            }
            // A broken sequence was typed for the process after all.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if byte == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return Input::Detach(Bytes::from(out));
                }
            } else {
                out.push(byte);
            }
        }
        Input::Data(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_notation_parses_and_bad_keys_are_refused() {
        assert_eq!(parse("").unwrap(), vec![16, 17]);
        assert_eq!(parse("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse("ctrl-@,ctrl-[,ctrl-_,x").unwrap(),
            vec![0, 27, 31, b'x']
        );
        let long = ["a"; 17].join(",");
        for bad in ["ctrl-", "ctrl-pp", "ctrl-1", "ab", ",", &long] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sequence_is_held_back_across_reads_and_detaches() {
        let mut watch = DetachWatch::new(parse("").unwrap());
        assert_eq!(
            watch.filter(b"ab\x10"),
            Input::Data(Bytes::from_static(b"ab"))
        );
        assert_eq!(watch.filter(b"\x11tail"), Input::Detach(Bytes::new()));
        // A begun sequence broken off is passed on whole.
        let mut watch = DetachWatch::new(parse("").unwrap());
        assert_eq!(
            watch.filter(b"\x10x"),
            Input::Data(Bytes::from_static(b"\x10x"))
        );
        assert_eq!(
            watch.filter(b"\x10\x10\x11"),
            Input::Detach(Bytes::from_static(b"\x10"))
        );
        let mut single = DetachWatch::new(parse("ctrl-p").unwrap());
        assert_eq!(
            single.filter(b"hi\x10more"),
            Input::Detach(Bytes::from_static(b"hi"))
        );
    }
}
