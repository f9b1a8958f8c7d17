//! One core's view of the sellers: a client per seller that turns typed requests into
//! protocol bytes (through `bookbroker_protocols`) and moves them over that core's pooled
//! connections (through [`crate::net`]).
//!
//! Every failure is classified into the per-seller status the customer API reports, so
//! the fan-out never has to look at transport or codec details.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bookbroker_protocols::line::{Request as LineRequest, Response as LineResponse};
use bookbroker_protocols::{
    json_seller, xml_seller, CancelOutcome, Currency, DecodeError, OrderOutcome, OrderRequest,
    QuoteQuery, SellerOffer,
};

use crate::breaker::Breaker;
use crate::config::{HedgingConfig, Protocol, SellerConfig};
use crate::hedge::HedgeState;
use crate::net::{Endpoint, HttpPool, LinePool, NetError, OnTimeout};

/// Why a seller gave no usable quote. Each maps to one API status.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SellerError {
    /// No answer within the time allowed (`timeout`).
    #[error("timed out")]
    Timeout,
    /// The seller said it is overloaded (`rate_limited`).
    #[error("seller is overloaded (retry after {retry_after_ms:?} ms)")]
    RateLimited {
        /// What the seller asked for, when it said.
        retry_after_ms: Option<u64>,
    },
    /// We did not ask: the per-core concurrency limit for this seller is reached
    /// (`unavailable`).
    #[error("seller unavailable: {0}")]
    Unavailable(String),
    /// The seller failed in a way a retry may fix: the connection broke or could not be
    /// made, or a 5xx (`error`).
    #[error("{0}")]
    Transient(String),
    /// The seller answered, clearly, with a refusal: an `ERR`, an error code, a 4xx
    /// (`error`). For an order this means nothing was placed.
    #[error("{0}")]
    Refused(String),
    /// Anything else: garbage, an answer we cannot read (`error`).
    #[error("{0}")]
    Failed(String),
    /// The seller still works on an earlier order with the same idempotency key: the
    /// outcome is unknown, not refused (`error`).
    #[error("seller still working on this key (retry after {retry_after_ms:?} ms)")]
    InProgress {
        /// What the seller asked for, when it said.
        retry_after_ms: Option<u64>,
    },
    /// The seller confirmed order `order_id` with a total that cannot be read: the order
    /// exists and must be undone (`error`).
    #[error("order {order_id} confirmed with an unreadable total: {reason}")]
    Unconfirmed {
        /// The seller's order id.
        order_id: String,
        /// What is wrong with the total.
        reason: String,
    },
}

impl SellerError {
    /// Whether asking again (within the deadline and the retry budget) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SellerError::Transient(_))
    }

    /// The status string of the customer API.
    pub fn status(&self) -> &'static str {
        match self {
            SellerError::Timeout => "timeout",
            SellerError::RateLimited { .. } => "rate_limited",
            SellerError::Unavailable(_) => "unavailable",
            SellerError::Failed(_)
            | SellerError::Transient(_)
            | SellerError::Refused(_)
            | SellerError::InProgress { .. }
            | SellerError::Unconfirmed { .. } => "error",
        }
    }
}

impl From<NetError> for SellerError {
    fn from(e: NetError) -> Self {
        if e.is_timeout() {
            SellerError::Timeout
        } else if matches!(e, NetError::Overloaded) {
            SellerError::Unavailable("concurrency limit reached".into())
        } else if matches!(
            e,
            NetError::Connect { .. } | NetError::Closed | NetError::Io(_)
        ) {
            SellerError::Transient(e.to_string())
        } else {
            SellerError::Failed(e.to_string())
        }
    }
}

impl From<DecodeError> for SellerError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Busy { retry_after_ms } => SellerError::RateLimited { retry_after_ms },
            DecodeError::InProgress { retry_after_ms } => {
                SellerError::InProgress { retry_after_ms }
            }
            DecodeError::Unconfirmed { order_id, reason } => {
                SellerError::Unconfirmed { order_id, reason }
            }
            other if other.is_retryable() => SellerError::Transient(other.to_string()),
            DecodeError::Remote { .. } | DecodeError::Status(_) => {
                SellerError::Refused(e.to_string())
            }
            other => SellerError::Failed(other.to_string()),
        }
    }
}

enum Transport {
    Http(Rc<HttpPool>),
    Line(Rc<LinePool>),
}

/// A seller as one core talks to it.
pub struct SellerClient {
    /// Position in the config (and in metrics).
    pub index: usize,
    /// The seller's name.
    pub name: Rc<str>,
    /// The seller's own currency.
    pub currency: Currency,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Circuit breaker and `Retry-After` back-off.
    pub breaker: RefCell<Breaker>,
    /// The latency window and the token budget that hedges and retries draw on; `None`
    /// when `hedging.budget` is 0 (then there are neither hedges nor retries).
    pub hedge: Option<RefCell<HedgeState>>,
    /// Whether slow quote requests are hedged (`hedging.enabled`). Retries of failed
    /// requests do not depend on it, only on the budget.
    pub hedging: bool,
    protocol: Protocol,
    transport: Transport,
}

impl SellerClient {
    /// Builds the client for `cfg` on this core. `cores` divides the seller's
    /// `max_concurrency` so the limit holds for the whole engine.
    pub fn new(
        index: usize,
        cfg: &SellerConfig,
        hedging: &HedgingConfig,
        cores: usize,
    ) -> Result<SellerClient, NetError> {
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        let per_core = cfg.max_concurrency.div_ceil(cores.max(1)).max(1);
        let transport = match cfg.protocol {
            Protocol::Json | Protocol::Xml => {
                let needs_tls = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
                let tls: Option<Arc<rustls::ClientConfig>> = if needs_tls {
                    Some(crate::net::client_config(cfg.ca_file.as_deref())?)
                } else {
                    None
                };
                Transport::Http(Rc::new(HttpPool::new(endpoints, tls, per_core)?))
            }
            Protocol::Line => Transport::Line(Rc::new(LinePool::new(
                endpoints,
                cfg.line_connections.max(1),
                per_core,
                Duration::from_millis(cfg.timeout_ms),
            )?)),
        };
        let currency = Currency::parse(&cfg.currency)
            .map_err(|e| NetError::BadEndpoint(format!("seller {}: {e}", cfg.name)))?;
        let hedge = if hedging.budget > 0.0 {
            let state = HedgeState::new(
                hedging.budget,
                hedging.floor_per_sec,
                std::time::Instant::now(),
            )
            .map_err(|e| NetError::BadEndpoint(format!("latency histogram: {e}")))?;
            Some(RefCell::new(state))
        } else {
            None
        };
        Ok(SellerClient {
            breaker: RefCell::new(Breaker::default()),
            hedge,
            hedging: hedging.enabled,
            index,
            name: Rc::from(cfg.name.as_str()),
            currency,
            timeout: Duration::from_millis(cfg.timeout_ms),
            protocol: cfg.protocol,
            transport,
        })
    }

    /// Asks for offers, giving up after `timeout`. `attempt` 0 is the primary request;
    /// higher attempts go to another endpoint or connection.
    pub async fn quote(
        &self,
        query: &QuoteQuery,
        timeout: Duration,
        attempt: u32,
    ) -> Result<Vec<SellerOffer>, SellerError> {
        match (&self.transport, self.protocol) {
            (Transport::Http(pool), Protocol::Xml) => {
                let reply = pool
                    .send(&xml_seller::encode_quote(query), timeout, attempt)
                    .await?;
                Ok(xml_seller::decode_quote(reply.as_reply())?)
            }
            (Transport::Http(pool), _) => {
                let reply = pool
                    .send(&json_seller::encode_quote(query), timeout, attempt)
                    .await?;
                Ok(json_seller::decode_quote(reply.as_reply())?)
            }
            (Transport::Line(pool), _) => {
                let query = query.clone();
                let lines = pool
                    .call(
                        move |tag| LineRequest::Quote { tag, query },
                        timeout,
                        attempt,
                        OnTimeout::Forget,
                    )
                    .await?;
                line_offers(lines)
            }
        }
    }

    /// Places an order (never hedged: one request, on the first endpoint). Repeating
    /// the same idempotency key returns the same order.
    pub async fn order(
        &self,
        order: &OrderRequest,
        timeout: Duration,
    ) -> Result<OrderOutcome, SellerError> {
        match (&self.transport, self.protocol) {
            (Transport::Http(pool), Protocol::Xml) => {
                let reply = pool.call(&xml_seller::encode_order(order), timeout).await?;
                Ok(xml_seller::decode_order(reply.as_reply())?)
            }
            (Transport::Http(pool), _) => {
                let reply = pool
                    .call(&json_seller::encode_order(order), timeout)
                    .await?;
                Ok(json_seller::decode_order(reply.as_reply())?)
            }
            (Transport::Line(pool), _) => {
                let order = order.clone();
                let lines = pool
                    .call(
                        move |tag| LineRequest::Order { tag, order },
                        timeout,
                        0,
                        OnTimeout::Close,
                    )
                    .await?;
                match lines.into_iter().next() {
                    Some(LineResponse::Ordered {
                        order_id, total, ..
                    }) => Ok(OrderOutcome::Ordered { order_id, total }),
                    Some(LineResponse::OrderedUnreadable {
                        order_id,
                        total,
                        currency,
                        ..
                    }) => Err(SellerError::Unconfirmed {
                        order_id,
                        reason: format!("unreadable total {total:?} {currency:?}"),
                    }),
                    Some(LineResponse::SoldOut { .. }) => Ok(OrderOutcome::SoldOut),
                    Some(LineResponse::Price { total, .. }) => {
                        Ok(OrderOutcome::PriceChanged { total })
                    }
                    other => Err(line_failure(other)),
                }
            }
        }
    }

    /// Cancels an order (compensation); cancelling twice is fine.
    pub async fn cancel(&self, order_id: &str, timeout: Duration) -> Result<(), SellerError> {
        let outcome = match (&self.transport, self.protocol) {
            (Transport::Http(pool), Protocol::Xml) => {
                let reply = pool
                    .call(&xml_seller::encode_cancel(order_id), timeout)
                    .await?;
                xml_seller::decode_cancel(reply.as_reply())?
            }
            (Transport::Http(pool), _) => {
                let reply = pool
                    .call(&json_seller::encode_cancel(order_id), timeout)
                    .await?;
                json_seller::decode_cancel(reply.as_reply())?
            }
            (Transport::Line(pool), _) => {
                let order_id = order_id.to_string();
                let lines = pool
                    .call(
                        move |tag| LineRequest::Cancel { tag, order_id },
                        timeout,
                        0,
                        OnTimeout::Close,
                    )
                    .await?;
                match lines.into_iter().next() {
                    Some(LineResponse::Cancelled { .. }) => CancelOutcome::Cancelled,
                    other => return Err(line_failure(other)),
                }
            }
        };
        match outcome {
            CancelOutcome::Cancelled => Ok(()),
        }
    }

    /// Upstream connections this core has opened to the seller.
    pub fn connections_opened(&self) -> u64 {
        match &self.transport {
            Transport::Http(pool) => pool.connections_opened(),
            Transport::Line(pool) => pool.connections_opened(),
        }
    }
}

/// The error for a line answer that is not what an order or cancel expects.
fn line_failure(line: Option<LineResponse>) -> SellerError {
    match line {
        Some(LineResponse::Busy { retry_after_ms, .. }) => SellerError::RateLimited {
            retry_after_ms: Some(retry_after_ms),
        },
        Some(LineResponse::Err { code, message, .. }) => {
            SellerError::Refused(format!("seller error {code}: {message}"))
        }
        other => SellerError::Failed(format!("unexpected answer: {other:?}")),
    }
}

/// Collects the `OFFER` lines of a quote answer; `BUSY` and `ERR` become errors.
fn line_offers(lines: Vec<LineResponse>) -> Result<Vec<SellerOffer>, SellerError> {
    let mut offers = Vec::with_capacity(lines.len());
    for line in lines {
        match line {
            LineResponse::Offer { offer, .. } => offers.push(offer),
            LineResponse::End { .. } => return Ok(offers),
            LineResponse::Busy { retry_after_ms, .. } => {
                return Err(SellerError::RateLimited {
                    retry_after_ms: Some(retry_after_ms),
                })
            }
            LineResponse::Err { code, message, .. } => {
                return Err(SellerError::Failed(format!(
                    "seller error {code}: {message}"
                )))
            }
            other => {
                return Err(SellerError::Failed(format!(
                    "unexpected line in a quote answer: {other:?}"
                )))
            }
        }
    }
    Err(SellerError::Failed("quote answer ended without END".into()))
}
