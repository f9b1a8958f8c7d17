//! hyper's I/O traits over futures-io streams (glommio's `TcpStream`, or a TLS stream
//! over it).

use std::cell::RefCell;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Adapts a futures-io stream to `hyper::rt::Read` and `hyper::rt::Write`.
pub struct HyperIo<S> {
    inner: S,
}

impl<S> HyperIo<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        HyperIo { inner: stream }
    }

    /// The stream back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

thread_local! {
    /// One scratch buffer per thread. futures-io reads want an initialized slice and
    /// hyper hands out an uninitialized one; reading into this buffer and copying what
    /// arrived costs a copy of the bytes read, where zeroing hyper's buffer on every read
    /// would cost its whole length. One per thread suffices: a read never suspends while
    /// holding it.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let want = buf.remaining();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = want.min(scratch.len());
            let Some(dst) = scratch.get_mut(..len) else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(&mut self.inner).poll_read(cx, dst) {
                Poll::Ready(Ok(n)) => {
                    if let Some(got) = dst.get(..n) {
                        buf.put_slice(got);
                    }
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
    }
}

impl<S: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
