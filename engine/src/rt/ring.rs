//! A TCP connection driven through compio's ring directly: one receive and one send
//! operation at a time, each owning a buffer of this stream, polled in place.
//!
//! compio's own futures-io adapter (`compio::io::compat::AsyncStream`) costs more than the
//! exchanges it carries: it boxes a fresh future for every receive and send, allocates an
//! `io::Error` ("would block") each time its buffer runs dry, and clones wakers into an
//! array so three kinds of reader can share one operation. Profiled at 3,000 quotes/s it
//! was the largest single item of the engine's own CPU after the allocator (BENCHMARKS.md,
//! "Our own ring stream"). This stream keeps only what the engine needs:
//!
//! - **Reads** go into `rx`, a buffer the receive operation owns while it is in the ring;
//!   callers copy out of it (hyper's buffer is only lent for one call, so the kernel can
//!   never write into it directly). A receive that found the socket drained marks the next
//!   one `POLL_FIRST`, as compio's own sockets do, so the kernel arms a poll instead of
//!   trying a receive that would fail.
//! - **Writes** are copied into `tx` and a send is started at once, without waiting for a
//!   flush: the send enters the ring with the executor's next submission, and `poll_flush`
//!   only waits for it. A short send resubmits the rest.
//! - Every operation future is stored unboxed; dropping the stream cancels what is in
//!   flight, and compio keeps the buffers alive until the kernel is done with them.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use ::compio::buf::{BufResult, IntoInner, SetLen};
use ::compio::driver::op::{Recv, RecvFlags, Send, SendFlags, ShutdownSocket};
use ::compio::driver::{Extra, PollFirst, SharedFd, ToSharedFd};
use ::compio::runtime::{submit, Submit};

/// The socket as the ring operations name it.
type Fd = SharedFd<socket2::Socket>;

/// What one receive may fill. Seller answers and client requests are a few hundred bytes
/// to a few KiB; a larger message takes more than one receive.
const RX_CAPACITY: usize = 16 * 1024;

/// How much written data may wait behind a send in flight before writers are told to
/// wait. hyper writes a whole response at once and then flushes.
const TX_LIMIT: usize = 256 * 1024;

/// A compio TCP stream with futures-io's traits, for hyper, TLS and the line client.
pub struct RingStream {
    stream: ::compio::net::TcpStream,
    /// Received bytes not yet read: `rx[rx_pos..]`. Empty while a receive owns the buffer.
    rx: Vec<u8>,
    rx_pos: usize,
    receiving: Option<Submit<Recv<Vec<u8>, Fd>, Extra>>,
    /// The last receive left the socket empty: the next one polls first.
    drained: bool,
    /// Bytes written and not yet handed to a send.
    tx: Vec<u8>,
    /// A spare buffer: the one the last finished send gave back.
    tx_spare: Vec<u8>,
    sending: Option<Submit<Send<Vec<u8>, Fd>>>,
    shutting_down: Option<Submit<ShutdownSocket<Fd>>>,
    /// A send failed: every later write and flush reports it.
    broken: Option<io::ErrorKind>,
}

impl RingStream {
    /// Wraps a connected compio stream.
    pub fn new(stream: ::compio::net::TcpStream) -> RingStream {
        RingStream {
            stream,
            rx: Vec::new(),
            rx_pos: 0,
            receiving: None,
            drained: false,
            tx: Vec::new(),
            tx_spare: Vec::new(),
            sending: None,
            shutting_down: None,
            broken: None,
        }
    }

    /// The compio stream, for socket options.
    pub fn get_ref(&self) -> &::compio::net::TcpStream {
        &self.stream
    }

    /// The socket, as a ring operation holds it (a reference-counted handle).
    fn fd(&self) -> Fd {
        self.stream.to_shared_fd()
    }

    /// The error of a send that failed earlier, which every later write reports.
    fn broken(&self) -> io::Result<()> {
        match self.broken {
            Some(kind) => Err(io::Error::new(kind, "an earlier send failed")),
            None => Ok(()),
        }
    }

    /// Copies buffered bytes into `dst`, receiving more first if none are buffered.
    /// `Ok(0)` is the end of the stream (or an empty `dst`).
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        dst_len: usize,
        copy: impl FnOnce(&[u8]) -> usize,
    ) -> Poll<io::Result<usize>> {
        if dst_len == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.rx_pos >= self.rx.len() {
            ready!(self.poll_receive(cx))?;
        }
        let available = self.rx.get(self.rx_pos..).unwrap_or_default();
        let n = copy(available);
        self.rx_pos = self.rx_pos.saturating_add(n);
        Poll::Ready(Ok(n))
    }

    /// Runs one receive into `rx` (starting it if none is in flight). On return with
    /// `Ok`, `rx[rx_pos..]` holds what arrived; empty means the peer closed.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let op = match &mut self.receiving {
            Some(op) => op,
            None => {
                let mut buffer = std::mem::take(&mut self.rx);
                buffer.clear();
                buffer.reserve(RX_CAPACITY);
                let mut recv = Recv::new(self.fd(), buffer, RecvFlags::empty());
                if self.drained {
                    recv.poll_first();
                }
                self.receiving.insert(submit(recv).with_extra())
            }
        };
        let (BufResult(result, recv), extra) = ready!(Pin::new(op).poll(cx));
        self.receiving = None;
        let mut buffer = recv.into_inner();
        self.rx_pos = 0;
        self.drained = !extra.sock_nonempty().unwrap_or(true);
        let outcome = match result {
            Ok(n) => {
                let n = n.min(buffer.capacity());
                // SAFETY: the receive wrote `n` bytes at the start of the buffer's
                // allocation (a receive is handed the whole capacity of a buffer whose
                // length is zero), and `n` is at most the capacity.
                unsafe { buffer.advance_to(n) };
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.rx = buffer;
        Poll::Ready(outcome)
    }

    /// Drives the send in flight, if any, and starts the next one when `tx` holds bytes.
    /// Ready when nothing is left to send.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.broken()?;
            if let Some(op) = &mut self.sending {
                let BufResult(result, send) = ready!(Pin::new(op).poll(cx));
                self.sending = None;
                let mut buffer = send.into_inner();
                match result {
                    Ok(0) if !buffer.is_empty() => {
                        self.broken = Some(io::ErrorKind::WriteZero);
                        continue;
                    }
                    Ok(n) if n < buffer.len() => {
                        // A short send: the rest goes out before anything written since.
                        buffer.drain(..n);
                        buffer.append(&mut self.tx);
                        self.tx = buffer;
                    }
                    Ok(_) => {
                        buffer.clear();
                        self.tx_spare = buffer;
                    }
                    Err(e) => {
                        self.broken = Some(e.kind());
                        return Poll::Ready(Err(e));
                    }
                }
            }
            if self.tx.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let buffer = std::mem::replace(&mut self.tx, std::mem::take(&mut self.tx_spare));
            self.sending = Some(submit(Send::new(self.fd(), buffer, SendFlags::NOSIGNAL)));
        }
    }

    fn poll_write_from(&mut self, cx: &mut Context<'_>, src: &[u8]) -> Poll<io::Result<usize>> {
        if self.tx.len() >= TX_LIMIT {
            // Too much is waiting behind the send in flight: wait for it.
            ready!(self.poll_send(cx))?;
        }
        self.broken()?;
        self.tx.extend_from_slice(src);
        // Start the send now; its completion is collected by a later write or flush.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(src.len()))
    }

    fn poll_shutdown_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        if self.shutting_down.is_none() {
            let shutdown = ShutdownSocket::new(self.fd(), Shutdown::Write);
            self.shutting_down = Some(submit(shutdown));
        }
        let Some(op) = &mut self.shutting_down else {
            return Poll::Ready(Ok(()));
        };
        let BufResult(result, _) = ready!(Pin::new(op).poll(cx));
        // A finished operation must not be polled again: a second close starts another
        // shutdown, which is harmless.
        self.shutting_down = None;
        match result {
            Ok(_) => Poll::Ready(Ok(())),
            // The peer is gone already: nothing left to shut.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl futures_util::io::AsyncRead for RingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let len = buf.len();
        self.get_mut().poll_read_into(cx, len, |data| {
            let n = data.len().min(buf.len());
            if let (Some(dst), Some(src)) = (buf.get_mut(..n), data.get(..n)) {
                dst.copy_from_slice(src);
            }
            n
        })
    }
}

impl futures_util::io::AsyncWrite for RingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_write(cx)
    }
}

impl hyper::rt::Read for RingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let len = buf.remaining();
        self.get_mut()
            .poll_read_into(cx, len, |data| {
                let n = data.len().min(len);
                if let Some(src) = data.get(..n) {
                    buf.put_slice(src);
                }
                n
            })
            .map_ok(|_| ())
    }
}

impl hyper::rt::Write for RingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_from(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_shutdown_write(cx)
    }
}
