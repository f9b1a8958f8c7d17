//! One client connection's I/O, between the socket and hyper: the clock behind the idle
//! and header timeouts, and problem+json in place of hyper's bare automatic answers.
//!
//! hyper answers a request it cannot parse by itself, before any route runs: `400` for
//! bad syntax, `414` for a request target over 64 KiB, `431` for a head over its buffer
//! or too many headers. Those answers have no body and no `Content-Type`, where every
//! other error the engine sends is problem+json. [`Watched`] recognises them on their
//! way out (an error status and no `Content-Type`, which no answer of ours lacks) and
//! sends the problem+json equivalent in their place, still closing the connection.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::problem::ApiProblem;
use crate::rt::{self, HyperIo};

/// Where a client connection is, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Receiving a request's headers (or waiting for the first request): limited by
    /// `server.header_read_timeout_ms`.
    Head,
    /// Working on a request: the routes bound their own time.
    Busy,
    /// Between requests on a keep-alive connection: limited by `server.idle_timeout_ms`.
    Idle,
}

/// A connection's phase and when it began. The service moves it to `Busy` and back to
/// `Idle`; the first bytes read while `Idle` move it to `Head`.
#[derive(Debug)]
pub struct ConnClock {
    phase: Cell<Phase>,
    since: Cell<Instant>,
}

impl Default for ConnClock {
    fn default() -> Self {
        ConnClock::new()
    }
}

impl ConnClock {
    /// A clock for a connection just accepted: waiting for its first request's head.
    pub fn new() -> ConnClock {
        ConnClock {
            phase: Cell::new(Phase::Head),
            since: Cell::new(Instant::now()),
        }
    }

    /// Moves to `phase`; `at` restarts the phase's time (`None` keeps it).
    pub fn enter(&self, phase: Phase, at: Option<Instant>) {
        self.phase.set(phase);
        if let Some(at) = at {
            self.since.set(at);
        }
    }

    /// Resolves with the phase once the connection has stayed in `Head` or `Idle`
    /// longer than that phase allows. It sleeps until the current deadline and looks
    /// again, so a busy connection costs one timer per period, not one per request.
    pub async fn expired(&self, header: Duration, idle: Duration) -> Phase {
        loop {
            let phase = self.phase.get();
            let limit = match phase {
                Phase::Head => header,
                Phase::Idle => idle,
                Phase::Busy => {
                    rt::sleep(header.min(idle)).await;
                    continue;
                }
            };
            let left = (self.since.get() + limit).saturating_duration_since(Instant::now());
            if left.is_zero() {
                return phase;
            }
            rt::sleep(left).await;
        }
    }
}

/// A client connection's I/O as hyper sees it: it tells the clock when a new request
/// starts arriving, and replaces hyper's bare automatic error answers.
pub struct Watched {
    io: HyperIo,
    clock: Rc<ConnClock>,
    /// `server.max_uri_bytes`, for the 414's detail.
    max_uri_bytes: usize,
    /// The rest of a replacement answer the socket has not taken yet.
    pending: Vec<u8>,
}

impl Watched {
    /// Wraps a connection.
    pub fn new(io: HyperIo, clock: Rc<ConnClock>, max_uri_bytes: usize) -> Watched {
        Watched {
            io,
            clock,
            max_uri_bytes,
            pending: Vec::new(),
        }
    }

    /// Writes what is left of a replacement answer; ready once nothing is.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            match hyper::rt::Write::poll_write(Pin::new(&mut self.io), cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n.min(self.pending.len()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// When `buf` is one of hyper's automatic answers, queues its problem+json
    /// replacement and returns true.
    fn replace_automatic(&mut self, buf: &[u8]) -> bool {
        let Some(status) = automatic_answer(buf) else {
            return false;
        };
        let problem = match status {
            414 => ApiProblem::uri_too_long(self.max_uri_bytes),
            431 => ApiProblem::too_many_headers(),
            _ => ApiProblem::bad_request("the request is not valid HTTP/1.1"),
        };
        let body = problem.body();
        let reason = match status {
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            ApiProblem::CONTENT_TYPE,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        self.pending = out;
        true
    }
}

/// The status of `head` when it is one of hyper's automatic answers (400, 414 or 431
/// with no `Content-Type`: every answer the routes make has one).
fn automatic_answer(head: &[u8]) -> Option<u16> {
    let status = match head.get(..12)? {
        b"HTTP/1.1 400" => 400,
        b"HTTP/1.1 414" => 414,
        b"HTTP/1.1 431" => 431,
        _ => return None,
    };
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let fields = head.get(..end)?;
    let typed = fields.split(|&b| b == b'\n').any(|line| {
        line.get(..13)
            .is_some_and(|name| name.eq_ignore_ascii_case(b"content-type:"))
    });
    (!typed).then_some(status)
}

impl hyper::rt::Read for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = hyper::rt::Read::poll_read(Pin::new(&mut this.io), cx, buf);
        if r.is_ready() && this.clock.phase.get() == Phase::Idle {
            this.clock.enter(Phase::Head, Some(Instant::now()));
        }
        r
    }
}

impl hyper::rt::Write for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if this.clock.phase.get() == Phase::Head && this.replace_automatic(buf) {
            // hyper's answer counts as written; ours goes out in its place.
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        hyper::rt::Write::poll_write(Pin::new(&mut this.io), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        hyper::rt::Write::poll_flush(Pin::new(&mut this.io), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        hyper::rt::Write::poll_shutdown(Pin::new(&mut this.io), cx)
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if this.clock.phase.get() == Phase::Head {
            // hyper's automatic answer is a head alone, in the first slice.
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if this.replace_automatic(first) {
                    let _ = this.drain(cx)?;
                    return Poll::Ready(Ok(first.len()));
                }
            }
        }
        hyper::rt::Write::poll_write_vectored(Pin::new(&mut this.io), cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::automatic_answer;

    #[test]
    fn recognises_hypers_bare_answers_only() {
        assert_eq!(
            automatic_answer(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n"),
            Some(414)
        );
        assert_eq!(
            automatic_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            automatic_answer(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\n\r\n{}"
            ),
            None
        );
        assert_eq!(
            automatic_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
            None
        );
        assert_eq!(automatic_answer(b"HTTP/1.1 431"), None);
    }
}
