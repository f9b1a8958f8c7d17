//! `GET /v1/quotes`: parse the customer's query, fan out to every seller at once under
//! one deadline, convert what arrived into the customer's currency and rank it.
//!
//! Invariants:
//! * the answer is sent by the deadline (plus scheduling noise) whatever the sellers do:
//!   every seller request carries a timeout no later than the deadline;
//! * offers are sorted by landed `total` ascending, ties broken by seller then offer id,
//!   so the same answers always give the same order;
//! * a seller whose offers cannot be converted or do not match the ISBN asked for is
//!   reported as `error` rather than shown with wrong numbers.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};

use bookbroker_protocols::http::parse_query;
use bookbroker_protocols::{
    ConditionFilter, Currency, FxTable, Isbn, Money, QuoteQuery, SellerOffer,
};
use serde::Serialize;

use crate::breaker::{Breaker, Refusal};
use crate::cache::{self, Lookup, QuoteCache};
use crate::hedge::HedgeState;
use crate::metrics::Counter;
use crate::problem::ApiProblem;
use crate::sellers::{SellerClient, SellerError};
use crate::state::Core;

pub use bookbroker_protocols::offer::MAX_TITLE_BYTES;

/// A validated quote request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest {
    /// What to look for.
    pub query: QuoteQuery,
    /// The customer's currency.
    pub currency: Currency,
    /// Condition filter.
    pub condition: ConditionFilter,
}

/// Parses the query string of `GET /v1/quotes`. Every problem is a 400 naming the
/// parameter; `fx` decides which currencies are known.
pub fn parse_request(query: Option<&str>, fx: &FxTable) -> Result<QuoteRequest, ApiProblem> {
    let pairs = parse_query(query.unwrap_or(""))
        .map_err(|e| ApiProblem::bad_request(format!("query string: {e}")))?;
    let mut isbn = None;
    let mut title = None;
    let mut currency = None;
    let mut condition = None;
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "isbn" => &mut isbn,
            "title" => &mut title,
            "currency" => &mut currency,
            "condition" => &mut condition,
            other => {
                return Err(ApiProblem::bad_request(format!(
                    "unknown query parameter {:?}; expected isbn, title, currency, condition",
                    truncate(other, 64)
                )))
            }
        };
        if slot.is_some() {
            return Err(ApiProblem::bad_request(format!(
                "query parameter {name} given twice"
            )));
        }
        *slot = Some(value);
    }
    let query = match (isbn, title) {
        (Some(_), Some(_)) => {
            return Err(ApiProblem::bad_request(
                "give either isbn or title, not both",
            ))
        }
        (None, None) => return Err(ApiProblem::bad_request("isbn or title is required")),
        (Some(isbn), None) => QuoteQuery::Isbn(
            Isbn::parse(&isbn).map_err(|e| ApiProblem::bad_request(format!("isbn: {e}")))?,
        ),
        (None, Some(title)) => {
            if title.trim().is_empty() {
                return Err(ApiProblem::bad_request("title must not be empty"));
            }
            if title.len() > MAX_TITLE_BYTES {
                return Err(ApiProblem::bad_request(format!(
                    "title is longer than {MAX_TITLE_BYTES} bytes"
                )));
            }
            if title.chars().any(char::is_control) {
                return Err(ApiProblem::bad_request(
                    "title must not contain control characters",
                ));
            }
            QuoteQuery::Title(title)
        }
    };
    let currency = match currency {
        None => fx.base(),
        Some(code) => {
            let c = Currency::parse(&code).map_err(|_| {
                ApiProblem::bad_request(format!(
                    "currency: unknown currency {:?}",
                    truncate(&code, 16)
                ))
            })?;
            if !fx.knows(c) {
                return Err(ApiProblem::bad_request(format!(
                    "currency: {c} has no exchange rate configured"
                )));
            }
            c
        }
    };
    let condition = match condition {
        None => ConditionFilter::Any,
        Some(text) => ConditionFilter::parse(&text)
            .ok_or_else(|| ApiProblem::bad_request("condition: expected any, new or used"))?,
    };
    Ok(QuoteRequest {
        query,
        currency,
        condition,
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What one seller contributed to a quote.
pub struct SellerResult {
    /// Index of the seller.
    pub seller: usize,
    /// Offers, or why there are none.
    pub outcome: Result<Vec<SellerOffer>, SellerError>,
    /// Time from the start of the fan-out to this seller's answer.
    pub latency: Duration,
    /// Whether a hedge was sent.
    pub hedged: bool,
}

/// Asks every seller at once; returns by `deadline`.
pub async fn fan_out(core: &Rc<Core>, query: &QuoteQuery, deadline: Instant) -> Vec<SellerResult> {
    let start = Instant::now();
    let calls = core.sellers.iter().map(|seller| async move {
        let (outcome, hedged) = match &core.cache {
            Some(cache) => cached(core, cache, seller.index, query, deadline).await,
            None => ask(core, seller, query, deadline).await,
        };
        SellerResult {
            seller: seller.index,
            outcome,
            latency: start.elapsed(),
            hedged,
        }
    });
    futures_util::future::join_all(calls).await
}

/// [`ask`] through the cache: a fresh answer is served as is, a call already in flight
/// for the same seller and query is joined, and only a miss asks the seller.
async fn cached(
    core: &Rc<Core>,
    cache: &RefCell<QuoteCache>,
    seller: usize,
    query: &QuoteQuery,
    deadline: Instant,
) -> (Result<Vec<SellerOffer>, SellerError>, bool) {
    let metrics = &core.shared.metrics;
    let now = Instant::now();
    let key = (seller, query.clone());
    let lookup = cache.borrow_mut().lookup(&key, now);
    let flight = match lookup {
        Lookup::Hit(offers) => {
            metrics.inc_counter(core.index, Counter::CacheHits);
            return (Ok(offers.to_vec()), false);
        }
        Lookup::Join(flight) => {
            metrics.inc_counter(core.index, Counter::CacheHits);
            flight
        }
        Lookup::Miss => {
            metrics.inc_counter(core.index, Counter::CacheMisses);
            let owner = Rc::clone(core);
            let q = query.clone();
            let flight = cache::flight(async move {
                let Some(seller) = owner.sellers.get(seller) else {
                    return (Err(SellerError::Failed("no such seller".into())), false);
                };
                let (outcome, hedged) = ask(&owner, seller, &q, deadline).await;
                (outcome.map(Rc::new), hedged)
            });
            // If this request goes away before the answer, the starter's guard inside
            // `single_flight` takes the entry out, so abandoned calls do not pile up.
            let (outcome, hedged) = cache::single_flight(cache, key, flight, now).await;
            return (outcome.map(|o| o.to_vec()), hedged);
        }
    };
    // A joined call runs to its starter's deadline; ours may be earlier.
    let remaining = deadline.saturating_duration_since(Instant::now());
    match crate::net::with_timeout(remaining, flight).await {
        Some((outcome, hedged)) => (outcome.map(|o| o.to_vec()), hedged),
        None => (Err(SellerError::Timeout), false),
    }
}

/// One seller's part of a fan-out: the breaker decides whether to ask at all, hedging
/// decides whether to ask twice, and the outcome feeds both.
async fn ask(
    core: &Core,
    seller: &SellerClient,
    query: &QuoteQuery,
    deadline: Instant,
) -> (Result<Vec<SellerOffer>, SellerError>, bool) {
    let metrics = &core.shared.metrics;
    let now = Instant::now();
    let budget = deadline.saturating_duration_since(now).min(seller.timeout);
    if budget.is_zero() {
        return (Err(SellerError::Timeout), false);
    }
    // Held until the outcome is known: dropped without one (this future cancelled, or
    // the outcome says we never asked), a half-open probe goes to the next request.
    let admission = match Breaker::enter(&seller.breaker, now) {
        Ok(admission) => admission,
        Err(refusal) => {
            return match refusal {
                Refusal::Open => {
                    metrics.inc_counter(core.index, Counter::BreakerRefusals);
                    (Err(SellerError::Unavailable("circuit open".into())), false)
                }
                Refusal::RetryAfter => {
                    metrics.inc_counter(core.index, Counter::RetryAfterRefusals);
                    (
                        Err(SellerError::RateLimited {
                            retry_after_ms: None,
                        }),
                        false,
                    )
                }
            };
        }
    };
    if let Some(hedge) = &seller.hedge {
        // Every primary earns its share of hedges and retries, hedged or not.
        hedge.borrow_mut().budget.deposit(now);
    }
    let (mut outcome, hedged) = match &seller.hedge {
        Some(hedge) if seller.hedging => hedged_quote(core, seller, hedge, query, budget).await,
        _ => (seller.quote(query, budget, 0).await, false),
    };
    if let (Err(e), Some(hedge)) = (&outcome, &seller.hedge) {
        if e.is_retryable() {
            outcome = retry(core, seller, hedge, query, now + budget, outcome).await;
        }
    }
    let done = Instant::now();
    match &outcome {
        Ok(_) => {
            admission.success();
            if let Some(hedge) = &seller.hedge {
                hedge.borrow_mut().window.record(done - now, done);
            }
        }
        Err(SellerError::RateLimited { retry_after_ms }) => {
            admission.busy(done, retry_after_ms.map(Duration::from_millis));
        }
        Err(SellerError::Timeout)
        | Err(SellerError::Failed(_))
        | Err(SellerError::Refused(_))
        | Err(SellerError::Transient(_))
        | Err(SellerError::InProgress { .. })
        | Err(SellerError::Unconfirmed { .. }) => {
            if admission.failure(done) {
                tracing::warn!(
                    seller = &*seller.name,
                    "circuit opened after repeated failures"
                );
                metrics.inc_counter(core.index, Counter::BreakerOpened);
            }
        }
        // Not asked: no outcome to record; dropping the admission frees a probe.
        Err(SellerError::Unavailable(_)) => drop(admission),
    }
    (outcome, hedged)
}

/// One retry of a request that failed in a way a retry may fix, after a short jittered
/// back-off, if the deadline leaves room and the hedging budget (shared by hedges and
/// retries) has a token. Otherwise the first outcome stands.
async fn retry(
    core: &Core,
    seller: &SellerClient,
    hedge: &RefCell<HedgeState>,
    query: &QuoteQuery,
    until: Instant,
    first: Result<Vec<SellerOffer>, SellerError>,
) -> Result<Vec<SellerOffer>, SellerError> {
    // 1–4 ms, spread by the wall clock's low bits so retries from many requests do not
    // align.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = u64::from(nanos % 3000);
    let backoff = Duration::from_micros(1000 + jitter);
    let left = until.saturating_duration_since(Instant::now());
    if left < backoff + MIN_RETRY_BUDGET {
        return first;
    }
    if !hedge.borrow_mut().budget.try_withdraw(Instant::now()) {
        core.shared
            .metrics
            .inc_counter(core.index, Counter::HedgeBudgetExhausted);
        return first;
    }
    core.shared
        .metrics
        .inc_counter(core.index, Counter::Retries);
    crate::rt::sleep(backoff).await;
    let left = until.saturating_duration_since(Instant::now());
    seller.quote(query, left, 1).await
}

/// Least time worth a retry.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(5);

/// Sends the quote, and a second copy if the first has not answered by the seller's
/// recent p(1−b) latency and the budget allows; the first answer wins.
async fn hedged_quote(
    core: &Core,
    seller: &SellerClient,
    hedge: &RefCell<HedgeState>,
    query: &QuoteQuery,
    budget: Duration,
) -> (Result<Vec<SellerOffer>, SellerError>, bool) {
    let metrics = &core.shared.metrics;
    let delay = hedge.borrow_mut().hedge_delay(Instant::now());
    let primary = seller.quote(query, budget, 0);
    let Some(delay) = delay.filter(|d| *d < budget) else {
        return (primary.await, false);
    };
    let mut primary = std::pin::pin!(primary);
    let timer = crate::net::sleep(delay);
    if let Either::Left((outcome, _)) = select(primary.as_mut(), timer).await {
        return (outcome, false);
    }
    if !hedge.borrow_mut().budget.try_withdraw(Instant::now()) {
        metrics.inc_counter(core.index, Counter::HedgeBudgetExhausted);
        return (primary.await, false);
    }
    metrics.inc_counter(core.index, Counter::HedgesSent);
    let backup = std::pin::pin!(seller.quote(query, budget.saturating_sub(delay), 1));
    match select(primary, backup).await {
        Either::Left((Ok(offers), _)) => (Ok(offers), true),
        Either::Right((Ok(offers), _)) => {
            metrics.inc_counter(core.index, Counter::HedgesWon);
            (Ok(offers), true)
        }
        // The first to finish failed: the other one may still succeed.
        Either::Left((Err(_), backup)) => {
            let outcome = backup.await;
            if outcome.is_ok() {
                metrics.inc_counter(core.index, Counter::HedgesWon);
            }
            (outcome, true)
        }
        Either::Right((Err(_), primary)) => (primary.await, true),
    }
}

#[derive(Serialize)]
struct QueryEcho<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    isbn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
}

#[derive(Serialize)]
struct Amounts<'a> {
    price: i64,
    shipping: i64,
    total: i64,
    currency: &'a str,
}

#[derive(Serialize)]
struct OfferOut<'a> {
    seller: &'a str,
    offer_id: &'a str,
    isbn: &'a str,
    title: &'a str,
    condition: &'static str,
    price: i64,
    shipping: i64,
    total: i64,
    currency: &'a str,
    original: Amounts<'a>,
}

#[derive(Serialize)]
struct SellerOut<'a> {
    seller: &'a str,
    status: &'static str,
    latency_ms: f64,
    hedged: bool,
}

#[derive(Serialize)]
struct QuoteBody<'a> {
    query: QueryEcho<'a>,
    currency: &'a str,
    complete: bool,
    offers: Vec<OfferOut<'a>>,
    sellers: Vec<SellerOut<'a>>,
}

/// A converted offer, ready to rank.
pub(crate) struct Landed<'a> {
    /// The seller's name.
    pub(crate) seller: &'a str,
    /// The offer as the seller sent it.
    pub(crate) offer: &'a SellerOffer,
    /// Price in the customer's currency.
    pub(crate) price: i64,
    /// Shipping in the customer's currency.
    pub(crate) shipping: i64,
    /// `price + shipping`.
    pub(crate) total: i64,
}

/// Converts, filters, ranks and serializes. Returns the JSON body and whether every
/// seller answered.
pub fn build_answer(
    req: &QuoteRequest,
    seller_names: &[&str],
    results: &[SellerResult],
    fx: &FxTable,
) -> (Vec<u8>, bool) {
    let mut landed: Vec<Landed<'_>> = Vec::new();
    let mut statuses = Vec::with_capacity(results.len());
    for r in results {
        let name = seller_names.get(r.seller).copied().unwrap_or("?");
        let status = match &r.outcome {
            Ok(offers) => match land(req, name, offers, fx, &mut landed) {
                Ok(()) => "ok",
                Err(why) => {
                    tracing::warn!(seller = name, %why, "discarding a seller's quote");
                    "error"
                }
            },
            Err(e) => e.status(),
        };
        statuses.push(SellerOut {
            seller: name,
            status,
            latency_ms: (r.latency.as_secs_f64() * 10_000.0).round() / 10.0,
            hedged: r.hedged,
        });
    }
    landed.sort_by(|a, b| {
        a.total
            .cmp(&b.total)
            .then_with(|| a.seller.cmp(b.seller))
            .then_with(|| a.offer.offer_id.cmp(&b.offer.offer_id))
    });
    let complete = statuses.iter().all(|s| s.status == "ok");
    let currency = req.currency.code();
    let offers = landed
        .iter()
        .map(|l| OfferOut {
            seller: l.seller,
            offer_id: &l.offer.offer_id,
            isbn: l.offer.isbn.as_str(),
            title: &l.offer.title,
            condition: l.offer.condition.as_str(),
            price: l.price,
            shipping: l.shipping,
            total: l.total,
            currency,
            original: Amounts {
                price: l.offer.price,
                shipping: l.offer.shipping,
                total: l.offer.price.saturating_add(l.offer.shipping),
                currency: l.offer.currency.code(),
            },
        })
        .collect();
    let (isbn, title) = match &req.query {
        QuoteQuery::Isbn(i) => (Some(i.as_str()), None),
        QuoteQuery::Title(t) => (None, Some(t.as_str())),
    };
    let body = QuoteBody {
        query: QueryEcho { isbn, title },
        currency,
        complete,
        offers,
        sellers: statuses,
    };
    // Serializing plain structs of strings and integers cannot fail; an empty body
    // would be caught by every client, but keep the error visible in logs.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not serialize a quote answer");
        Vec::new()
    });
    (bytes, complete)
}

/// Converts one seller's offers into the customer's currency and keeps those that pass
/// the filters. A seller that sends an offer we cannot trust spoils its whole answer.
pub(crate) fn land<'a>(
    req: &QuoteRequest,
    seller: &'a str,
    offers: &'a [SellerOffer],
    fx: &FxTable,
    out: &mut Vec<Landed<'a>>,
) -> Result<(), String> {
    let mark = out.len();
    for offer in offers {
        if let QuoteQuery::Isbn(isbn) = &req.query {
            if offer.isbn != *isbn {
                out.truncate(mark);
                return Err(format!("offer {:?} is for another ISBN", offer.offer_id));
            }
        }
        if offer.price < 0 || offer.shipping < 0 {
            out.truncate(mark);
            return Err(format!("offer {:?} has a negative amount", offer.offer_id));
        }
        if !req.condition.accepts(offer.condition) {
            continue;
        }
        let convert = |minor: i64| {
            fx.convert(Money::new(minor, offer.currency), req.currency)
                .map(|m| m.minor)
                .map_err(|e| format!("offer {:?}: {e}", offer.offer_id))
        };
        let (price, shipping) = match (convert(offer.price), convert(offer.shipping)) {
            (Ok(p), Ok(s)) => (p, s),
            (Err(e), _) | (_, Err(e)) => {
                out.truncate(mark);
                return Err(e);
            }
        };
        out.push(Landed {
            seller,
            offer,
            price,
            shipping,
            total: price.saturating_add(shipping),
        });
    }
    Ok(())
}
