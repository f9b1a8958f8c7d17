//! The HTTP front end: json sellers, xml sellers and the payment provider, served by
//! hyper over plain TCP or TLS, with keep-alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bookbroker_protocols::http::HttpResponse;
use bookbroker_protocols::{json_seller, payment, xml_seller};
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::payment::{json_error, PaymentFault, PaymentOp, PaymentState};
use super::rng::fast_u64;
use super::seller::{
    bump, CancelError, Fault, OrderError, OrderReply, RequestKind, SellerState, SellerStatsView,
};

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// How long a hung request holds its connection before it is closed without an answer.
const HANG_LIMIT: Duration = Duration::from_secs(30);

/// Marks a response that must not be sent: the service fails instead, and hyper closes
/// the connection without answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hung request given up")
    }
}

impl std::error::Error for HangUp {}

/// Marks a response that must not be sent: like [`HangUp`], and the connection is reset
/// (`SO_LINGER` 0, so the peer sees a reset rather than an orderly close) when the
/// connection supports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

/// A TCP stream that, when asked to, makes its close a reset: on drop it sets
/// `SO_LINGER` to 0 first, so the kernel sends RST and discards unsent data. Used for the
/// payment provider's `reset_rate`.
pub(crate) struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ResettableStream {
    /// Wraps a stream; the flag, once set, turns the close into a reset.
    pub(crate) fn new(stream: TcpStream) -> (ResettableStream, Arc<AtomicBool>) {
        let reset = Arc::new(AtomicBool::new(false));
        (
            ResettableStream {
                stream,
                reset: reset.clone(),
            },
            reset,
        )
    }
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            // Linger 0 closes at once (no blocking in drop) with a reset; should the
            // option fail, the close is an orderly one, which still gives no answer.
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The error a cut-off body reports to hyper, which then closes the connection.
#[derive(Debug)]
pub(crate) struct CutOff;

impl std::fmt::Display for CutOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer cut off on purpose")
    }
}

impl std::error::Error for CutOff {}

/// A response body: whole, or deliberately cut off after a first part.
#[derive(Debug)]
pub(crate) enum SimBody {
    /// The whole body (taken when sent).
    Full(Option<Bytes>),
    /// A first part, then (after a short pause, so the part reaches the wire) an error
    /// that makes hyper abort the connection mid-answer.
    CutOff {
        /// The part still to send.
        part: Option<Bytes>,
        /// The pause before the error, once started.
        pause: Option<Pin<Box<tokio::time::Sleep>>>,
        /// Whether the error was reported.
        failed: bool,
    },
}

/// How long a cut-off answer lingers after its first part.
const CUT_OFF_PAUSE: Duration = Duration::from_millis(5);

impl Body for SimBody {
    type Data = Bytes;
    type Error = CutOff;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutOff>>> {
        let this = self.get_mut();
        match this {
            SimBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            SimBody::CutOff {
                part,
                pause,
                failed,
            } => {
                if let Some(d) = part.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if *failed {
                    return Poll::Ready(None);
                }
                let sleep =
                    pause.get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_OFF_PAUSE)));
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        *failed = true;
                        Poll::Ready(Some(Err(CutOff)))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::CutOff { .. } => SizeHint::default(),
        }
    }
}

fn plain(status: u16, text: &'static str) -> Response<SimBody> {
    let mut resp = Response::new(SimBody::Full(Some(Bytes::from_static(text.as_bytes()))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// Moves a codec's answer onto hyper.
fn to_hyper(r: HttpResponse) -> Response<SimBody> {
    let mut builder = Response::builder()
        .status(r.status)
        .header(CONTENT_TYPE, r.content_type);
    for (name, value) in &r.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(SimBody::Full(Some(Bytes::from(r.body))))
        .unwrap_or_else(|_| plain(500, "simulator built an invalid response"))
}

/// The answer, cut off about half-way; `Content-Length` promises the whole.
fn cut_off(r: HttpResponse) -> Response<SimBody> {
    let full = r.body.len();
    let mut resp = to_hyper(HttpResponse {
        body: Vec::new(),
        ..r.clone()
    });
    let part = Bytes::from(r.body).slice(..full / 2);
    *resp.body_mut() = SimBody::CutOff {
        part: Some(part),
        pause: None,
        failed: false,
    };
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(full));
    resp
}

/// Random bytes with a success status and a plausible content type.
fn garbage(content_type: &'static str) -> Response<SimBody> {
    let mut body = b"{\"offers\": [{\"offer_id\": <<".to_vec();
    let len = 16 + (fast_u64() % 48) as usize;
    for _ in 0..len {
        body.push((fast_u64() & 0xff) as u8);
    }
    let mut resp = Response::new(SimBody::Full(Some(Bytes::from(body))));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_value<T: Serialize>(value: &T) -> Response<SimBody> {
    match serde_json::to_vec(value) {
        Ok(body) => to_hyper(HttpResponse {
            status: 200,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        }),
        Err(_) => plain(500, "cannot encode"),
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Response<SimBody>> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(plain(413, "request body too large or broken")),
    }
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// What a listener serves.
#[derive(Clone)]
pub(crate) enum HttpApp {
    /// A json seller.
    Json(Arc<SellerState>),
    /// An xml seller.
    Xml(Arc<SellerState>),
    /// The payment provider (with every seller, for `/admin/stats`).
    Payment {
        state: Arc<PaymentState>,
        latency: Duration,
        sellers: Arc<Vec<Arc<SellerState>>>,
    },
}

impl HttpApp {
    /// Whether this is the payment provider (whose connections may be reset).
    pub(crate) fn is_payment(&self) -> bool {
        matches!(self, HttpApp::Payment { .. })
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<SimBody> {
        match self {
            HttpApp::Json(seller) => json_handle(seller, req).await,
            HttpApp::Xml(seller) => xml_handle(seller, req).await,
            HttpApp::Payment {
                state,
                latency,
                sellers,
            } => payment_handle(state, *latency, sellers, req).await,
        }
    }
}

/// The common pattern of a seller request: count it, draw a fault, wait, then answer
/// (or not, or badly).
async fn seller_fault_then(
    seller: &SellerState,
    kind: RequestKind,
    overload: impl FnOnce() -> HttpResponse,
    error: impl FnOnce() -> HttpResponse,
) -> Result<Fault, Response<SimBody>> {
    let counter = match kind {
        RequestKind::Quote => &seller.stats.quote,
        RequestKind::Order => &seller.stats.order,
        RequestKind::Cancel => &seller.stats.cancel,
    };
    bump(counter);
    let fault = seller.draw_fault(kind);
    if fault == Fault::Hang {
        // Never answer; but give the connection up eventually, since hyper does not read
        // (and so never notices the client leaving) while a request is in flight.
        tokio::time::sleep(HANG_LIMIT).await;
        let mut resp = plain(500, "");
        resp.extensions_mut().insert(HangUp);
        return Err(resp);
    }
    pause(seller.delay()).await;
    match fault {
        Fault::Overload => Err(to_hyper(overload())),
        Fault::Error => Err(to_hyper(error())),
        other => Ok(other),
    }
}

/// Applies a quote fault (garbage, cut-off) to a finished answer.
fn quote_answer(
    fault: Fault,
    answer: HttpResponse,
    content_type: &'static str,
) -> Response<SimBody> {
    match fault {
        Fault::Garbage => garbage(content_type),
        Fault::Close => cut_off(answer),
        _ => to_hyper(answer),
    }
}

async fn json_handle(seller: &Arc<SellerState>, req: Request<Incoming>) -> Response<SimBody> {
    use json_seller::server::{self as codec, Route};
    let retry_after = seller.faults.retry_after_s;
    let overload = || codec::encode_error(429, "overloaded", Some(retry_after));
    let error = || codec::encode_error(500, "internal_error", None);
    let route = codec::route(req.method().as_str(), req.uri().path());
    match route {
        Route::Quote => {
            let fault = match seller_fault_then(seller, RequestKind::Quote, overload, error).await {
                Ok(f) => f,
                Err(resp) => return resp,
            };
            let answer = match codec::decode_quote(req.uri().query().unwrap_or("")) {
                Ok(query) => codec::encode_quote(&seller.quote(&query)),
                Err(e) => codec::encode_error(400, &format!("bad_request: {e}"), None),
            };
            quote_answer(fault, answer, "application/json")
        }
        Route::Order => {
            let key = req
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            if let Err(resp) = seller_fault_then(seller, RequestKind::Order, overload, error).await
            {
                return resp;
            }
            let answer = match codec::decode_order(key.as_deref(), &body) {
                Ok(order) => match seller.order(&order).await {
                    Ok(OrderReply::Outcome(outcome)) => codec::encode_order(&outcome),
                    Ok(OrderReply::InProgress) => codec::encode_in_progress(),
                    Err(OrderError::UnknownOffer) => {
                        codec::encode_error(404, "unknown_offer", None)
                    }
                    Err(e @ OrderError::WrongCurrency { .. }) => {
                        codec::encode_error(400, &format!("wrong_currency: {e}"), None)
                    }
                },
                Err(e) => codec::encode_error(400, &format!("bad_request: {e}"), None),
            };
            to_hyper(answer)
        }
        Route::Cancel(order_id) => {
            if let Err(resp) = seller_fault_then(seller, RequestKind::Cancel, overload, error).await
            {
                return resp;
            }
            let answer = match seller.cancel_answer(&order_id).await {
                Ok(()) => codec::encode_cancel(&order_id),
                Err(CancelError::UnknownOrder) => codec::encode_error(404, "unknown_order", None),
            };
            to_hyper(answer)
        }
        Route::AdminOrders => {
            bump(&seller.stats.other);
            json_value(&seller.admin_orders())
        }
        Route::NotFound => {
            bump(&seller.stats.other);
            to_hyper(codec::encode_error(404, "not_found", None))
        }
    }
}

async fn xml_handle(seller: &Arc<SellerState>, req: Request<Incoming>) -> Response<SimBody> {
    use xml_seller::server::{self as codec, Route};
    let retry_after = seller.faults.retry_after_s;
    let overload = || codec::encode_error(503, "busy", Some(retry_after));
    let error = || codec::encode_error(500, "internalError", None);
    let route = codec::route(req.method().as_str(), req.uri().path());
    match route {
        Route::Quote => {
            let fault = match seller_fault_then(seller, RequestKind::Quote, overload, error).await {
                Ok(f) => f,
                Err(resp) => return resp,
            };
            let answer = match codec::decode_quote(req.uri().query().unwrap_or("")) {
                Ok(query) => codec::encode_quote(&seller.quote(&query)),
                Err(e) => codec::encode_error(400, &format!("badRequest: {e}"), None),
            };
            quote_answer(fault, answer, "application/xml")
        }
        Route::Order => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            if let Err(resp) = seller_fault_then(seller, RequestKind::Order, overload, error).await
            {
                return resp;
            }
            let answer = match codec::decode_order(&body, seller.currency) {
                Ok(order) => match seller.order(&order).await {
                    Ok(OrderReply::Outcome(outcome)) => codec::encode_order(&outcome),
                    Ok(OrderReply::InProgress) => codec::encode_in_progress(),
                    Err(OrderError::UnknownOffer) => codec::encode_error(404, "unknownBook", None),
                    Err(e @ OrderError::WrongCurrency { .. }) => {
                        codec::encode_error(400, &format!("wrongCurrency: {e}"), None)
                    }
                },
                Err(e) => codec::encode_error(400, &format!("badRequest: {e}"), None),
            };
            to_hyper(answer)
        }
        Route::Cancel => {
            let body = match read_body(req.into_body()).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            if let Err(resp) = seller_fault_then(seller, RequestKind::Cancel, overload, error).await
            {
                return resp;
            }
            let answer = match codec::decode_cancel(&body) {
                Ok(order_id) => match seller.cancel_answer(&order_id).await {
                    Ok(()) => codec::encode_cancel(),
                    Err(CancelError::UnknownOrder) => {
                        codec::encode_error(404, "unknownOrder", None)
                    }
                },
                Err(e) => codec::encode_error(400, &format!("badRequest: {e}"), None),
            };
            to_hyper(answer)
        }
        Route::AdminOrders => {
            bump(&seller.stats.other);
            json_value(&seller.admin_orders())
        }
        Route::NotFound => {
            bump(&seller.stats.other);
            to_hyper(codec::encode_error(404, "notFound", None))
        }
    }
}

/// `GET /admin/stats` body.
#[derive(Serialize)]
struct StatsBody {
    sellers: Vec<SellerStatsView>,
}

async fn payment_handle(
    state: &Arc<PaymentState>,
    latency: Duration,
    sellers: &[Arc<SellerState>],
    req: Request<Incoming>,
) -> Response<SimBody> {
    use payment::server::{self as codec, Route};
    let path = req.uri().path().to_string();
    if req.method() == http::Method::GET && path == "/admin/stats" {
        return json_value(&StatsBody {
            sellers: sellers.iter().map(|s| s.stats_view()).collect(),
        });
    }
    let op = match codec::route(req.method().as_str(), &path) {
        Route::Ledger => return json_value(&state.ledger()),
        Route::NotFound => return to_hyper(json_error(404, "not_found")),
        Route::Authorize => PaymentOp::Authorize,
        Route::Capture(id) => PaymentOp::Capture(id),
        Route::Void(id) => PaymentOp::Void(id),
        Route::Refund(id) => PaymentOp::Refund(id),
    };
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return to_hyper(json_error(400, "missing_idempotency_key"));
    };
    pause(latency).await;
    // Faults are drawn only here, for the state-changing calls: the ledger, the stats
    // and request errors above are never faulty or slow.
    let fault = state.draw_fault(&op);
    if fault.before_effect() {
        return fault_answer(fault);
    }
    let answer = state.run(&op, &path, &key, &body).await;
    match fault {
        PaymentFault::None => to_hyper(answer),
        // The operation took effect (and its result is stored for repeats); the caller
        // never hears of it.
        _ => fault_answer(fault),
    }
}

/// The answer a faulty payment request gets: a 500, or no answer and a reset connection.
fn fault_answer(fault: PaymentFault) -> Response<SimBody> {
    match fault {
        PaymentFault::Reset { .. } => {
            let mut resp = plain(500, "");
            resp.extensions_mut().insert(ResetConnection);
            resp
        }
        PaymentFault::Error { .. } | PaymentFault::None => to_hyper(json_error(500, "internal")),
    }
}

/// Serves one HTTP/1.1 connection (plain or TLS) until the peer closes it.
pub(crate) async fn serve_connection<I>(io: I, app: HttpApp)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_connection_with_reset(io, app, None).await;
}

/// Serves one HTTP/1.1 connection; a [`ResetConnection`] answer sets `reset` (the flag
/// of a [`ResettableStream`]) before the connection is dropped.
pub(crate) async fn serve_connection_with_reset<I>(
    io: I,
    app: HttpApp,
    reset: Option<Arc<AtomicBool>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        let reset = reset.clone();
        async move {
            let resp = app.handle(req).await;
            if resp.extensions().get::<ResetConnection>().is_some() {
                if let Some(flag) = &reset {
                    flag.store(true, Ordering::Relaxed);
                }
                Err(HangUp)
            } else if resp.extensions().get::<HangUp>().is_some() {
                Err(HangUp)
            } else {
                Ok(resp)
            }
        }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}
