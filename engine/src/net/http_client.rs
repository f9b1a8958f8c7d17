//! One seller's HTTP(S) connections on one core.
//!
//! Connections are hyper HTTP/1.1 client connections over the core's sockets, kept alive
//! and reused through an idle list per endpoint. Two ways to use them:
//!
//! * [`HttpPool::send`] (quotes): each exchange runs in a task of its own, so a caller that
//!   stops waiting (its deadline fired) does not tear the connection down: the task reads
//!   the answer to the end and puts the connection back. Only an exchange that outlives
//!   [`HARD_CAP`] is abandoned with its connection.
//! * [`HttpPool::call`] (orders, payments): the exchange runs in the caller, and when its
//!   timeout fires the connection is closed at once. A purchase step repeats a call with
//!   the same idempotency key after a timeout; closing first means our earlier exchange
//!   for that key is over before the repeat starts (the partner may still be working on
//!   it, and will say so).
//!
//! A connection's driver task is owned by its [`Conn`]: dropping the connection, idle or
//! mid-exchange, cancels the driver and closes the socket.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;

use bookbroker_protocols::http::{HttpRequest, Reply};

use super::{with_timeout, Endpoint, NetError, Scheme};
use crate::rt::{self, HyperIo};

/// Longest an exchange may keep its connection after the caller gave up.
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
    authority: HeaderValue,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    idle: RefCell<Vec<Conn>>,
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
            let authority = HeaderValue::from_str(&endpoint.authority())
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
                server_name,
                idle: RefCell::new(Vec::new()),
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
        let request = build_request(req, inner, index)?;
        inner.in_flight.set(inner.in_flight.get() + 1);
        let guard = InFlight(Rc::clone(inner));
        let (tx, rx) = futures_channel::oneshot::channel();
        let task_inner = Rc::clone(inner);
        rt::spawn(async move {
            let _guard = guard;
            let result = with_timeout(HARD_CAP, exchange(&task_inner, index, request, timeout))
                .await
                .unwrap_or(Err(NetError::Timeout));
            // The caller may be gone; then the answer is simply dropped.
            let _ = tx.send(result);
        })
        .detach();
        let timer = crate::net::sleep(timeout);
        match select(rx, timer).await {
            Either::Left((Ok(result), _)) => result,
            Either::Left((Err(_canceled), _)) => Err(NetError::Closed),
            Either::Right(_) => Err(NetError::Timeout),
        }
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
    let target = inner
        .targets
        .get(index)
        .ok_or_else(|| NetError::BadEndpoint("no such endpoint".into()))?;
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
    let target = inner
        .targets
        .get(index)
        .ok_or_else(|| NetError::BadEndpoint("no such endpoint".into()))?;
    loop {
        let reused = target.idle.borrow_mut().pop();
        let (mut conn, was_idle) = match reused {
            Some(c) if !c.sender.is_closed() => (c, true),
            Some(_) => continue,
            None => (connect(inner, target, connect_timeout).await?, false),
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
            handshake(HyperIo::from(tls_stream)).await
        }
        _ => handshake(HyperIo::from(stream)).await,
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
