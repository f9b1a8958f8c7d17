//! Asking one seller for offers: json and xml sellers through the shared
//! `reqwest::Client` (its keep-alive pool does the connection reuse), line sellers
//! through a small pool of buffered TCP streams, one request in flight per connection.
//! The bytes on the wire are made and read by the protocol crate's codecs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bookbroker_protocols::http::{HttpRequest, Reply};
use bookbroker_protocols::line::{self, Request as LineRequest, Response as LineResponse};
use bookbroker_protocols::{json_seller, xml_seller, DecodeError, QuoteQuery, SellerOffer};
use reqwest::header::RETRY_AFTER;
use reqwest::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use crate::config::{Protocol, SellerConfig};

/// Idle line connections kept per seller; more may be open while busy, the rest are
/// closed when returned.
const MAX_IDLE_LINE_CONNECTIONS: usize = 32;

/// Why a seller contributed no offers.
#[derive(Debug)]
pub enum SellerError {
    /// No answer within the seller's timeout (or the quote deadline).
    Timeout,
    /// The seller said it is overloaded (HTTP 429/503, `BUSY`).
    RateLimited,
    /// Anything else: connection failure, bad status, malformed answer.
    Failed(String),
}

impl SellerError {
    /// The per-seller status shown to the customer.
    pub fn status(&self) -> &'static str {
        match self {
            SellerError::Timeout => "timeout",
            SellerError::RateLimited => "rate_limited",
            SellerError::Failed(_) => "error",
        }
    }
}

impl From<DecodeError> for SellerError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Busy { .. } => SellerError::RateLimited,
            other => SellerError::Failed(other.to_string()),
        }
    }
}

impl From<reqwest::Error> for SellerError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            SellerError::Timeout
        } else {
            SellerError::Failed(e.to_string())
        }
    }
}

impl From<std::io::Error> for SellerError {
    fn from(e: std::io::Error) -> Self {
        SellerError::Failed(e.to_string())
    }
}

/// One configured seller.
pub struct Seller {
    /// Name shown to customers.
    pub name: String,
    /// Per-request timeout from the config.
    pub timeout: Duration,
    transport: Transport,
}

enum Transport {
    /// json or xml over HTTP: base URLs such as `http://127.0.0.1:9001`.
    Http {
        xml: bool,
        bases: Vec<String>,
        next: AtomicUsize,
    },
    /// The line protocol over TCP.
    Line(LinePool),
}

impl Seller {
    /// Builds a seller from its config section.
    pub fn new(cfg: &SellerConfig) -> Result<Seller, String> {
        if cfg.endpoints.is_empty() {
            return Err(format!("seller {}: no endpoints", cfg.name));
        }
        let transport = match cfg.protocol {
            Protocol::Json | Protocol::Xml => {
                let bases = cfg
                    .endpoints
                    .iter()
                    .map(|e| {
                        if e.starts_with("http://") {
                            Ok(e.trim_end_matches('/').to_string())
                        } else {
                            Err(format!(
                                "seller {}: endpoint {e:?} is not http:// (the baseline has no TLS)",
                                cfg.name
                            ))
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Transport::Http {
                    xml: cfg.protocol == Protocol::Xml,
                    bases,
                    next: AtomicUsize::new(0),
                }
            }
            Protocol::Line => {
                let addrs = cfg
                    .endpoints
                    .iter()
                    .map(|e| {
                        e.strip_prefix("tcp://")
                            .map(|a| a.trim_end_matches('/').to_string())
                            .ok_or_else(|| {
                                format!("seller {}: endpoint {e:?} is not tcp://", cfg.name)
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Transport::Line(LinePool::new(addrs))
            }
        };
        Ok(Seller {
            name: cfg.name.clone(),
            timeout: cfg.timeout(),
            transport,
        })
    }

    /// Asks the seller for offers. The caller bounds the time.
    pub async fn quote(
        &self,
        http: &reqwest::Client,
        query: &QuoteQuery,
    ) -> Result<Vec<SellerOffer>, SellerError> {
        match &self.transport {
            Transport::Http { xml, bases, next } => {
                let base = pick(bases, next);
                if *xml {
                    let req = xml_seller::encode_quote(query);
                    send(http, base, req, xml_seller::decode_quote).await
                } else {
                    let req = json_seller::encode_quote(query);
                    send(http, base, req, json_seller::decode_quote).await
                }
            }
            Transport::Line(pool) => pool.quote(query).await,
        }
    }
}

/// Round-robin over a seller's endpoints.
fn pick<'a>(items: &'a [String], next: &AtomicUsize) -> &'a str {
    let i = next.fetch_add(1, Ordering::Relaxed) % items.len().max(1);
    items.get(i).map_or("", String::as_str)
}

/// Sends a codec-built request through the shared client and decodes the whole answer
/// with the protocol's decoder.
async fn send<T>(
    http: &reqwest::Client,
    base: &str,
    req: HttpRequest,
    decode: fn(Reply<'_>) -> Result<T, DecodeError>,
) -> Result<T, SellerError> {
    let method = Method::from_bytes(req.method.as_bytes())
        .map_err(|e| SellerError::Failed(format!("bad method: {e}")))?;
    let mut builder = http.request(method, format!("{base}{}", req.path_and_query));
    for (name, value) in req.headers {
        builder = builder.header(name, value);
    }
    if !req.body.is_empty() {
        builder = builder.body(req.body);
    }
    let response = builder.send().await?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.bytes().await?;
    Ok(decode(Reply {
        status,
        retry_after: retry_after.as_deref(),
        body: &body,
    })?)
}

/// Connections to one line seller. A request takes an idle connection (or opens one),
/// writes its line, reads lines until its tag's `END`, and puts the connection back.
/// A request that is cancelled (timeout) drops its connection, since the rest of that
/// answer is still on the wire.
pub struct LinePool {
    addrs: Vec<String>,
    next_addr: AtomicUsize,
    idle: Mutex<Vec<BufStream<TcpStream>>>,
    next_tag: AtomicU64,
}

impl LinePool {
    /// A pool for `addrs` (`host:port`), opened lazily.
    pub fn new(addrs: Vec<String>) -> LinePool {
        LinePool {
            addrs,
            next_addr: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            next_tag: AtomicU64::new(1),
        }
    }

    async fn take(&self) -> Result<BufStream<TcpStream>, SellerError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        let addr = pick(&self.addrs, &self.next_addr);
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(BufStream::new(stream))
    }

    fn put_back(&self, conn: BufStream<TcpStream>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_LINE_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// `QUOTE tag ISBN|TITLE …` → `OFFER` lines until `END`.
    pub async fn quote(&self, query: &QuoteQuery) -> Result<Vec<SellerOffer>, SellerError> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed).to_string();
        let mut out = Vec::with_capacity(64);
        LineRequest::Quote {
            tag: tag.clone(),
            query: query.clone(),
        }
        .encode(&mut out);

        let mut conn = self.take().await?;
        conn.write_all(&out).await?;
        conn.flush().await?;

        let mut offers = Vec::new();
        let mut buf = Vec::with_capacity(256);
        loop {
            buf.clear();
            // Bounded read: a seller that never sends LF cannot grow this buffer.
            let n = (&mut conn)
                .take(line::MAX_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await?;
            if n == 0 {
                return Err(SellerError::Failed("connection closed mid-answer".into()));
            }
            if buf.last() != Some(&b'\n') {
                return Err(SellerError::Failed("line too long".into()));
            }
            let response = LineResponse::decode(&buf)
                .map_err(|e| SellerError::Failed(format!("bad line: {e}")))?;
            if response.tag() != tag {
                // Left over from an earlier request; one request per connection at a
                // time means this should not happen, but it is harmless to skip.
                continue;
            }
            match response {
                LineResponse::Offer { offer, .. } => offers.push(offer),
                LineResponse::End { .. } => break,
                LineResponse::Busy { .. } => {
                    self.put_back(conn);
                    return Err(SellerError::RateLimited);
                }
                LineResponse::Err { code, message, .. } => {
                    self.put_back(conn);
                    return Err(SellerError::Failed(format!(
                        "seller error {code}: {message}"
                    )));
                }
                other => {
                    return Err(SellerError::Failed(format!(
                        "unexpected line in a quote answer: {other:?}"
                    )))
                }
            }
        }
        self.put_back(conn);
        Ok(offers)
    }
}
