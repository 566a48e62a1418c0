//! The client's end of hulld's socket, written without raising SIGPIPE.
//!
//! The `hull` CLI restores SIGPIPE's default action so that `hull … | head`
//! ends quietly, but a write to a Unix socket whose peer has gone raises it
//! too when it is a `writev`, as hyper's are: hulld refusing an upload
//! mid-stream (`load` past the size cap) would kill the CLI before it could
//! read hulld's answer. The same holds for the TCP socket under a cloud's
//! TLS, which a listener closes after refusing an upload early (over
//! quota). Writes here use `sendmsg(MSG_NOSIGNAL)`, so a closed peer is an
//! `EPIPE` error instead.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected stream socket of tokio's: what [`QuietStream`] needs of it.
pub(super) trait StreamSocket: AsyncRead + AsyncWrite + AsRawFd + Unpin {
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

macro_rules! stream_socket {
    ($stream:ty) => {
        impl StreamSocket for $stream {
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$stream>::try_io(self, interest, f)
            }
        }
    };
}
stream_socket!(UnixStream);
stream_socket!(TcpStream);

/// A connected stream whose writes never raise SIGPIPE.
pub(super) struct QuietStream<S>(S);

impl<S: StreamSocket> QuietStream<S> {
    pub(super) fn new(stream: S) -> Self {
        Self(stream)
    }
}

impl<S: StreamSocket> AsyncRead for QuietStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: StreamSocket> AsyncWrite for QuietStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = &self.get_mut().0;
        loop {
            ready!(stream.poll_write_ready(cx))?;
            let sent = stream.try_io(Interest::WRITABLE, || send(stream.as_raw_fd(), bufs));
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// One `sendmsg` of `bufs` that reports a gone peer as `EPIPE`, not SIGPIPE.
fn send(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix; sendmsg only reads it.
    message.msg_iov = bufs.as_ptr().cast_mut().cast();
    message.msg_iovlen = bufs.len().min(IOV_MAX);
    // SAFETY: `fd` is the stream's open descriptor and `message` points at
    // `bufs`, which outlive the call.
    let n = unsafe { libc::sendmsg(fd, &message, libc::MSG_NOSIGNAL) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Linux's limit on the buffers of one `sendmsg`.
const IOV_MAX: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Whether SIGPIPE is pending on this thread after `write` ran with it
    /// blocked: a raised SIGPIPE waits there instead of acting, so the test
    /// sees it without changing the process's disposition.
    fn raises_sigpipe(write: impl FnOnce()) -> bool {
        // SAFETY: plain signal-set manipulation on local sets; the mask is
        // this thread's own and restored before returning.
        unsafe {
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
            write();
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            let raised = libc::sigismember(&pending, libc::SIGPIPE) == 1;
            if raised {
                // Consume it, so that unblocking does not deliver it.
                let mut signal = 0;
                libc::sigwait(&pipe, &mut signal);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            raised
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_write_to_a_closed_peer_is_an_error_not_a_signal() {
        let runtime = runtime();
        let mut error = None;
        let raised = raises_sigpipe(|| {
            runtime.block_on(async {
                let (ours, theirs) = UnixStream::pair().unwrap();
                drop(theirs);
                let mut quiet = QuietStream::new(ours);
                let bufs = [IoSlice::new(b"after "), IoSlice::new(b"the peer left")];
                error = quiet.write_vectored(&bufs).await.err();
            })
        });
        assert!(!raised, "the write raised SIGPIPE");
        assert_eq!(error.unwrap().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_plain_unix_stream_vectored_write_raises_sigpipe() {
        // The reason for QuietStream: without it the same write signals.
        let runtime = runtime();
        let raised = raises_sigpipe(|| {
            runtime.block_on(async {
                let (mut ours, theirs) = UnixStream::pair().unwrap();
                drop(theirs);
                // hyper writes vectored, and tokio's vectored write is writev.
                let bufs = [IoSlice::new(b"after "), IoSlice::new(b"the peer left")];
                let _ = ours.write_vectored(&bufs).await;
            })
        });
        assert!(raised);
    }
}
