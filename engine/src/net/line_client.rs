//! One `line` seller's connections on one core.
//!
//! A few long-lived TCP connections per endpoint; requests are pipelined (written without
//! waiting for earlier answers) under a fresh numeric tag, and answer lines are routed to
//! their caller by tag, in whatever order the seller sends them. Each connection is one
//! task with a writer half (draining an outbox, so concurrent requests coalesce into one
//! write) and a reader half (framing lines with `LineBuffer`). A broken connection fails
//! its waiters and is replaced on next use; lines for callers that gave up are dropped.
//!
//! A peer can also fail without breaking the connection: it stops answering (and maybe
//! reading) but never resets. A caller's timeout only ends that caller's wait, so the
//! connection itself has limits:
//! * **silence**: a connection that was sent a request after the last byte it gave back,
//!   and then stays silent for the stall limit (twice the seller's timeout, or twice the
//!   longest timeout among the requests waiting on it), is closed, and its slot gets a
//!   new connection on next use;
//! * **writes**: a write that does not complete within the stall limit closes the
//!   connection too;
//! * **outbox**: at most [`MAX_OUTBOX_BYTES`] wait to be written; a request that does
//!   not fit fails at once as [`NetError::Overloaded`] (nothing was sent).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};

use bookbroker_protocols::line::{LineBuffer, Request, Response};

use super::{Endpoint, NetError, Scheme};

/// Most bytes waiting in one connection's outbox. Requests are a few hundred bytes, so
/// this is hundreds of requests: an outbox this full means the peer stopped reading.
const MAX_OUTBOX_BYTES: usize = 256 * 1024;

/// The stall limit is this many times the longest timeout in play: a peer that is merely
/// slow (its late answers arrive, and any byte counts) keeps its connection; one silent
/// for twice as long as anyone waits is taken for dead.
const STALL_FACTOR: u32 = 2;

type Answer = Result<Vec<Response>, NetError>;

struct Waiter {
    lines: Vec<Response>,
    tx: oneshot::Sender<Answer>,
    /// The caller's timeout, which the stall limit respects.
    timeout: Duration,
}

/// One connection's shared state between its task and its callers.
struct Conn {
    outbox: RefCell<Vec<u8>>,
    writer: RefCell<Option<Waker>>,
    waiters: RefCell<HashMap<u64, Waiter>>,
    dead: Cell<bool>,
    /// Set by [`Conn::close`]; the connection's task then ends and drops the socket.
    closing: Cell<bool>,
    closer: RefCell<Option<Waker>>,
    /// When a request was first sent after the last byte read; `None` while the peer
    /// owes nothing it has not started answering.
    silent_since: Cell<Option<Instant>>,
    /// The connection task's waker, woken when `silent_since` is set.
    watchdog: RefCell<Option<Waker>>,
}

/// What a timed-out [`LinePool::call`] does with its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Forget the request; a late answer is dropped. Right for quotes, whose repeats
    /// are harmless.
    Forget,
    /// Close the connection, failing the other requests on it. Right for an order: the
    /// repeat with the same key must not start while our first request is still on a
    /// live connection.
    Close,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            outbox: RefCell::new(Vec::with_capacity(4096)),
            writer: RefCell::new(None),
            waiters: RefCell::new(HashMap::new()),
            dead: Cell::new(false),
            closing: Cell::new(false),
            closer: RefCell::new(None),
            silent_since: Cell::new(None),
            watchdog: RefCell::new(None),
        }
    }

    /// How long this connection may stay silent while it owes answers, given the
    /// seller's timeout `base`.
    fn stall_limit(&self, base: Duration) -> Duration {
        let longest = self
            .waiters
            .borrow()
            .values()
            .map(|w| w.timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        base.max(longest).saturating_mul(STALL_FACTOR)
    }

    /// A request was queued: from now on the peer owes us bytes.
    fn expect_answer(&self) {
        if self.silent_since.get().is_none() {
            self.silent_since.set(Some(Instant::now()));
            if let Some(w) = self.watchdog.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Ends the connection: its task stops and the socket is closed.
    fn close(&self) {
        self.closing.set(true);
        self.dead.set(true);
        if let Some(w) = self.closer.borrow_mut().take() {
            w.wake();
        }
    }

    fn fail_all(&self, why: &NetError) {
        self.dead.set(true);
        let waiters: Vec<Waiter> = self.waiters.borrow_mut().drain().map(|(_, w)| w).collect();
        for w in waiters {
            let err = match why {
                NetError::Connect { endpoint, source } => NetError::Connect {
                    endpoint: endpoint.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                },
                NetError::Timeout => NetError::Timeout,
                NetError::Protocol(p) => NetError::Protocol(p.clone()),
                _ => NetError::Closed,
            };
            let _ = w.tx.send(Err(err));
        }
    }

    /// Routes one answer line to its waiter.
    fn deliver(&self, line: Response) {
        let Ok(tag) = line.tag().parse::<u64>() else {
            tracing::debug!("line seller answered with a tag we never sent");
            return;
        };
        let mut waiters = self.waiters.borrow_mut();
        if line.is_final() {
            if let Some(mut w) = waiters.remove(&tag) {
                w.lines.push(line);
                let _ = w.tx.send(Ok(w.lines));
            }
        } else if let Some(w) = waiters.get_mut(&tag) {
            w.lines.push(line);
        }
    }

    /// A line we cannot decode: fail its caller if we can tell who that is.
    fn reject(&self, raw: &[u8], why: String) {
        let tag = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.split([' ', '\t']).nth(1))
            .and_then(|t| t.parse::<u64>().ok());
        if let Some(w) = tag.and_then(|t| self.waiters.borrow_mut().remove(&t)) {
            let _ = w.tx.send(Err(NetError::Protocol(why)));
        }
    }
}

struct Target {
    endpoint: Endpoint,
    addr: SocketAddr,
}

struct Inner {
    targets: Vec<Target>,
    per_endpoint: usize,
    /// The seller's timeout: the base of each connection's stall limit.
    io_timeout: Duration,
    slots: RefCell<Vec<Option<Rc<Conn>>>>,
    next_slot: Cell<usize>,
    max_in_flight: usize,
    in_flight: Cell<usize>,
    opened: Cell<u64>,
    next_tag: Cell<u64>,
}

/// A `line` seller's connections on one core.
pub struct LinePool {
    inner: Rc<Inner>,
}

struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// A call's registration under its tag: removed however the call ends, including when
/// its future is dropped mid-wait, so abandoned calls leave no waiter behind.
struct Registered<'a> {
    conn: &'a Conn,
    tag: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.conn.waiters.borrow_mut().remove(&self.tag);
    }
}

impl LinePool {
    /// A pool of `per_endpoint` connections to each of `endpoints` (resolved now), with at
    /// most `max_in_flight` requests waiting at once. `io_timeout` is the seller's
    /// timeout, the base of the connections' stall limit (see the module doc).
    pub fn new(
        endpoints: Vec<Endpoint>,
        per_endpoint: usize,
        max_in_flight: usize,
        io_timeout: Duration,
    ) -> Result<LinePool, NetError> {
        if endpoints.is_empty() {
            return Err(NetError::BadEndpoint("no endpoints".into()));
        }
        let mut targets = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if endpoint.scheme != Scheme::Tcp {
                return Err(NetError::BadEndpoint(format!(
                    "{endpoint}: line sellers need tcp://"
                )));
            }
            let addr = endpoint.resolve()?;
            targets.push(Target { endpoint, addr });
        }
        let per_endpoint = per_endpoint.max(1);
        let slots = (0..targets.len() * per_endpoint).map(|_| None).collect();
        Ok(LinePool {
            inner: Rc::new(Inner {
                targets,
                per_endpoint,
                io_timeout,
                slots: RefCell::new(slots),
                next_slot: Cell::new(0),
                max_in_flight: max_in_flight.max(1),
                in_flight: Cell::new(0),
                opened: Cell::new(0),
                next_tag: Cell::new(1),
            }),
        })
    }

    /// Connections opened so far.
    pub fn connections_opened(&self) -> u64 {
        self.inner.opened.get()
    }

    /// Sends the request `make(tag)` on a connection to endpoint `attempt % n` and
    /// collects its answer lines up to the final one, giving up after `timeout` (and
    /// then doing what `on_timeout` says).
    pub async fn call(
        &self,
        make: impl FnOnce(String) -> Request,
        timeout: Duration,
        attempt: u32,
        on_timeout: OnTimeout,
    ) -> Result<Vec<Response>, NetError> {
        let inner = &*self.inner;
        if inner.in_flight.get() >= inner.max_in_flight {
            return Err(NetError::Overloaded);
        }
        inner.in_flight.set(inner.in_flight.get() + 1);
        let _guard = InFlight(inner);
        let conn = self.connection(attempt as usize % inner.targets.len(), timeout);
        let tag = inner.next_tag.get();
        inner.next_tag.set(tag.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        {
            let mut outbox = conn.outbox.borrow_mut();
            let mark = outbox.len();
            make(tag.to_string()).encode(&mut outbox);
            if mark > 0 && outbox.len() > MAX_OUTBOX_BYTES {
                // The peer is not reading; queueing more would only grow memory.
                outbox.truncate(mark);
                return Err(NetError::Overloaded);
            }
        }
        conn.waiters.borrow_mut().insert(
            tag,
            Waiter {
                lines: Vec::new(),
                tx,
                timeout,
            },
        );
        let _registered = Registered { conn: &conn, tag };
        conn.expect_answer();
        if let Some(w) = conn.writer.borrow_mut().take() {
            w.wake();
        }
        let timer = crate::net::sleep(timeout);
        match select(rx, timer).await {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(_), _)) => Err(NetError::Closed),
            Either::Right(_) => {
                // The waiter goes with `_registered`; late lines for this tag will find
                // no waiter and be dropped.
                if on_timeout == OnTimeout::Close {
                    conn.close();
                }
                Err(NetError::Timeout)
            }
        }
    }

    /// A live connection to endpoint `endpoint` (round robin over its slots), starting
    /// one if the slot is empty or its connection died.
    fn connection(&self, endpoint: usize, connect_timeout: Duration) -> Rc<Conn> {
        let inner = &self.inner;
        let turn = inner.next_slot.get();
        inner.next_slot.set(turn.wrapping_add(1));
        let index = endpoint * inner.per_endpoint + turn % inner.per_endpoint;
        let mut slots = inner.slots.borrow_mut();
        if let Some(Some(conn)) = slots.get(index) {
            if !conn.dead.get() {
                return Rc::clone(conn);
            }
        }
        let conn = Rc::new(Conn::new());
        if let Some(slot) = slots.get_mut(index) {
            *slot = Some(Rc::clone(&conn));
        }
        if let Some(target) = inner.targets.get(endpoint) {
            let task_conn = Rc::clone(&conn);
            let addr = target.addr;
            let name = target.endpoint.to_string();
            let pool = Rc::clone(inner);
            crate::rt::spawn(async move {
                let why = run(&task_conn, &pool, addr, &name, connect_timeout).await;
                task_conn.fail_all(&why);
            })
            .detach();
        }
        conn
    }
}

/// Drives one connection until it breaks; returns why it ended.
async fn run(
    conn: &Rc<Conn>,
    pool: &Inner,
    addr: SocketAddr,
    name: &str,
    connect_timeout: Duration,
) -> NetError {
    let stream = match crate::rt::connect(addr, connect_timeout).await {
        Ok(s) => s,
        Err(source) => {
            return NetError::Connect {
                endpoint: name.to_string(),
                source,
            }
        }
    };
    let _ = stream.set_nodelay(true);
    pool.opened.set(pool.opened.get() + 1);
    let (mut reader, mut writer) = stream.split();

    let write_loop = async {
        let mut buf = Vec::with_capacity(4096);
        loop {
            std::future::poll_fn(|cx| {
                if conn.outbox.borrow().is_empty() {
                    *conn.writer.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            std::mem::swap(&mut buf, &mut conn.outbox.borrow_mut());
            // Flushed too: a backend's stream may buffer writes until asked to send.
            let write = async {
                writer.write_all(&buf).await?;
                writer.flush().await
            };
            match crate::net::with_timeout(conn.stall_limit(pool.io_timeout), write).await {
                Some(Ok(())) => {}
                Some(Err(e)) => return NetError::Io(e),
                None => {
                    tracing::warn!(endpoint = name, "line seller stopped reading; reconnecting");
                    return NetError::Timeout;
                }
            }
            buf.clear();
        }
    };
    let read_loop = async {
        let mut lines = LineBuffer::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let n = match reader.read(&mut chunk).await {
                Ok(0) => return NetError::Closed,
                Ok(n) => n,
                Err(e) => return NetError::Io(e),
            };
            conn.silent_since.set(None);
            lines.extend(chunk.get(..n).unwrap_or(&[]));
            while let Some(line) = lines.next_line() {
                match line {
                    Ok(raw) => match Response::decode(raw) {
                        Ok(resp) => conn.deliver(resp),
                        Err(e) => conn.reject(raw, e.to_string()),
                    },
                    Err(e) => return NetError::Protocol(e.to_string()),
                }
            }
        }
    };
    let closed = std::future::poll_fn(|cx| {
        if conn.closing.get() {
            Poll::Ready(NetError::Closed)
        } else {
            *conn.closer.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    });
    // A peer that owes answers and stays silent past the stall limit is taken for dead:
    // it may never reset the connection, and the slot would be lost to it for good.
    let watchdog = async {
        loop {
            let since = std::future::poll_fn(|cx| match conn.silent_since.get() {
                Some(t) => Poll::Ready(t),
                None => {
                    *conn.watchdog.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let due = since + conn.stall_limit(pool.io_timeout);
            let now = Instant::now();
            if now < due {
                crate::net::sleep(due - now).await;
            } else if conn.silent_since.get() == Some(since) {
                tracing::warn!(endpoint = name, "line seller went silent; reconnecting");
                return NetError::Timeout;
            }
        }
    };
    let write_loop = std::pin::pin!(write_loop);
    let read_loop = std::pin::pin!(read_loop);
    let io = select(write_loop, read_loop);
    let closed = std::pin::pin!(closed);
    let watchdog = std::pin::pin!(watchdog);
    let ends = select(closed, watchdog);
    match select(io, ends).await {
        Either::Left((Either::Left((why, _)) | Either::Right((why, _)), _)) => why,
        Either::Right((Either::Left((why, _)) | Either::Right((why, _)), _)) => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use bookbroker_protocols::{Isbn, QuoteQuery};

    fn isbn_quote(tag: String) -> Request {
        Request::Quote {
            tag,
            query: QuoteQuery::Isbn(Isbn::parse("9780131103627").unwrap()),
        }
    }

    fn on_epoll<F: std::future::Future<Output = ()> + 'static>(test: impl FnOnce() -> F + 'static) {
        crate::rt::run_core(crate::rt::Backend::Epoll, 0, 0, || async move {
            crate::net::CoreTimer::start_driver();
            test().await
        })
        .unwrap();
    }

    /// A line seller whose first connection reads and never answers (nor closes);
    /// later connections answer every request with an empty quote.
    fn silent_first_connection() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut out = stream.try_clone().unwrap();
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        if i > 0 {
                            let tag = line.split(['\t', ' ']).nth(1).unwrap_or("-");
                            let _ = out.write_all(format!("END {tag}\n").as_bytes());
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_silent_connection_is_replaced() {
        let addr = silent_first_connection();
        on_epoll(move || async move {
            let endpoint = Endpoint::parse(&format!("tcp://{addr}")).unwrap();
            let pool = LinePool::new(vec![endpoint], 1, 64, Duration::from_millis(50)).unwrap();
            let t = Duration::from_millis(50);
            let first = pool.call(isbn_quote, t, 0, OnTimeout::Forget).await;
            assert!(matches!(first, Err(NetError::Timeout)), "{first:?}");
            // Quotes keep timing out until the silent connection is given up on; then a
            // new connection answers. Bounded generously: the stall limit is 100 ms.
            let mut answered = false;
            for _ in 0..100 {
                if pool.call(isbn_quote, t, 0, OnTimeout::Forget).await.is_ok() {
                    answered = true;
                    break;
                }
                crate::rt::sleep(Duration::from_millis(20)).await;
            }
            assert!(answered, "never answered on a new connection");
            assert_eq!(pool.connections_opened(), 2);
            assert!(
                pool.inner
                    .slots
                    .borrow()
                    .iter()
                    .flatten()
                    .all(|c| c.waiters.borrow().is_empty()),
                "timed-out calls left no waiters"
            );
        });
    }

    #[test]
    fn a_full_outbox_refuses_at_once() {
        // A peer that accepts and never reads.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let _held: Vec<_> = listener.incoming().collect();
        });
        on_epoll(move || async move {
            let endpoint = Endpoint::parse(&format!("tcp://{addr}")).unwrap();
            let pool =
                LinePool::new(vec![endpoint], 1, 100_000, Duration::from_millis(200)).unwrap();
            // Titles near the line limit: a few hundred requests fill the outbox.
            let title = "t".repeat(3000);
            let calls = (0..400).map(|_| {
                let title = title.clone();
                pool.call(
                    move |tag| Request::Quote {
                        tag,
                        query: QuoteQuery::Title(title),
                    },
                    Duration::from_millis(200),
                    0,
                    OnTimeout::Forget,
                )
            });
            let outcomes = futures_util::future::join_all(calls).await;
            let refused = outcomes
                .iter()
                .filter(|o| matches!(o, Err(NetError::Overloaded)))
                .count();
            let timed_out = outcomes
                .iter()
                .filter(|o| matches!(o, Err(NetError::Timeout)))
                .count();
            assert!(refused > 0, "nothing refused: {timed_out} timed out");
            assert!(
                timed_out * 3000 <= MAX_OUTBOX_BYTES + 4096,
                "{timed_out} queued past the bound"
            );
        });
    }
}
