//! One seller's HTTP(S) connections on one core.
//!
//! Connections are HTTP/1.1 over the core's sockets, kept alive and reused through idle
//! lists per endpoint, one list for each of the two ways to use them:
//!
//! * [`HttpPool::send`] (quotes): the caller runs the exchange, and a caller that stops
//!   waiting (its deadline fired, or a hedge won) does not tear the connection down: the
//!   exchange goes to the core's orphanage ([`super::orphans`]), which reads the answer to
//!   the end and puts the connection back. Only an exchange that runs on for longer than
//!   [`HARD_CAP`] after that is abandoned with its connection.
//! * [`HttpPool::call`] (orders, payments): the exchange runs in the caller, and when its
//!   timeout fires the connection is closed at once. A purchase step repeats a call with
//!   the same idempotency key after a timeout; closing first means our earlier exchange
//!   for that key is over before the repeat starts (the partner may still be working on
//!   it, and will say so).
//!
//! Quotes speak [`http1`]'s framing directly (`QuickConn`); orders and payments go
//! through hyper's client. A hyper connection's driver task is owned by its [`Conn`]:
//! dropping the connection, idle or mid-exchange, cancels the driver and closes the
//! socket.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use bookbroker_protocols::http::{HttpRequest, Reply};
use bookbroker_protocols::http1;

use super::orphans::RunToEnd;
use super::{with_timeout, Endpoint, NetError, Scheme};
use crate::rt::{self, HyperIo};

/// Longest an exchange may run on, keeping its connection, after the caller gave up.
pub const HARD_CAP: Duration = Duration::from_secs(10);

/// Largest answer body accepted.
pub const MAX_BODY: usize = 4 << 20;

/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 64;

/// An HTTP answer read whole.
#[derive(Debug, Clone)]
pub struct OwnedReply {
    /// Status code.
    pub status: u16,
    /// `Retry-After`, if present.
    pub retry_after: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl OwnedReply {
    /// A borrowed view for the protocol decoders.
    pub fn as_reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            retry_after: self.retry_after.as_deref(),
            body: &self.body,
        }
    }
}

struct Target {
    endpoint: Endpoint,
    addr: SocketAddr,
    /// `host[:port]` as hyper sends it, and as [`http1::write_request`] writes it.
    authority: HeaderValue,
    host: String,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    /// hyper connections, for [`HttpPool::call`].
    idle: RefCell<Vec<Conn>>,
    /// Plain HTTP/1.1 connections, for [`HttpPool::send`].
    quick_idle: RefCell<Vec<QuickConn>>,
}

/// One connection: the handle requests go through and the task that drives the socket.
/// Dropping it cancels the task, which closes the socket.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    _driver: rt::Task<()>,
}

struct Inner {
    targets: Vec<Target>,
    tls: Option<Arc<rustls::ClientConfig>>,
    max_in_flight: usize,
    in_flight: Cell<usize>,
    opened: Cell<u64>,
}

impl Inner {
    fn target(&self, index: usize) -> Result<&Target, NetError> {
        self.targets
            .get(index)
            .ok_or_else(|| NetError::BadEndpoint("no such endpoint".into()))
    }
}

/// A seller's HTTP(S) connection pool on one core.
pub struct HttpPool {
    inner: Rc<Inner>,
}

/// Decrements the in-flight count when an exchange task ends, however it ends.
struct InFlight(Rc<Inner>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

impl HttpPool {
    /// A pool over `endpoints` (resolved now), with TLS for `https` ones, allowing at most
    /// `max_in_flight` exchanges at once.
    pub fn new(
        endpoints: Vec<Endpoint>,
        tls: Option<Arc<rustls::ClientConfig>>,
        max_in_flight: usize,
    ) -> Result<HttpPool, NetError> {
        if endpoints.is_empty() {
            return Err(NetError::BadEndpoint("no endpoints".into()));
        }
        let mut targets = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let addr = endpoint.resolve()?;
            let host = endpoint.authority();
            let authority = HeaderValue::from_str(&host)
                .map_err(|e| NetError::BadEndpoint(format!("{endpoint}: {e}")))?;
            let server_name = match endpoint.scheme {
                Scheme::Https => {
                    if tls.is_none() {
                        return Err(NetError::Tls(format!("{endpoint}: no TLS configuration")));
                    }
                    Some(
                        rustls_pki_types::ServerName::try_from(endpoint.host.clone())
                            .map_err(|e| NetError::BadEndpoint(format!("{endpoint}: {e}")))?,
                    )
                }
                Scheme::Http => None,
                Scheme::Tcp => {
                    return Err(NetError::BadEndpoint(format!(
                        "{endpoint}: tcp:// is for line sellers"
                    )))
                }
            };
            targets.push(Target {
                endpoint,
                addr,
                authority,
                host,
                server_name,
                idle: RefCell::new(Vec::new()),
                quick_idle: RefCell::new(Vec::new()),
            });
        }
        Ok(HttpPool {
            inner: Rc::new(Inner {
                targets,
                tls,
                max_in_flight: max_in_flight.max(1),
                in_flight: Cell::new(0),
                opened: Cell::new(0),
            }),
        })
    }

    /// Connections opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.get()
    }

    /// Exchanges in flight now (including ones whose caller gave up).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.get()
    }

    /// Sends `req` to endpoint `attempt % n` and reads the whole answer, giving up after
    /// `timeout`.
    pub async fn send(
        &self,
        req: &HttpRequest,
        timeout: Duration,
        attempt: u32,
    ) -> Result<OwnedReply, NetError> {
        let inner = &self.inner;
        if inner.in_flight.get() >= inner.max_in_flight {
            return Err(NetError::Overloaded);
        }
        let index = attempt as usize % inner.targets.len();
        let target = inner.target(index)?;
        let mut request = Vec::new();
        http1::write_request(req, &target.host, &mut request);
        inner.in_flight.set(inner.in_flight.get() + 1);
        let guard = InFlight(Rc::clone(inner));
        let task_inner = Rc::clone(inner);
        let exchange = RunToEnd::new(
            async move {
                let _guard = guard;
                quick_exchange(&task_inner, index, &request, timeout).await
            },
            HARD_CAP,
        );
        with_timeout(timeout, exchange)
            .await
            .unwrap_or(Err(NetError::Timeout))
    }

    /// Sends `req` to the first endpoint and reads the whole answer in the caller's task.
    /// When `timeout` fires (or the caller drops this future) the exchange ends there:
    /// its connection is closed, never reused, so nothing of ours is still in flight.
    pub async fn call(&self, req: &HttpRequest, timeout: Duration) -> Result<OwnedReply, NetError> {
        let inner = &self.inner;
        if inner.in_flight.get() >= inner.max_in_flight {
            return Err(NetError::Overloaded);
        }
        let request = build_request(req, inner, 0)?;
        inner.in_flight.set(inner.in_flight.get() + 1);
        let _guard = InFlight(Rc::clone(inner));
        with_timeout(timeout, exchange(inner, 0, request, timeout))
            .await
            .unwrap_or(Err(NetError::Timeout))
    }
}

fn build_request(
    req: &HttpRequest,
    inner: &Inner,
    index: usize,
) -> Result<Request<Full<Bytes>>, NetError> {
    let target = inner.target(index)?;
    let mut builder = Request::builder()
        .method(req.method)
        .uri(req.path_and_query.as_str())
        .header(http::header::HOST, target.authority.clone());
    for (name, value) in &req.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(Bytes::from(req.body.clone())))
        .map_err(|e| NetError::Protocol(format!("cannot build request: {e}")))
}

/// One exchange: an idle connection if there is a usable one, else a new one. A request
/// that an idle connection refused before sending (the seller closed it meanwhile) is
/// retried once on a fresh connection; nothing that may have reached the seller is.
async fn exchange(
    inner: &Rc<Inner>,
    index: usize,
    mut request: Request<Full<Bytes>>,
    connect_timeout: Duration,
) -> Result<OwnedReply, NetError> {
    let target = inner.target(index)?;
    loop {
        let reused = target.idle.borrow_mut().pop();
        let (mut conn, was_idle) = match reused {
            Some(c) if !c.sender.is_closed() => (c, true),
            Some(_) => continue,
            // Boxed: connecting (TCP, TLS, hyper) is rare and its state is large.
            None => (
                Box::pin(connect(inner, target, connect_timeout)).await?,
                false,
            ),
        };
        if conn.sender.ready().await.is_err() {
            if was_idle {
                continue;
            }
            return Err(NetError::Closed);
        }
        match conn.sender.try_send_request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = Limited::new(response.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| NetError::Protocol(format!("reading the answer: {e}")))?
                    .to_bytes();
                let mut idle = target.idle.borrow_mut();
                if !conn.sender.is_closed() && idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                return Ok(OwnedReply {
                    status,
                    retry_after,
                    body: body.to_vec(),
                });
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if was_idle => request = unsent,
                _ => {
                    let err = e.error();
                    return Err(if err.is_incomplete_message() || err.is_closed() {
                        NetError::Closed
                    } else {
                        NetError::Protocol(err.to_string())
                    });
                }
            },
        }
    }
}

async fn connect(inner: &Rc<Inner>, target: &Target, timeout: Duration) -> Result<Conn, NetError> {
    match open(inner, target, timeout).await? {
        Wire::Tls(stream) => handshake(HyperIo::from(stream)).await,
        Wire::Plain(stream) => handshake(HyperIo::from(stream)).await,
    }
}

/// A new connection to `target`: TCP, and TLS for `https`.
async fn open(inner: &Rc<Inner>, target: &Target, timeout: Duration) -> Result<Wire, NetError> {
    let connect_err = |source: std::io::Error| NetError::Connect {
        endpoint: target.endpoint.to_string(),
        source,
    };
    let stream = rt::connect(target.addr, timeout)
        .await
        .map_err(connect_err)?;
    let _ = stream.set_nodelay(true);
    inner.opened.set(inner.opened.get() + 1);
    match (&target.server_name, &inner.tls) {
        (Some(name), Some(tls)) => {
            let tls_stream = with_timeout(timeout, rt::tls_connect(tls, name.clone(), stream))
                .await
                .ok_or(NetError::Timeout)?
                .map_err(|e| NetError::Tls(format!("{}: {e}", target.endpoint)))?;
            Ok(Wire::Tls(tls_stream))
        }
        _ => Ok(Wire::Plain(stream)),
    }
}

/// Starts HTTP/1.1 on a connected stream; the connection is driven by a task of its own
/// until the peer closes or the returned [`Conn`] is dropped.
async fn handshake(io: HyperIo) -> Result<Conn, NetError> {
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| NetError::Protocol(e.to_string()))?;
    let driver = rt::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn {
        sender,
        _driver: driver,
    })
}

/// A connection as [`open`] made it.
// Plain connections are the common kind: boxing them would cost an allocation each for
// nothing; the size only matters per connection, not per exchange.
#[allow(clippy::large_enum_variant)]
enum Wire {
    Plain(rt::TcpStream),
    Tls(rt::TlsStream),
}

/// One kept-alive connection of [`HttpPool::send`], spoken to through
/// [`http1`]'s sans-IO framing: one request, then its whole answer.
///
/// hyper's client costs a task per connection, a channel hop per request and a header
/// map each way; for the quote path, which sends one small request and reads one small
/// answer per exchange, that was a fifth of the engine's CPU (BENCHMARKS.md). Orders and
/// payments stay on hyper ([`HttpPool::call`]), whose guarantee that a refused request
/// was never sent they rely on; a quote may simply be asked again.
struct QuickConn {
    wire: Wire,
    /// What one read may take.
    read_buf: Box<[u8]>,
    /// Bytes read and not yet taken by the response reader (a head split across reads).
    pending: Vec<u8>,
}

/// How a round trip failed.
enum RoundTrip {
    /// Nothing came back: on a reused connection, the seller closed it while it was idle.
    Stale,
    /// The seller answered, then broke off or broke the framing.
    Failed(NetError),
}

/// What one read of a quick connection takes at most.
const QUICK_READ: usize = 16 * 1024;

impl QuickConn {
    fn new(wire: Wire) -> QuickConn {
        QuickConn {
            wire,
            read_buf: vec![0; QUICK_READ].into_boxed_slice(),
            pending: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use futures_util::io::AsyncWriteExt;
        match &mut self.wire {
            Wire::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Wire::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        use futures_util::io::AsyncReadExt;
        match &mut self.wire {
            Wire::Plain(s) => s.read(&mut self.read_buf).await,
            Wire::Tls(s) => s.read(&mut self.read_buf).await,
        }
    }

    /// Sends `request` and reads the answer; says whether the connection may be reused.
    async fn round_trip(&mut self, request: &[u8]) -> Result<(OwnedReply, bool), RoundTrip> {
        if self.write(request).await.is_err() {
            return Err(RoundTrip::Stale);
        }
        let mut reader = http1::ResponseReader::new(MAX_BODY);
        let mut answered = false;
        let framing = |e: http1::Http1Error| RoundTrip::Failed(NetError::Protocol(e.to_string()));
        while !reader.is_done() {
            let n = match self.read().await {
                Ok(n) => n,
                Err(_) if !answered => return Err(RoundTrip::Stale),
                Err(e) => return Err(RoundTrip::Failed(NetError::Io(e))),
            };
            if n == 0 {
                reader.close();
                if reader.is_done() {
                    break;
                }
                return Err(if answered {
                    RoundTrip::Failed(NetError::Closed)
                } else {
                    RoundTrip::Stale
                });
            }
            answered = true;
            let data = self.read_buf.get(..n).unwrap_or_default();
            if self.pending.is_empty() {
                let taken = reader.feed(data).map_err(framing)?;
                self.pending
                    .extend_from_slice(data.get(taken..).unwrap_or_default());
            } else {
                self.pending.extend_from_slice(data);
                let taken = reader.feed(&self.pending).map_err(framing)?;
                self.pending.drain(..taken.min(self.pending.len()));
            }
        }
        let resp = reader.finish().map_err(framing)?;
        // Bytes after the answer were never asked for: do not reuse the connection.
        let reusable = resp.keep_alive && self.pending.is_empty();
        Ok((
            OwnedReply {
                status: resp.status,
                retry_after: resp.retry_after,
                body: resp.body,
            },
            reusable,
        ))
    }
}

/// One quote exchange on a kept-alive connection, or a new one. A reused connection that
/// gives nothing back (the seller closed it while it was idle) is dropped and the request
/// goes out again on another: a quote asks and changes nothing, so asking twice is safe.
async fn quick_exchange(
    inner: &Rc<Inner>,
    index: usize,
    request: &[u8],
    connect_timeout: Duration,
) -> Result<OwnedReply, NetError> {
    let target = inner.target(index)?;
    loop {
        let reused = target.quick_idle.borrow_mut().pop();
        let (mut conn, was_idle) = match reused {
            Some(c) => (c, true),
            // Boxed: connecting (TCP and TLS) is rare and its state is large.
            None => (
                QuickConn::new(Box::pin(open(inner, target, connect_timeout)).await?),
                false,
            ),
        };
        match conn.round_trip(request).await {
            Ok((reply, reusable)) => {
                let mut idle = target.quick_idle.borrow_mut();
                if reusable && idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                return Ok(reply);
            }
            Err(RoundTrip::Stale) if was_idle => continue,
            Err(RoundTrip::Stale) => return Err(NetError::Closed),
            Err(RoundTrip::Failed(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// What the test seller does with one request.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `{}` with a length.
        Plain,
        /// `{}` chunked, in two writes 5 ms apart.
        Chunked,
        /// `{}` after this many milliseconds.
        Late(u64),
        /// `{}`, then the connection is closed (as an idle timeout would).
        ThenClose,
        /// Not HTTP.
        Garbage,
    }

    /// A seller answering the `n`th request it receives (over all connections) as
    /// `script[n]`, and `Plain` past the end.
    fn seller(script: Vec<Answer>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(script);
        let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (script, served) = (Arc::clone(&script), Arc::clone(&served));
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    loop {
                        head.clear();
                        while !head.ends_with(b"\r\n\r\n") {
                            match stream.read(&mut byte) {
                                Ok(1) => head.push(byte[0]),
                                _ => return,
                            }
                        }
                        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let answer = script.get(n).copied().unwrap_or(Answer::Plain);
                        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        let _ = match answer {
                            Answer::Plain => stream.write_all(plain),
                            Answer::Chunked => {
                                let _ = stream.write_all(
                                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\n{",
                                );
                                std::thread::sleep(Duration::from_millis(5));
                                stream.write_all(b"\r\n1\r\n}\r\n0\r\n\r\n")
                            }
                            Answer::Late(ms) => {
                                std::thread::sleep(Duration::from_millis(ms));
                                stream.write_all(plain)
                            }
                            Answer::ThenClose => {
                                let _ = stream.write_all(plain);
                                return;
                            }
                            Answer::Garbage => stream.write_all(b"SMTP ready\r\n\r\n"),
                        };
                    }
                });
            }
        });
        addr
    }

    fn get() -> HttpRequest {
        HttpRequest {
            method: "GET",
            path_and_query: "/v1/offers?isbn=9780131103627".into(),
            headers: vec![("accept", "application/json".into())],
            body: Vec::new(),
        }
    }

    fn pool(addr: SocketAddr) -> HttpPool {
        let endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        HttpPool::new(vec![endpoint], None, 64).unwrap()
    }

    /// Answers come back whole however they are framed; a connection is reused; one the
    /// seller closed while it sat idle is replaced without the caller noticing.
    #[test]
    fn quotes_reuse_connections_and_survive_idle_closes() {
        use Answer::*;
        crate::rt::tests::on_each_backend(|| {
            Box::pin(async {
                crate::net::CoreTimer::start_driver();
                let addr = seller(vec![Plain, Chunked, ThenClose, Plain, Plain]);
                let pool = pool(addr);
                let t = Duration::from_secs(2);
                for i in 0..3 {
                    let reply = pool.send(&get(), t, 0).await.unwrap();
                    assert_eq!(
                        (reply.status, reply.body.as_slice()),
                        (200, &b"{}"[..]),
                        "{i}"
                    );
                }
                assert_eq!(pool.connections_opened(), 1);
                // The seller closed the kept connection after the third answer.
                crate::rt::sleep(Duration::from_millis(20)).await;
                for _ in 0..2 {
                    assert_eq!(pool.send(&get(), t, 0).await.unwrap().body, b"{}");
                }
                assert_eq!(pool.connections_opened(), 2);
                assert_eq!(pool.in_flight(), 0);
            })
        });
    }

    /// A caller that gives up does not cost the connection: the orphanage reads the late
    /// answer and the next quote reuses it. A broken answer is an error, and that
    /// connection is not reused.
    #[test]
    fn abandoned_exchanges_keep_their_connection_and_garbage_is_an_error() {
        use Answer::*;
        crate::rt::tests::on_each_backend(|| {
            Box::pin(async {
                crate::net::CoreTimer::start_driver();
                crate::net::start_orphanage();
                let addr = seller(vec![Late(100), Plain, Garbage, Plain]);
                let pool = pool(addr);
                let late = pool.send(&get(), Duration::from_millis(20), 0).await;
                assert!(matches!(late, Err(NetError::Timeout)), "{late:?}");
                assert_eq!(pool.in_flight(), 1, "the orphan still holds its slot");
                crate::rt::sleep(Duration::from_millis(200)).await;
                assert_eq!(pool.in_flight(), 0);
                let t = Duration::from_secs(2);
                assert!(pool.send(&get(), t, 0).await.is_ok());
                assert_eq!(
                    pool.connections_opened(),
                    1,
                    "the orphan kept its connection"
                );
                let garbage = pool.send(&get(), t, 0).await;
                assert!(matches!(garbage, Err(NetError::Protocol(_))), "{garbage:?}");
                assert!(pool.send(&get(), t, 0).await.is_ok());
                assert_eq!(pool.connections_opened(), 2);
            })
        });
    }
}
