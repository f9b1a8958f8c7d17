//! One `line` seller's connections on one core.
//!
//! A few long-lived TCP connections per endpoint; requests are pipelined (written without
//! waiting for earlier answers) under a fresh numeric tag, and answer lines are routed to
//! their caller by tag, in whatever order the seller sends them. Each connection is one
//! task with a writer half (draining an outbox, so concurrent requests coalesce into one
//! write) and a reader half (framing lines with `LineBuffer`). A broken connection fails
//! its waiters and is replaced on next use; lines for callers that gave up are dropped.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::io::{AsyncReadExt, AsyncWriteExt};

use bookbroker_protocols::line::{LineBuffer, Request, Response};

use super::{Endpoint, NetError, Scheme};

type Answer = Result<Vec<Response>, NetError>;

struct Waiter {
    lines: Vec<Response>,
    tx: oneshot::Sender<Answer>,
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

impl LinePool {
    /// A pool of `per_endpoint` connections to each of `endpoints` (resolved now), with at
    /// most `max_in_flight` requests waiting at once.
    pub fn new(
        endpoints: Vec<Endpoint>,
        per_endpoint: usize,
        max_in_flight: usize,
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
        conn.waiters.borrow_mut().insert(
            tag,
            Waiter {
                lines: Vec::new(),
                tx,
            },
        );
        make(tag.to_string()).encode(&mut conn.outbox.borrow_mut());
        if let Some(w) = conn.writer.borrow_mut().take() {
            w.wake();
        }
        let timer = crate::net::sleep(timeout);
        match select(rx, timer).await {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(_), _)) => Err(NetError::Closed),
            Either::Right(_) => {
                // Late lines for this tag will find no waiter and be dropped.
                conn.waiters.borrow_mut().remove(&tag);
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
        let conn = Rc::new(Conn {
            outbox: RefCell::new(Vec::with_capacity(4096)),
            writer: RefCell::new(None),
            waiters: RefCell::new(HashMap::new()),
            dead: Cell::new(false),
            closing: Cell::new(false),
            closer: RefCell::new(None),
        });
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
            if let Err(e) = writer.write_all(&buf).await {
                return NetError::Io(e);
            }
            if let Err(e) = writer.flush().await {
                return NetError::Io(e);
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
    let write_loop = std::pin::pin!(write_loop);
    let read_loop = std::pin::pin!(read_loop);
    let io = select(write_loop, read_loop);
    match select(io, std::pin::pin!(closed)).await {
        Either::Left((Either::Left((why, _)) | Either::Right((why, _)), _)) => why,
        Either::Right((why, _)) => why,
    }
}
