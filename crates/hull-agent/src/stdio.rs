//! Moving a process's stdio, or an archive, over the channel, within the
//! flow-control windows.

use std::io::{self, Read, Write};

use hull_proto::{Frame, MAX_DATA_CHUNK};

use crate::channel::Channel;
use crate::flow::{CreditWindow, InputQueue};

/// Sends what `source` yields as `Data` frames on `stream`, never more than
/// the host granted, then `Eof`. A pty master reads EIO once the slave side
/// is closed: that is its end of file.
pub fn pump_output(mut source: impl Read, stream: u32, window: &CreditWindow, channel: &Channel) {
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    while let Some(allowed) = window.acquire(buf.len()) {
        match source.read(&mut buf[..allowed]) {
            Ok(0) => break,
            Ok(n) => channel.send_with(|| {
                // Taken with the channel held: a window reset for a new
                // host then counts exactly the data written after it.
                window.consume(n);
                Frame::data(stream, &buf[..n])
            }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                crate::log!("cannot read output stream {stream}: {e}");
                break;
            }
        }
    }
    channel.send(&Frame::eof(stream));
}

/// Writes queued input to `sink`, granting the host credit for every byte
/// taken off the queue (also when the process no longer reads). Returns at
/// the end of input; the caller then closes the pipe (or, for a pty, not).
pub fn pump_input(queue: &InputQueue, mut sink: impl Write, stream: u32, channel: &Channel) {
    let mut broken = false;
    while let Some(chunk) = queue.pop() {
        if !broken {
            if let Err(e) = sink.write_all(&chunk) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    crate::log!("cannot write input stream {stream}: {e}");
                }
                broken = true;
            }
        }
        let granted = u32::try_from(chunk.len()).expect("chunks are frame payloads");
        channel.send(&Frame::credit(stream, granted));
    }
}

/// An output stream as a `Write`: each write sends what the host's credit
/// allows, at most one frame. Buffer it to send full frames.
pub struct StreamWriter<'a> {
    pub stream: u32,
    pub window: &'a CreditWindow,
    pub channel: &'a Channel,
}

impl Write for StreamWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let max = buf.len().min(MAX_DATA_CHUNK);
        let Some(allowed) = self.window.acquire(max) else {
            let message = format!("stream {} was closed", self.stream);
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, message));
        };
        self.channel
            .try_send_with(|| {
                self.window.consume(allowed);
                Frame::data(self.stream, &buf[..allowed])
            })
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
        Ok(allowed)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An input stream as a `Read`, crediting the host for every chunk taken;
/// it reads end of file at the stream's `Eof`.
pub struct StreamReader<'a> {
    stream: u32,
    queue: &'a InputQueue,
    channel: &'a Channel,
    chunk: Vec<u8>,
    taken: usize,
}

impl<'a> StreamReader<'a> {
    pub fn new(stream: u32, queue: &'a InputQueue, channel: &'a Channel) -> Self {
        Self {
            stream,
            queue,
            channel,
            chunk: Vec::new(),
            taken: 0,
        }
    }

    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let chunk = self.queue.pop()?;
        let granted = u32::try_from(chunk.len()).expect("chunks are frame payloads");
        self.channel.send(&Frame::credit(self.stream, granted));
        Some(chunk)
    }

    /// Takes, and credits, whatever the host still sends until its `Eof`,
    /// so it is never left waiting for credit.
    pub fn drain(&mut self) {
        while self.next_chunk().is_some() {}
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.taken == self.chunk.len() {
            let Some(chunk) = self.next_chunk() else {
                return Ok(0);
            };
            (self.chunk, self.taken) = (chunk, 0);
        }
        let n = buf.len().min(self.chunk.len() - self.taken);
        buf[..n].copy_from_slice(&self.chunk[self.taken..self.taken + n]);
        self.taken += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Wire;
    use hull_proto::{FrameKind, INITIAL_WINDOW};
    use std::sync::Arc;

    #[test]
    fn output_is_chunked_within_credit_and_ends_with_eof() {
        let wire = Wire::default();
        let channel = Channel::new(wire.clone());
        let window = CreditWindow::new(INITIAL_WINDOW);
        let data = vec![7u8; MAX_DATA_CHUNK + 10];
        pump_output(data.as_slice(), 3, &window, &channel);
        let frames = wire.frames();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].payload.len(), MAX_DATA_CHUNK);
        assert_eq!(frames[1].payload.len(), 10);
        assert_eq!(frames[2], Frame::eof(3));
        assert_eq!(
            window.available(),
            u64::from(INITIAL_WINDOW) - data.len() as u64
        );
    }

    #[test]
    fn output_stops_at_the_window_until_credit_arrives() {
        let wire = Wire::default();
        let channel = Channel::new(wire.clone());
        let window = Arc::new(CreditWindow::new(4));
        let pump = {
            let (window, channel) = (window.clone(), channel.clone());
            std::thread::spawn(move || pump_output(&b"abcdefgh"[..], 1, &window, &channel))
        };
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(wire.frames(), vec![Frame::data(1, b"abcd")]);
        window.grant(100);
        pump.join().unwrap();
        let frames = wire.frames();
        assert_eq!(frames[1], Frame::data(1, b"efgh"));
        assert_eq!(frames[2].kind, FrameKind::Eof);
    }

    #[test]
    fn input_is_written_and_credited_back() {
        let wire = Wire::default();
        let channel = Channel::new(wire.clone());
        let queue = InputQueue::new();
        queue.push(b"hello ".to_vec());
        queue.push(b"world".to_vec());
        queue.finish();
        let mut sink = Vec::new();
        pump_input(&queue, &mut sink, 5, &channel);
        assert_eq!(sink, b"hello world");
        assert_eq!(
            wire.frames(),
            vec![Frame::credit(5, 6), Frame::credit(5, 5)]
        );
    }

    #[test]
    fn a_stream_writer_sends_no_more_than_the_credit_per_write() {
        let wire = Wire::default();
        let channel = Channel::new(wire.clone());
        let window = CreditWindow::new(5);
        let mut writer = StreamWriter {
            stream: 4,
            window: &window,
            channel: &channel,
        };
        assert_eq!(writer.write(b"abcdefgh").unwrap(), 5);
        window.close();
        let err = writer.write(b"fgh").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(wire.frames(), vec![Frame::data(4, b"abcde")]);
    }

    #[test]
    fn a_stream_reader_reads_across_chunks_and_credits_each() {
        let wire = Wire::default();
        let channel = Channel::new(wire.clone());
        let queue = InputQueue::new();
        for chunk in [&b"abc"[..], b"de", b"fg"] {
            queue.push(chunk.to_vec());
        }
        queue.finish();
        let mut reader = StreamReader::new(6, &queue, &channel);
        let mut first = [0u8; 4];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"abcd");
        reader.drain();
        assert_eq!(reader.read(&mut first).unwrap(), 1);
        assert_eq!(reader.read(&mut first).unwrap(), 0);
        let credits = [
            Frame::credit(6, 3),
            Frame::credit(6, 2),
            Frame::credit(6, 2),
        ];
        assert_eq!(wire.frames(), credits);
    }

    #[test]
    fn input_to_a_closed_pipe_is_still_credited() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let wire = Wire::default();
        let queue = InputQueue::new();
        queue.push(b"abc".to_vec());
        queue.push(b"de".to_vec());
        queue.finish();
        pump_input(&queue, Closed, 9, &Channel::new(wire.clone()));
        assert_eq!(
            wire.frames(),
            vec![Frame::credit(9, 3), Frame::credit(9, 2)]
        );
    }
}
