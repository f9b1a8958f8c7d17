//! One core's HTTP server: the accept loop, one hyper connection task per client
//! connection, routing, authentication and the small routes. Everything here is owned
//! by the core it runs on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{select, Either};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;

use crate::auth::CustomerId;
use crate::conn::{ConnClock, Phase, Watched};
use crate::metrics::{Counter, Route, SellerOutcome};
use crate::net::CoreTimer;
use crate::problem::ApiProblem;
use crate::quotes;
use crate::respond::{json, problem, text, Body};
use crate::rt::{self, HyperIo, TcpListener, TcpStream};
use crate::sellers::SellerError;
use crate::state::Core;

/// Counts a request as in flight on its core for as long as it lives.
struct InFlight<'a>(&'a Core);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .set(self.0.in_flight.get().saturating_sub(1));
    }
}

/// Accepts connections until shutdown, then waits (up to the grace period) for open
/// connections to finish their in-flight requests.
pub async fn serve(core: Rc<Core>, listener: TcpListener) {
    let grace = Duration::from_millis(core.shared.config.server.shutdown_grace_ms);
    let max_conns = core.shared.config.server.max_connections_per_core;
    loop {
        let accept = Box::pin(listener.accept());
        let stop = core.shutdown.wait();
        match select(accept, stop).await {
            Either::Left((Ok(stream), _)) => {
                core.shared
                    .metrics
                    .inc_counter(core.index, Counter::ConnectionsAccepted);
                if core.open_connections.get() >= max_conns {
                    // Shedding a connection is cheaper than letting every client slow down.
                    core.shared
                        .metrics
                        .inc_counter(core.index, Counter::LoadShed);
                    drop(stream);
                    continue;
                }
                let core = Rc::clone(&core);
                rt::spawn(async move { serve_connection(core, stream).await }).detach();
            }
            Either::Left((Err(e), _)) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(error = %e, core = core.index, "accept failed");
                rt::sleep(Duration::from_millis(10)).await;
            }
            Either::Right(_) => break,
        }
    }
    drop(listener);
    let until = Instant::now() + grace;
    while core.open_connections.get() > 0 && Instant::now() < until {
        rt::sleep(Duration::from_millis(10)).await;
    }
    if core.open_connections.get() > 0 {
        tracing::warn!(
            core = core.index,
            open = core.open_connections.get(),
            "grace period over; closing remaining connections"
        );
    }
}

async fn serve_connection(core: Rc<Core>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    core.open_connections.set(core.open_connections.get() + 1);
    core.shared.metrics.add_connection(core.index, 1);
    let cfg = &core.shared.config.server;
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timeout runs from the end of one answer to the end of the next
    // request's headers, so it would also be the idle keep-alive timeout; the clock below
    // keeps the two apart.
    builder
        .timer(CoreTimer)
        .header_read_timeout(None)
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    let clock = Rc::new(ConnClock::new());
    let svc_core = Rc::clone(&core);
    let svc_clock = Rc::clone(&clock);
    let service = service_fn(move |req| {
        let core = Rc::clone(&svc_core);
        let clock = Rc::clone(&svc_clock);
        async move {
            clock.enter(Phase::Busy, None);
            let answer = handle(&core, req).await;
            clock.enter(Phase::Idle, Some(Instant::now()));
            Ok::<_, Infallible>(answer)
        }
    });
    let io = Watched::new(HyperIo::from(stream), Rc::clone(&clock), cfg.max_uri_bytes);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let header = Duration::from_millis(cfg.header_read_timeout_ms);
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    let stop = std::pin::pin!(core.shutdown.wait());
    let late = std::pin::pin!(clock.expired(header, idle));
    let result = match select(conn.as_mut(), select(stop, late)).await {
        Either::Left((r, _)) => r,
        Either::Right((Either::Left(_), _)) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        Either::Right((Either::Right((phase, _)), _)) => {
            core.shared
                .metrics
                .inc_counter(core.index, Counter::ConnectionsTimedOut);
            if phase == Phase::Idle {
                // Between requests: hyper closes an idle connection at once.
                conn.as_mut().graceful_shutdown();
                conn.await
            } else {
                // A request's headers are overdue: there is nothing to answer yet.
                tracing::debug!(core = core.index, "client too slow sending headers");
                Ok(())
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
    core.open_connections
        .set(core.open_connections.get().saturating_sub(1));
    core.shared.metrics.add_connection(core.index, -1);
}

/// Routes one request and records its metrics.
async fn handle(core: &Rc<Core>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let (route, response) = route(core, req).await;
    core.shared.metrics.record_request(
        core.index,
        route,
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

async fn route(core: &Rc<Core>, req: Request<Incoming>) -> (Route, Response<Body>) {
    let limit = core.shared.config.server.max_uri_bytes;
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > limit {
        return (Route::Other, problem(&ApiProblem::uri_too_long(limit)));
    }
    let path = req.uri().path();
    let method = req.method();
    match path {
        "/healthz" => (
            Route::Healthz,
            only_get(method).unwrap_or_else(|| text(StatusCode::OK, "ok\n")),
        ),
        "/readyz" => {
            let ready = !core.shutdown.is_raised() && !core.shared.shutdown.load(Ordering::Relaxed);
            let answer = if ready {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            };
            (Route::Readyz, only_get(method).unwrap_or(answer))
        }
        "/metrics" => (
            Route::Metrics,
            only_get(method).unwrap_or_else(|| {
                let mut r = Response::new(Full::new(Bytes::from(core.shared.metrics.render())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }),
        ),
        "/v1/quotes" => {
            if let Some(r) = only_get(method) {
                return (Route::Quotes, r);
            }
            let _admitted = match admit(core, &req) {
                Ok(a) => a,
                Err(r) => return (Route::Quotes, *r),
            };
            (Route::Quotes, quote(core, req.uri().query()).await)
        }
        "/v1/purchases" => {
            if method != Method::POST {
                let mut r = problem(&ApiProblem::method_not_allowed());
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                return (Route::Purchases, r);
            }
            let (customer, _in_flight) = match admit(core, &req) {
                Ok(a) => a,
                Err(r) => return (Route::Purchases, *r),
            };
            (
                Route::Purchases,
                crate::purchase::post(core, req, customer).await,
            )
        }
        p if p.starts_with("/v1/purchases/") => {
            if let Some(r) = only_get(method) {
                return (Route::PurchaseGet, r);
            }
            let (customer, _in_flight) = match admit(core, &req) {
                Ok(a) => a,
                Err(r) => return (Route::PurchaseGet, *r),
            };
            let id = p.trim_start_matches("/v1/purchases/").to_string();
            (
                Route::PurchaseGet,
                crate::purchase::get(core, &id, customer).await,
            )
        }
        _ => (Route::Other, problem(&ApiProblem::not_found())),
    }
}

/// Load shedding and authentication for a `/v1` route: the customer and the guard that
/// counts the request in flight until it is dropped, or the answer that refuses it.
fn admit<'a>(
    core: &'a Core,
    req: &Request<Incoming>,
) -> Result<(CustomerId, InFlight<'a>), Box<Response<Body>>> {
    if core.in_flight.get() >= core.shared.config.server.max_in_flight_per_core {
        // Saturated: a fast 503 lets the client or the load balancer go elsewhere,
        // where queueing would only make every request late.
        core.shared
            .metrics
            .inc_counter(core.index, Counter::LoadShed);
        let mut r = problem(&ApiProblem::service_unavailable(
            "the engine is at capacity; retry shortly",
        ));
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return Err(Box::new(r));
    }
    let customer = core
        .keys
        .authenticate(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
        )
        .map_err(|e| {
            tracing::debug!(reason = %e, "rejected a request without a valid API key");
            Box::new(problem(&ApiProblem::unauthorized()))
        })?;
    if let Err(wait) = core
        .shared
        .rate_limits
        .take(customer.as_str(), Instant::now())
    {
        core.shared
            .metrics
            .inc_counter(core.index, Counter::RateLimited);
        let mut r = problem(&ApiProblem::too_many_requests(
            "this API key is over its request rate; retry after the Retry-After delay",
        ));
        // Whole seconds, rounded up: a client that waits that long is let in.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(Box::new(r));
    }
    core.in_flight.set(core.in_flight.get() + 1);
    Ok((customer, InFlight(core)))
}

/// `None` when the method is GET (or HEAD), else the 405 answer.
fn only_get(method: &Method) -> Option<Response<Body>> {
    if method == Method::GET || method == Method::HEAD {
        None
    } else {
        let mut r = problem(&ApiProblem::method_not_allowed());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        Some(r)
    }
}

async fn quote(core: &Rc<Core>, query: Option<&str>) -> Response<Body> {
    if core.shared.failpoint_panic && query.is_some_and(|q| q.contains("title=__panic__")) {
        // The test failpoint (see `Shared::failpoint_panic`): a stand-in for a bug.
        panic!("failpoint panic-on-quote");
    }
    let req = match quotes::parse_request(query, &core.fx) {
        Ok(r) => r,
        Err(p) => return problem(&p),
    };
    let deadline = Instant::now() + Duration::from_millis(core.shared.config.quotes.deadline_ms);
    let results = quotes::fan_out(core, &req.query, deadline).await;
    for r in &results {
        let outcome = match &r.outcome {
            Ok(_) => SellerOutcome::Ok,
            Err(SellerError::Timeout) => SellerOutcome::Timeout,
            Err(SellerError::RateLimited { .. }) => SellerOutcome::RateLimited,
            Err(SellerError::Unavailable(_)) => SellerOutcome::Unavailable,
            Err(e @ SellerError::Failed(_))
            | Err(e @ SellerError::Transient(_))
            | Err(e @ SellerError::Refused(_))
            | Err(e @ SellerError::InProgress { .. })
            | Err(e @ SellerError::Unconfirmed { .. }) => {
                tracing::debug!(seller = r.seller, why = %e, "seller quote failed");
                SellerOutcome::Error
            }
        };
        core.shared
            .metrics
            .record_seller(core.index, r.seller, outcome, r.latency);
    }
    let names: Vec<&str> = core.sellers.iter().map(|s| &*s.name).collect();
    let (body, complete) = quotes::build_answer(&req, &names, &results, &core.fx);
    if !complete {
        core.shared
            .metrics
            .inc_counter(core.index, Counter::QuotesPartial);
    }
    json(StatusCode::OK, body)
}

/// Binds this core's listener (with SO_REUSEPORT, so every core binds the same address,
/// and SO_REUSEADDR, so a restart binds while old connections linger in TIME_WAIT; see
/// `rt::net::TcpListener::bind` for why both).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}
