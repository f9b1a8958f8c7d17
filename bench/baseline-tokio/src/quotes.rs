//! `GET /v1/quotes`: validate the query, ask every seller concurrently with a timeout
//! each, convert every offer into the customer's currency, sort cheapest first, answer
//! in the shape of the engine's answer (contract section 2).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bookbroker_protocols::{
    ConditionFilter, Currency, FxTable, Isbn, Money, QuoteQuery, SellerOffer,
};
use serde::{Deserialize, Serialize};

use crate::sellers::{Seller, SellerError};

/// Longest title accepted, in bytes (the engine's limit).
const MAX_TITLE_BYTES: usize = 512;

/// What every handler shares.
pub struct AppState {
    /// Sellers in config order.
    pub sellers: Vec<Seller>,
    /// Exchange rates.
    pub fx: FxTable,
    /// One deadline for the whole fan-out.
    pub deadline: Duration,
    /// The one HTTP client for json and xml sellers (its pool keeps connections alive).
    pub http: reqwest::Client,
}

/// The query string of `GET /v1/quotes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteParams {
    /// ISBN-10 or ISBN-13, hyphens allowed.
    pub isbn: Option<String>,
    /// A title, forwarded to the sellers as given.
    pub title: Option<String>,
    /// The customer's currency; the FX base by default.
    pub currency: Option<String>,
    /// `any` (default), `new` or `used`.
    pub condition: Option<String>,
}

/// A 400 answer as `application/problem+json`.
pub struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": "Bad Request",
            "status": 400,
            "detail": self.0,
        });
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

struct Validated {
    query: QuoteQuery,
    currency: Currency,
    condition: ConditionFilter,
}

fn validate(params: QuoteParams, fx: &FxTable) -> Result<Validated, BadRequest> {
    let bad = |msg: String| BadRequest(msg);
    let query = match (params.isbn, params.title) {
        (Some(_), Some(_)) => return Err(bad("give either isbn or title, not both".into())),
        (None, None) => return Err(bad("isbn or title is required".into())),
        (Some(isbn), None) => {
            QuoteQuery::Isbn(Isbn::parse(&isbn).map_err(|e| bad(format!("isbn: {e}")))?)
        }
        (None, Some(title)) => {
            if title.trim().is_empty() {
                return Err(bad("title must not be empty".into()));
            }
            if title.len() > MAX_TITLE_BYTES {
                return Err(bad(format!("title is longer than {MAX_TITLE_BYTES} bytes")));
            }
            if title.chars().any(char::is_control) {
                return Err(bad("title must not contain control characters".into()));
            }
            QuoteQuery::Title(title)
        }
    };
    let currency = match params.currency {
        None => fx.base(),
        Some(code) => {
            let currency = Currency::parse(&code).map_err(|e| bad(format!("currency: {e}")))?;
            if !fx.knows(currency) {
                return Err(bad(format!(
                    "currency: {currency} has no exchange rate configured"
                )));
            }
            currency
        }
    };
    let condition = match params.condition {
        None => ConditionFilter::Any,
        Some(text) => ConditionFilter::parse(&text)
            .ok_or_else(|| bad("condition: expected any, new or used".into()))?,
    };
    Ok(Validated {
        query,
        currency,
        condition,
    })
}

#[derive(Serialize)]
struct QueryEcho {
    #[serde(skip_serializing_if = "Option::is_none")]
    isbn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<String>,
}

#[derive(Serialize)]
struct Original {
    price: i64,
    shipping: i64,
    total: i64,
    currency: Currency,
}

#[derive(Serialize)]
struct OfferOut {
    seller: String,
    offer_id: String,
    isbn: String,
    title: String,
    condition: &'static str,
    price: i64,
    shipping: i64,
    total: i64,
    currency: Currency,
    original: Original,
}

#[derive(Serialize)]
struct SellerOut {
    seller: String,
    status: &'static str,
    latency_ms: f64,
    hedged: bool,
}

/// The answer body.
#[derive(Serialize)]
pub struct QuoteAnswer {
    query: QueryEcho,
    currency: Currency,
    complete: bool,
    offers: Vec<OfferOut>,
    sellers: Vec<SellerOut>,
}

/// The `GET /v1/quotes` handler. The `Authorization` header is accepted and not checked:
/// the baseline measures the quote path, not authentication.
pub async fn get_quotes(
    State(state): State<Arc<AppState>>,
    params: Result<Query<QuoteParams>, QueryRejection>,
) -> Result<Json<QuoteAnswer>, BadRequest> {
    let Query(params) = params.map_err(|e| BadRequest(e.body_text()))?;
    let req = validate(params, &state.fx)?;

    let start = Instant::now();
    let calls = state.sellers.iter().map(|seller| {
        let state = &state;
        let query = &req.query;
        async move {
            let budget = seller.timeout.min(state.deadline);
            let outcome = match tokio::time::timeout(budget, seller.quote(&state.http, query)).await
            {
                Ok(outcome) => outcome,
                Err(_elapsed) => Err(SellerError::Timeout),
            };
            (seller, outcome, start.elapsed())
        }
    });
    let results = futures::future::join_all(calls).await;

    let mut offers = Vec::new();
    let mut sellers = Vec::with_capacity(results.len());
    for (seller, outcome, latency) in results {
        let status = match outcome {
            Ok(found) => match land(&req, &seller.name, found, &state.fx) {
                Ok(landed) => {
                    offers.extend(landed);
                    "ok"
                }
                Err(why) => {
                    tracing::warn!(seller = %seller.name, %why, "discarding a seller's quote");
                    "error"
                }
            },
            Err(e) => {
                if let SellerError::Failed(why) = &e {
                    tracing::debug!(seller = %seller.name, %why, "seller failed");
                }
                e.status()
            }
        };
        sellers.push(SellerOut {
            seller: seller.name.clone(),
            status,
            latency_ms: (latency.as_secs_f64() * 10_000.0).round() / 10.0,
            hedged: false,
        });
    }
    offers.sort_by(|a, b| {
        a.total
            .cmp(&b.total)
            .then_with(|| a.seller.cmp(&b.seller))
            .then_with(|| a.offer_id.cmp(&b.offer_id))
    });
    let complete = sellers.iter().all(|s| s.status == "ok");
    let (isbn, title) = match req.query {
        QuoteQuery::Isbn(isbn) => (Some(isbn.as_str().to_string()), None),
        QuoteQuery::Title(title) => (None, Some(title)),
    };
    Ok(Json(QuoteAnswer {
        query: QueryEcho { isbn, title },
        currency: req.currency,
        complete,
        offers,
        sellers,
    }))
}

/// Converts one seller's offers into the customer's currency (price and shipping each
/// rounded, total their sum, as the contract says) and applies the condition filter. An
/// offer for another ISBN, or one that cannot be converted, spoils the seller's answer.
fn land(
    req: &Validated,
    seller: &str,
    offers: Vec<SellerOffer>,
    fx: &FxTable,
) -> Result<Vec<OfferOut>, String> {
    let mut out = Vec::with_capacity(offers.len());
    for offer in offers {
        if let QuoteQuery::Isbn(isbn) = &req.query {
            if offer.isbn != *isbn {
                return Err(format!("offer {:?} is for another ISBN", offer.offer_id));
            }
        }
        if offer.price < 0 || offer.shipping < 0 {
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
        let price = convert(offer.price)?;
        let shipping = convert(offer.shipping)?;
        out.push(OfferOut {
            seller: seller.to_string(),
            isbn: offer.isbn.as_str().to_string(),
            condition: offer.condition.as_str(),
            price,
            shipping,
            total: price.saturating_add(shipping),
            currency: req.currency,
            original: Original {
                price: offer.price,
                shipping: offer.shipping,
                total: offer.price.saturating_add(offer.shipping),
                currency: offer.currency,
            },
            offer_id: offer.offer_id,
            title: offer.title,
        });
    }
    Ok(out)
}
