//! The `line` front end: pipelined requests over plain TCP. Every request is answered by
//! its own task after its simulated delay, so answers may leave in another order than
//! the requests came; one writer task per connection keeps each answer's lines together.

use std::sync::Arc;
use std::time::Instant;

use bookbroker_protocols::admin;
use bookbroker_protocols::line::{sanitize_field, LineBuffer, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use super::rng::fast_u64;
use super::seller::{
    bump, CancelError, Fault, OrderError, OrderReply, RequestKind, SellerState,
    IN_PROGRESS_RETRY_MS,
};

/// Answers queued per connection before request tasks wait for the writer.
const QUEUE: usize = 1024;
/// Bytes gathered into one write.
const BATCH: usize = 64 * 1024;

enum Out {
    /// Lines to write.
    Data(Vec<u8>),
    /// Bytes to write, then close the connection.
    Close(Vec<u8>),
}

/// Serves one line-protocol connection.
pub(crate) async fn serve_connection(stream: TcpStream, seller: Arc<SellerState>) {
    let accepted = Instant::now();
    let (reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(QUEUE);
    let closed = Arc::new(Notify::new());
    tokio::spawn(write_loop(writer, rx, closed.clone()));
    tokio::select! {
        () = read_loop(reader, tx, seller, accepted) => {}
        () = closed.notified() => {}
    }
}

async fn write_loop(mut writer: OwnedWriteHalf, mut rx: mpsc::Receiver<Out>, closed: Arc<Notify>) {
    let mut buf = Vec::with_capacity(8 * 1024);
    'outer: while let Some(first) = rx.recv().await {
        let mut close = false;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Data(bytes) => buf.extend_from_slice(&bytes),
                Out::Close(bytes) => {
                    buf.extend_from_slice(&bytes);
                    close = true;
                    break;
                }
            }
            if buf.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if writer.write_all(&buf).await.is_err() {
            break 'outer;
        }
        buf.clear();
        if close {
            let _ = writer.shutdown().await;
            break 'outer;
        }
    }
    closed.notify_one();
}

async fn read_loop(
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<Out>,
    seller: Arc<SellerState>,
    accepted: Instant,
) {
    let mut lines = LineBuffer::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        lines.extend(chunk.get(..n).unwrap_or(&[]));
        while let Some(next) = lines.next_line() {
            match next {
                Ok(line) => handle_line(line, &tx, &seller, accepted).await,
                Err(e) => {
                    bump(&seller.stats.other);
                    let mut out = Vec::new();
                    err_line("-", "bad_request", &e.to_string()).encode(&mut out);
                    // The framing is lost; nothing after this can be trusted.
                    let _ = tx.send(Out::Close(out)).await;
                    return;
                }
            }
        }
    }
}

fn err_line(tag: &str, code: &str, message: &str) -> Response {
    Response::Err {
        tag: tag.to_string(),
        code: code.to_string(),
        message: sanitize_field(message).into_owned(),
    }
}

/// The tag of a line that does not decode, so the error can still be matched.
fn tag_of(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(2, ' ');
    let _verb = parts.next();
    let tag = parts
        .next()
        .and_then(|rest| rest.split('\t').next())
        .unwrap_or("")
        .trim();
    if tag.is_empty() {
        "-".to_string()
    } else {
        tag.to_string()
    }
}

async fn handle_line(
    line: &[u8],
    tx: &mpsc::Sender<Out>,
    seller: &Arc<SellerState>,
    accepted: Instant,
) {
    // The admin listing is not part of the protocol's vocabulary: it is answered here,
    // before a product request is decoded.
    if let Some(listing) = admin::decode_line_request(line) {
        bump(&seller.stats.other);
        let mut out = Vec::new();
        match listing {
            Ok(tag) => admin::encode_line(&tag, &seller.admin_orders().orders, &mut out),
            Err(e) => err_line(&tag_of(line), "bad_request", &e.to_string()).encode(&mut out),
        }
        let _ = tx.send(Out::Data(out)).await;
        return;
    }
    let request = match Request::decode(line) {
        Ok(r) => r,
        Err(e) => {
            bump(&seller.stats.other);
            let mut out = Vec::new();
            err_line(&tag_of(line), "bad_request", &e.to_string()).encode(&mut out);
            let _ = tx.send(Out::Data(out)).await;
            return;
        }
    };
    let kind = match &request {
        Request::Quote { .. } => RequestKind::Quote,
        Request::Order { .. } => RequestKind::Order,
        Request::Cancel { .. } => RequestKind::Cancel,
    };
    bump(match kind {
        RequestKind::Quote => &seller.stats.quote,
        RequestKind::Order => &seller.stats.order,
        RequestKind::Cancel => &seller.stats.cancel,
    });
    // A silent seller reads on and says nothing; the connection stays open.
    if seller.silenced(accepted) {
        return;
    }
    let fault = seller.draw_fault(kind);
    if fault == Fault::Hang {
        return;
    }
    let delay = seller.delay();
    let tx = tx.clone();
    let seller = seller.clone();
    tokio::spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let out = answer(&seller, request, fault).await;
        let _ = tx.send(out).await;
    });
}

async fn answer(seller: &Arc<SellerState>, request: Request, fault: Fault) -> Out {
    let mut out = Vec::new();
    let tag = request.tag().to_string();
    match fault {
        Fault::Overload => {
            let retry_after_ms = seller.faults.retry_after_s.saturating_mul(1000);
            Response::Busy {
                tag,
                retry_after_ms,
            }
            .encode(&mut out);
            return Out::Data(out);
        }
        Fault::Error => {
            err_line(&tag, "internal", "simulated failure").encode(&mut out);
            return Out::Data(out);
        }
        Fault::Garbage => {
            // The right tag with fields that decode to nothing, and no END: a client
            // that cannot parse it must give up on this tag.
            out.extend_from_slice(b"OFFER ");
            out.extend_from_slice(tag.as_bytes());
            out.extend_from_slice(b"\t");
            let len = 8 + (fast_u64() % 32) as usize;
            for _ in 0..len {
                // Printable junk, never TAB or LF, so the line framing stays intact.
                out.push(b'!' + (fast_u64() % 94) as u8);
            }
            out.push(b'\n');
            return Out::Data(out);
        }
        Fault::None | Fault::Close | Fault::Hang => {}
    }
    match request {
        Request::Quote { tag, query } => {
            for offer in seller.quote(&query) {
                Response::Offer {
                    tag: tag.clone(),
                    offer,
                }
                .encode(&mut out);
            }
            Response::End { tag }.encode(&mut out);
        }
        Request::Order { tag, order } => match seller.order(&order).await {
            Ok(OrderReply::Outcome(bookbroker_protocols::OrderOutcome::Ordered {
                order_id,
                total,
            })) => Response::Ordered {
                tag,
                order_id,
                total,
            }
            .encode(&mut out),
            Ok(OrderReply::Outcome(bookbroker_protocols::OrderOutcome::SoldOut)) => {
                Response::SoldOut { tag }.encode(&mut out)
            }
            Ok(OrderReply::Outcome(bookbroker_protocols::OrderOutcome::PriceChanged { total })) => {
                Response::Price { tag, total }.encode(&mut out)
            }
            // The first attempt with this key is still running: ask again shortly.
            Ok(OrderReply::InProgress) => Response::Busy {
                tag,
                retry_after_ms: IN_PROGRESS_RETRY_MS,
            }
            .encode(&mut out),
            Err(e @ OrderError::UnknownOffer) => {
                err_line(&tag, "unknown_offer", &e.to_string()).encode(&mut out)
            }
            Err(e @ OrderError::WrongCurrency { .. }) => {
                err_line(&tag, "wrong_currency", &e.to_string()).encode(&mut out)
            }
        },
        Request::Cancel { tag, order_id } => match seller.cancel_answer(&order_id).await {
            Ok(()) => Response::Cancelled { tag }.encode(&mut out),
            Err(e @ CancelError::UnknownOrder) => {
                err_line(&tag, "unknown_order", &e.to_string()).encode(&mut out)
            }
        },
    }
    if fault == Fault::Close {
        out.truncate(out.len() / 2);
        return Out::Close(out);
    }
    Out::Data(out)
}
