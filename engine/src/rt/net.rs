//! Sockets on the current core's backend: listen and accept, connect with a timeout,
//! TLS on a client connection, and hyper's I/O traits over all of them.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::io::{AsyncRead, AsyncWrite};
use hyper_util::rt::TokioIo;
use socket2::{Domain, Protocol, Socket, Type};

use super::{current, Backend};

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// A compio connection with futures-io's and hyper's traits (`ring.rs`).
type CompioStream = super::ring::RingStream;

/// A listening socket of this core.
pub enum TcpListener {
    /// On compio.
    Compio(::compio::net::TcpListener),
    /// On glommio.
    Glommio(::glommio::net::TcpListener),
    /// On tokio.
    Tokio(tokio::net::TcpListener),
}

impl TcpListener {
    /// Binds `addr` for this core with `SO_REUSEPORT` (every core binds the same address
    /// and the kernel spreads connections over them) and `SO_REUSEADDR`. The socket is
    /// built here, the same for every backend, and then handed to the backend.
    ///
    /// `SO_REUSEADDR` is what lets the engine restart on its address at once. Accepted
    /// connections inherit the listener's options, and the ones closed on the engine's
    /// side first (all of them after a crash or a stop under keep-alive load) linger in
    /// TIME_WAIT on this port for a minute. Linux lets a new socket bind next to a
    /// TIME_WAIT entry when both have `SO_REUSEADDR` (or both `SO_REUSEPORT`); the
    /// start-up check binds with `SO_REUSEADDR` only (`runtime::preflight`), so without
    /// it here every restart would be refused as "address in use" until those entries
    /// expire. It never lets two listeners share the port: a listening socket always
    /// conflicts unless both sides use `SO_REUSEPORT`.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        match current() {
            Backend::IoUring(_) => {
                socket.set_nonblocking(true)?;
                let std: std::net::TcpListener = socket.into();
                Ok(TcpListener::Compio(::compio::net::TcpListener::from_std(
                    std,
                )?))
            }
            Backend::Glommio => {
                let fd = socket.into_raw_fd();
                // SAFETY: `fd` is a bound, listening TCP socket that we own and give
                // away here; glommio takes ownership and closes it on drop. glommio
                // accepts a ready socket only through FromRawFd.
                let listener = unsafe { ::glommio::net::TcpListener::from_raw_fd(fd) };
                Ok(TcpListener::Glommio(listener))
            }
            Backend::Epoll => {
                socket.set_nonblocking(true)?;
                let std: std::net::TcpListener = socket.into();
                Ok(TcpListener::Tokio(tokio::net::TcpListener::from_std(std)?))
            }
        }
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        match self {
            TcpListener::Compio(l) => {
                let (s, _) = l.accept().await?;
                Ok(TcpStream::compio(s))
            }
            TcpListener::Glommio(l) => l
                .accept()
                .await
                .map(TcpStream::Glommio)
                .map_err(io::Error::from),
            TcpListener::Tokio(l) => l.accept().await.map(|(s, _)| TcpStream::Tokio(s)),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            TcpListener::Compio(l) => l.local_addr(),
            TcpListener::Glommio(l) => l.local_addr().map_err(io::Error::from),
            TcpListener::Tokio(l) => l.local_addr(),
        }
    }
}

/// A TCP connection of this core. Implements the futures-io traits.
pub enum TcpStream {
    /// On compio.
    Compio(CompioStream),
    /// On glommio.
    Glommio(::glommio::net::TcpStream),
    /// On tokio.
    Tokio(tokio::net::TcpStream),
}

/// Connects to `addr`, giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match current() {
        Backend::IoUring(_) => {
            match ::compio::time::timeout(timeout, ::compio::net::TcpStream::connect(addr)).await {
                Ok(r) => r.map(TcpStream::compio),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                )),
            }
        }
        Backend::Glommio => ::glommio::net::TcpStream::connect_timeout(addr, timeout)
            .await
            .map(TcpStream::Glommio)
            .map_err(io::Error::from),
        Backend::Epoll => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(r) => r.map(TcpStream::Tokio),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection timed out",
                )),
            }
        }
    }
}

impl TcpStream {
    fn compio(s: ::compio::net::TcpStream) -> TcpStream {
        TcpStream::Compio(super::ring::RingStream::new(s))
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            TcpStream::Compio(s) => s.get_ref().set_nodelay(on),
            TcpStream::Glommio(s) => s.set_nodelay(on).map_err(io::Error::from),
            TcpStream::Tokio(s) => s.set_nodelay(on),
        }
    }
}

/// futures-io's traits for a stream enum of this module: the compio and glommio variants
/// speak futures-io already, the tokio one is adapted.
macro_rules! futures_io_by_backend {
    ($stream:ident) => {
        impl AsyncRead for $stream {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $stream::Compio(s) => Pin::new(s).poll_read(cx, buf),
                    $stream::Glommio(s) => Pin::new(s).poll_read(cx, buf),
                    $stream::Tokio(s) => {
                        let mut rb = tokio::io::ReadBuf::new(buf);
                        match tokio::io::AsyncRead::poll_read(Pin::new(s), cx, &mut rb) {
                            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
                            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                            Poll::Pending => Poll::Pending,
                        }
                    }
                }
            }
        }

        impl AsyncWrite for $stream {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $stream::Compio(s) => Pin::new(s).poll_write(cx, buf),
                    $stream::Glommio(s) => Pin::new(s).poll_write(cx, buf),
                    $stream::Tokio(s) => tokio::io::AsyncWrite::poll_write(Pin::new(s), cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $stream::Compio(s) => Pin::new(s).poll_flush(cx),
                    $stream::Glommio(s) => Pin::new(s).poll_flush(cx),
                    $stream::Tokio(s) => tokio::io::AsyncWrite::poll_flush(Pin::new(s), cx),
                }
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $stream::Compio(s) => Pin::new(s).poll_close(cx),
                    $stream::Glommio(s) => Pin::new(s).poll_close(cx),
                    $stream::Tokio(s) => tokio::io::AsyncWrite::poll_shutdown(Pin::new(s), cx),
                }
            }
        }
    };
}

futures_io_by_backend!(TcpStream);

/// A TLS client connection of this core.
pub enum TlsStream {
    /// futures-rustls over compio.
    Compio(Box<futures_rustls::client::TlsStream<CompioStream>>),
    /// futures-rustls over glommio.
    Glommio(Box<futures_rustls::client::TlsStream<::glommio::net::TcpStream>>),
    /// tokio-rustls over tokio.
    Tokio(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

futures_io_by_backend!(TlsStream);

/// Runs the TLS handshake for `name` over `stream` with `config`.
pub async fn tls_connect(
    config: &Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
    stream: TcpStream,
) -> io::Result<TlsStream> {
    match stream {
        TcpStream::Compio(s) => futures_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, s)
            .await
            .map(|t| TlsStream::Compio(Box::new(t))),
        TcpStream::Glommio(s) => futures_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, s)
            .await
            .map(|t| TlsStream::Glommio(Box::new(t))),
        TcpStream::Tokio(s) => tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, s)
            .await
            .map(|t| TlsStream::Tokio(Box::new(t))),
    }
}

/// A connection (plain or TLS) as hyper reads and writes it.
pub struct HyperIo(IoInner);

enum IoInner {
    /// The ring stream buffers what it receives: hyper copies from that buffer directly
    /// (no scratch copy).
    Compio(CompioStream),
    CompioTls(FuturesIo<Box<futures_rustls::client::TlsStream<CompioStream>>>),
    Glommio(FuturesIo<::glommio::net::TcpStream>),
    GlommioTls(FuturesIo<Box<futures_rustls::client::TlsStream<::glommio::net::TcpStream>>>),
    /// tokio's streams read into hyper's buffer directly (no scratch copy).
    Tokio(TokioIo<tokio::net::TcpStream>),
    TokioTls(TokioIo<Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl From<TcpStream> for HyperIo {
    fn from(s: TcpStream) -> HyperIo {
        HyperIo(match s {
            TcpStream::Compio(s) => IoInner::Compio(s),
            TcpStream::Glommio(s) => IoInner::Glommio(FuturesIo(s)),
            TcpStream::Tokio(s) => IoInner::Tokio(TokioIo::new(s)),
        })
    }
}

impl From<TlsStream> for HyperIo {
    fn from(s: TlsStream) -> HyperIo {
        HyperIo(match s {
            TlsStream::Compio(s) => IoInner::CompioTls(FuturesIo(s)),
            TlsStream::Glommio(s) => IoInner::GlommioTls(FuturesIo(s)),
            TlsStream::Tokio(s) => IoInner::TokioTls(TokioIo::new(s)),
        })
    }
}

macro_rules! each {
    ($self:expr, $io:ident => $body:expr) => {
        match &mut $self.get_mut().0 {
            IoInner::Compio($io) => $body,
            IoInner::CompioTls($io) => $body,
            IoInner::Glommio($io) => $body,
            IoInner::GlommioTls($io) => $body,
            IoInner::Tokio($io) => $body,
            IoInner::TokioTls($io) => $body,
        }
    };
}

impl hyper::rt::Read for HyperIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, io => hyper::rt::Read::poll_read(Pin::new(io), cx, buf))
    }
}

impl hyper::rt::Write for HyperIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, io => hyper::rt::Write::poll_write(Pin::new(io), cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => hyper::rt::Write::poll_flush(Pin::new(io), cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => hyper::rt::Write::poll_shutdown(Pin::new(io), cx))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            IoInner::Tokio(io) => hyper::rt::Write::is_write_vectored(io),
            IoInner::TokioTls(io) => hyper::rt::Write::is_write_vectored(io),
            IoInner::Compio(_)
            | IoInner::CompioTls(_)
            | IoInner::Glommio(_)
            | IoInner::GlommioTls(_) => false,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, io => hyper::rt::Write::poll_write_vectored(Pin::new(io), cx, bufs))
    }
}

/// hyper's I/O traits over a futures-io stream (glommio's, or TLS over one).
struct FuturesIo<S>(S);

thread_local! {
    /// One scratch buffer per thread. futures-io reads want an initialized slice and
    /// hyper hands out an uninitialized one; reading into this buffer and copying what
    /// arrived costs a copy of the bytes read, where zeroing hyper's buffer on every read
    /// would cost its whole length. One per thread suffices: a read never suspends while
    /// holding it.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 16 * 1024]);
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for FuturesIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining();
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let len = want.min(scratch.len());
            let Some(dst) = scratch.get_mut(..len) else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(&mut self.0).poll_read(cx, dst) {
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

impl<S: AsyncWrite + Unpin> hyper::rt::Write for FuturesIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes that say where they are, so a reordered or repeated chunk shows.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    /// A message larger than one receive and than the write queue goes through whole in
    /// both directions, reads smaller than what arrived take it piece by piece, and the
    /// reader sees the end of the stream after the writer closes.
    #[test]
    fn streams_carry_large_messages_both_ways_and_end_cleanly() {
        super::super::tests::on_each_backend(|| {
            Box::pin(async {
                let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                let addr = listener.local_addr().unwrap();
                let message = pattern(600 * 1024);
                let expected = message.clone();
                let server = super::super::spawn(async move {
                    let mut conn = listener.accept().await.unwrap();
                    let mut got = Vec::new();
                    let mut small = [0u8; 7];
                    // A few tiny reads first, then the rest in large ones.
                    for _ in 0..3 {
                        let n = conn.read(&mut small).await.unwrap();
                        got.extend_from_slice(&small[..n]);
                    }
                    let mut rest = vec![0u8; 64 * 1024];
                    loop {
                        let n = conn.read(&mut rest).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&rest[..n]);
                    }
                    assert_eq!(got.len(), expected.len());
                    assert!(got == expected, "the bytes arrived in order");
                    conn.write_all(&got).await.unwrap();
                    conn.flush().await.unwrap();
                    conn.close().await.unwrap();
                });
                let mut client = connect(addr, Duration::from_secs(5)).await.unwrap();
                client.set_nodelay(true).unwrap();
                // Written in uneven pieces, flushed once.
                for piece in message.chunks(70_001) {
                    client.write_all(piece).await.unwrap();
                }
                client.flush().await.unwrap();
                client.close().await.unwrap();
                // Closing again is no error (and polls no finished operation).
                client.close().await.unwrap();
                let mut echoed = Vec::new();
                client.read_to_end(&mut echoed).await.unwrap();
                assert!(echoed == message, "the echo came back whole");
                server.await;
            })
        });
    }
}
