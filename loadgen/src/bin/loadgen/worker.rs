//! One worker thread ("lane"): a tokio current-thread runtime driving C keep-alive
//! HTTP/1.1 connections and one release loop.
//!
//! The release loop wakes on a precise timer (see `clock`) and makes every request
//! whose intended time has passed available; idle connections are woken to take them.
//! A connection that finishes a request takes the next due one at once, without
//! waiting for the next tick. Each connection carries at most one request at a time,
//! so when all are busy, due requests wait, and that wait is part of their latency:
//! every latency is measured from the request's intended time, not from when it was
//! actually written (wrk2's correction of coordinated omission).
//!
//! Everything in a lane lives on one thread, so the shared state is `Rc` + `Cell`.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, LocalSet};
use tokio::time::Sleep;

use crate::clock::{now_ns, Ticker};
use crate::schedule::Schedule;
use crate::stats::{new_histogram, Stats};
use crate::workload::{Generator, Kind, Plan};

/// How often the release loop runs even without a due request (end of run, progress).
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// After the window closes, idle connections get this long to pick up the requests
/// the last tick released, before dispatching stops.
const CLOSING_GRACE: Duration = Duration::from_millis(2);
/// How often figures are published for the progress line, ns.
const PUBLISH_NS: u64 = 100_000_000;

/// What one worker needs to run.
pub struct WorkerConfig {
    /// This lane's timetable.
    pub schedule: Schedule,
    /// Warm-up + measured window, ns.
    pub window_ns: u64,
    /// Connections of this lane.
    pub connections: usize,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Per-request (and per-connect) timeout.
    pub timeout: Duration,
    /// Shortest release-timer period, ns.
    pub min_tick_ns: u64,
    /// A request handed to a connection later than this after its intended time
    /// counts as `fell_behind`, ns.
    pub behind_ns: u64,
    /// Request shapes.
    pub plan: Arc<Plan>,
    /// Random seed.
    pub seed: u64,
    /// Lane number (for the generator's key space).
    pub lane: usize,
    /// Where progress is published about once a second.
    pub progress: Arc<Mutex<Progress>>,
}

/// Figures a worker publishes for the progress line (all phases, warm-up included).
pub struct Progress {
    /// Requests handed to a connection.
    pub sent: u64,
    /// HTTP answers.
    pub responses: u64,
    /// Connect, timeout, I/O and protocol errors.
    pub errors: u64,
    /// Requests sent later than the behind threshold.
    pub behind: u64,
    /// Latencies since the last time the reader took them, µs.
    pub hist: Histogram<u64>,
}

impl Progress {
    /// Zeroed progress.
    pub fn new() -> Result<Progress, hdrhistogram::CreationError> {
        Ok(Progress {
            sent: 0,
            responses: 0,
            errors: 0,
            behind: 0,
            hist: new_histogram()?,
        })
    }
}

/// The worker's report of its connection set-up.
pub struct Ready {
    /// Connections established.
    pub connected: usize,
    /// The first connect error, if any.
    pub error: Option<String>,
}

/// Runs one lane: connects, reports readiness on `ready`, waits for the common start
/// time on `start` (`None` = abort), sends, drains, and returns the lane's figures.
pub fn run_worker(
    cfg: WorkerConfig,
    ready: mpsc::Sender<Ready>,
    start: mpsc::Receiver<Option<u64>>,
) -> anyhow::Result<Stats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let local = LocalSet::new();
    let mut stats = Stats::new()?;
    let lane = Rc::new(Lane {
        generator: RefCell::new(Generator::new(cfg.plan.clone(), cfg.seed, cfg.lane)),
        start_ns: Cell::new(u64::MAX),
        next: Cell::new(0),
        due: Cell::new(0),
        stopping: Cell::new(false),
        idle: RefCell::new(Vec::with_capacity(cfg.connections)),
        woken: Cell::new(0),
        signals: (0..cfg.connections).map(|_| Signal::default()).collect(),
        inflight: Cell::new(0),
        waited_mark: Cell::new(0),
        stats: RefCell::new(Stats::new()?),
        interval: RefCell::new(new_histogram()?),
        sent_all: Cell::new(0),
        responses_all: Cell::new(0),
        errors_all: Cell::new(0),
        behind_all: Cell::new(0),
        cfg,
    });

    // Connect every connection before the clock starts, so that set-up is not
    // measured; those that fail are retried by their first request.
    let conns: Vec<Option<Conn>> = rt.block_on(local.run_until({
        let lane = lane.clone();
        async move {
            let handles: Vec<JoinHandle<Result<Conn, String>>> = (0..lane.cfg.connections)
                .map(|_| {
                    let lane = lane.clone();
                    tokio::task::spawn_local(async move {
                        match tokio::time::timeout(lane.cfg.timeout, connect(lane.cfg.addr)).await {
                            Ok(r) => r,
                            Err(_) => {
                                Err(format!("connect timed out after {:?}", lane.cfg.timeout))
                            }
                        }
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(handles.len());
            let mut first_error = None;
            for h in handles {
                match h.await {
                    Ok(Ok(c)) => out.push(Some(c)),
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                        out.push(None);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e.to_string());
                        out.push(None);
                    }
                }
            }
            let connected = out.iter().filter(|c| c.is_some()).count();
            let _ = ready.send(Ready {
                connected,
                error: first_error,
            });
            out
        }
    }));

    let Ok(Some(start_ns)) = start.recv() else {
        // Told to abort (or the main thread is gone): nothing was sent.
        return Ok(stats);
    };
    lane.start_ns.set(start_ns);

    let result = rt.block_on(local.run_until({
        let lane = lane.clone();
        async move {
            for (id, conn) in conns.into_iter().enumerate() {
                tokio::task::spawn_local(connection_task(lane.clone(), id, conn));
            }
            release_loop(&lane).await
        }
    }));
    // Dropping the runtime cancels whatever is still in flight after the drain.
    drop(local);
    drop(rt);
    result?;
    let mut lane_stats = lane.stats.borrow_mut();
    lane_stats.scheduled = lane.cfg.schedule.measured_total();
    stats.merge(&lane_stats);
    Ok(stats)
}

/// A one-slot wake-up for one connection task (single-threaded).
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.set.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            let mut slot = self.waker.borrow_mut();
            match slot.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }
}

/// State shared by a lane's tasks.
struct Lane {
    cfg: WorkerConfig,
    generator: RefCell<Generator>,
    /// Common start (absolute ns); `u64::MAX` until known.
    start_ns: Cell<u64>,
    /// Next request index to hand out.
    next: Cell<u64>,
    /// Requests due as of the last look at the clock.
    due: Cell<u64>,
    /// No more requests are handed out.
    stopping: Cell<bool>,
    /// Connections waiting for work (a stack: the most recently used goes first).
    idle: RefCell<Vec<usize>>,
    /// Connections woken for work that have not run yet.
    woken: Cell<u64>,
    signals: Vec<Signal>,
    /// Requests on the wire.
    inflight: Cell<u64>,
    /// Requests up to here were already checked for "every connection busy".
    waited_mark: Cell<u64>,
    stats: RefCell<Stats>,
    /// Latencies for the progress line since the last publication.
    interval: RefCell<Histogram<u64>>,
    sent_all: Cell<u64>,
    responses_all: Cell<u64>,
    errors_all: Cell<u64>,
    behind_all: Cell<u64>,
}

impl Lane {
    /// Hands out the next due request, if any, looking at the clock if needed.
    fn take(&self, now: u64) -> Option<u64> {
        let start = self.start_ns.get();
        if self.stopping.get() || now < start {
            return None;
        }
        let i = self.next.get();
        if i >= self.due.get() {
            let due = self.cfg.schedule.due(now - start);
            if due > self.due.get() {
                self.due.set(due);
            }
            if i >= due {
                return None;
            }
        }
        self.next.set(i + 1);
        Some(i)
    }

    /// Makes every request due by `now` available and wakes idle connections for them.
    fn release(&self, now: u64) {
        let start = self.start_ns.get();
        if now < start || self.stopping.get() {
            return;
        }
        let due = self.cfg.schedule.due(now - start).max(self.due.get());
        self.due.set(due);
        let backlog = due - self.next.get();
        {
            let mut idle = self.idle.borrow_mut();
            while backlog > self.woken.get() {
                let Some(id) = idle.pop() else { break };
                self.woken.set(self.woken.get() + 1);
                if let Some(s) = self.signals.get(id) {
                    s.notify();
                }
            }
        }
        // Requests for which no idle connection was left: they wait for one to finish.
        let unassigned = backlog.saturating_sub(self.woken.get());
        if unassigned > 0 {
            let from = (due - unassigned)
                .max(self.waited_mark.get())
                .max(self.cfg.schedule.first_measured_index());
            if due > from {
                self.stats.borrow_mut().waited += due - from;
            }
            self.waited_mark.set(due);
        }
    }

    /// Stops dispatching and lets idle connections exit.
    fn stop(&self) {
        self.stopping.set(true);
        let idle: Vec<usize> = self.idle.borrow_mut().drain(..).collect();
        for id in idle {
            if let Some(s) = self.signals.get(id) {
                s.notify();
            }
        }
    }

    fn publish(&self) {
        let Ok(mut p) = self.cfg.progress.lock() else {
            return;
        };
        p.sent = self.sent_all.get();
        p.responses = self.responses_all.get();
        p.errors = self.errors_all.get();
        p.behind = self.behind_all.get();
        let mut interval = self.interval.borrow_mut();
        let _ = p.hist.add(&*interval);
        interval.reset();
    }
}

/// The release loop: runs until the window closes, then drains in-flight requests for
/// at most the timeout.
async fn release_loop(lane: &Lane) -> anyhow::Result<()> {
    let start = lane.start_ns.get();
    let sched = &lane.cfg.schedule;
    let end = start.saturating_add(lane.cfg.window_ns);
    let ticker = Ticker::new(
        start.saturating_add(sched.offset_ns(0)),
        sched.tick_ns(lane.cfg.min_tick_ns),
    )
    .context("cannot create the release timer")?;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_publish = start.saturating_add(PUBLISH_NS);
    loop {
        tokio::select! {
            biased;
            r = ticker.tick() => { r.context("release timer failed")?; }
            _ = housekeeping.tick() => {}
        }
        let now = now_ns();
        lane.release(now.min(end));
        if now >= next_publish {
            lane.publish();
            next_publish = next_publish.saturating_add(PUBLISH_NS);
        }
        if now >= end {
            break;
        }
    }
    tokio::time::sleep(CLOSING_GRACE).await;
    lane.stop();
    let drain_end = now_ns().saturating_add(lane.cfg.timeout.as_nanos() as u64);
    while lane.inflight.get() > 0 && now_ns() < drain_end {
        housekeeping.tick().await;
    }
    lane.publish();
    Ok(())
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The driver owns the socket; stopping it closes the connection at once.
        self.driver.abort();
    }
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    // Requests are small and latency-bound: never let Nagle hold one back.
    stream
        .set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
    let driver = tokio::task::spawn_local(async move {
        // Its errors also reach the request in flight, which counts them.
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}

/// How one request ended.
enum Outcome {
    Response(u16),
    Connect,
    Timeout,
    Io,
    Protocol,
}

fn classify(e: &hyper::Error) -> Outcome {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        Outcome::Protocol
    } else if e.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::Io
    }
}

async fn connection_task(lane: Rc<Lane>, id: usize, mut conn: Option<Conn>) {
    // One timer per connection, re-armed only when it fires (see `with_deadline`).
    let mut timer: Pin<Box<Sleep>> = Box::pin(tokio::time::sleep(Duration::ZERO));
    let timeout_ns = lane.cfg.timeout.as_nanos() as u64;
    loop {
        let mut now = now_ns();
        let i = loop {
            if lane.stopping.get() {
                return;
            }
            if let Some(i) = lane.take(now) {
                // Under load, answers arrive far more often than timer ticks: waking
                // idle connections for the rest of the backlog here too keeps dispatch
                // delays near the gap between answers, not the tick period.
                lane.release(now);
                break i;
            }
            lane.idle.borrow_mut().push(id);
            if let Some(s) = lane.signals.get(id) {
                s.wait().await;
            }
            lane.woken.set(lane.woken.get().saturating_sub(1));
            now = now_ns();
        };
        let intended = lane
            .start_ns
            .get()
            .saturating_add(lane.cfg.schedule.offset_ns(i));
        let measured = lane.cfg.schedule.is_measured(i);
        let late = now.saturating_sub(intended) > lane.cfg.behind_ns;
        let (kind, req) = lane.generator.borrow_mut().next_request();
        lane.sent_all.set(lane.sent_all.get() + 1);
        if late {
            lane.behind_all.set(lane.behind_all.get() + 1);
        }
        if measured {
            let mut s = lane.stats.borrow_mut();
            s.sent += 1;
            s.fell_behind += u64::from(late);
            match kind {
                Kind::Quote => s.quotes_sent += 1,
                Kind::Purchase => s.purchases_sent += 1,
                Kind::DuplicatePurchase => {
                    s.purchases_sent += 1;
                    s.duplicates += 1;
                }
            }
        }

        lane.inflight.set(lane.inflight.get() + 1);
        let outcome = exchange(
            &lane,
            &mut conn,
            req,
            now.saturating_add(timeout_ns),
            &mut timer,
        )
        .await;
        lane.inflight.set(lane.inflight.get() - 1);
        let done = now_ns();

        match outcome {
            Outcome::Response(status) => {
                let us = done.saturating_sub(intended) / 1000;
                lane.responses_all.set(lane.responses_all.get() + 1);
                lane.interval.borrow_mut().saturating_record(us);
                if measured {
                    let mut s = lane.stats.borrow_mut();
                    s.responses += 1;
                    s.count_status(status);
                    s.all.saturating_record(us);
                    s.dispatch
                        .saturating_record(now.saturating_sub(intended) / 1000);
                    s.service.saturating_record(done.saturating_sub(now) / 1000);
                    match kind {
                        Kind::Quote => s.quotes.saturating_record(us),
                        Kind::Purchase | Kind::DuplicatePurchase => {
                            s.purchases.saturating_record(us)
                        }
                    }
                }
            }
            err => {
                // The connection is in an unknown state (or gone): start afresh.
                conn = None;
                lane.errors_all.set(lane.errors_all.get() + 1);
                if measured {
                    let mut s = lane.stats.borrow_mut();
                    match err {
                        Outcome::Connect => s.connect_errors += 1,
                        Outcome::Timeout => s.timeouts += 1,
                        Outcome::Protocol => s.protocol_errors += 1,
                        Outcome::Io | Outcome::Response(_) => s.io_errors += 1,
                    }
                }
            }
        }
    }
}

/// Sends one request on `conn` (connecting first if needed) and reads the whole answer.
async fn exchange(
    lane: &Lane,
    conn: &mut Option<Conn>,
    req: Request<Full<Bytes>>,
    deadline_ns: u64,
    timer: &mut Pin<Box<Sleep>>,
) -> Outcome {
    let connecting = Cell::new(false);
    let work = async {
        if conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
            *conn = None;
        }
        // Two tries: a kept-alive connection may turn out closed by the server between
        // requests, which is not the request's fault.
        for attempt in 0..2 {
            if conn.is_none() {
                connecting.set(true);
                match connect(lane.cfg.addr).await {
                    Ok(c) => *conn = Some(c),
                    Err(_) => return Outcome::Connect,
                }
                connecting.set(false);
            }
            let Some(c) = conn.as_mut() else {
                return Outcome::Connect;
            };
            if c.sender.ready().await.is_ok() {
                break;
            }
            *conn = None;
            if attempt == 1 {
                return Outcome::Io;
            }
        }
        let Some(c) = conn.as_mut() else {
            return Outcome::Connect;
        };
        let response = match c.sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return classify(&e),
        };
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                return classify(&e);
            }
        }
        Outcome::Response(status)
    };
    match with_deadline(work, deadline_ns, timer).await {
        Some(outcome) => outcome,
        None if connecting.get() => Outcome::Connect,
        None => Outcome::Timeout,
    }
}

/// Runs `fut` until `deadline_ns`. The connection's one `Sleep` is not re-armed for
/// every request (that would touch the timer wheel twice per request): it keeps its
/// old, earlier deadline, and only when it fires is it moved to the current one.
async fn with_deadline<F: Future>(
    fut: F,
    deadline_ns: u64,
    timer: &mut Pin<Box<Sleep>>,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = now_ns();
            if now >= deadline_ns {
                return Poll::Ready(None);
            }
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_nanos(deadline_ns - now));
        }
    })
    .await
}
