//! The scenario file: what sellers to simulate, their catalogue, latency and faults.
//!
//! Field names and defaults follow the shared scenario spec (`sellersim/scenarios/README.md`).
//! Unknown fields are rejected so that a typo does not silently fall back to a default.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use bookbroker_protocols::{Currency, FxTable, Money};
use serde::{Deserialize, Serialize};

use super::SimError;

/// A whole scenario: the catalogue, FX rates, the payment provider, customers and sellers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The universe of books shared by all sellers.
    #[serde(default)]
    pub catalogue: CatalogueSpec,
    /// Exchange rates, copied into the emitted engine config.
    #[serde(default)]
    pub fx: FxSpec,
    /// The simulated payment provider.
    #[serde(default)]
    pub payment: PaymentSpec,
    /// Customers, copied (API key hashed) into the emitted engine config.
    #[serde(default)]
    pub customers: Vec<CustomerSpec>,
    /// The sellers (at least one).
    #[serde(default)]
    pub sellers: Vec<SellerSpec>,
    /// Extra: engine settings written into the emitted config.
    #[serde(default)]
    pub engine: EngineSpec,
    /// Extra: how the simulator itself runs.
    #[serde(default)]
    pub runtime: RuntimeSpec,
}

/// `[catalogue]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogueSpec {
    /// Same seed, same ISBNs, titles and prices.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Number of distinct books.
    #[serde(default = "default_isbns")]
    pub isbns: u32,
}

impl Default for CatalogueSpec {
    fn default() -> Self {
        CatalogueSpec {
            seed: default_seed(),
            isbns: default_isbns(),
        }
    }
}

/// `[fx]`: the value of one unit of each currency in `base`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FxSpec {
    /// The base currency.
    #[serde(default = "default_currency")]
    pub base: String,
    /// Currency code to rate.
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
}

impl Default for FxSpec {
    fn default() -> Self {
        FxSpec {
            base: default_currency(),
            rates: BTreeMap::new(),
        }
    }
}

/// `[payment]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSpec {
    /// Listening port; 0 = any free port.
    #[serde(default)]
    pub port: u16,
    /// Delay before every authorization, capture, void or refund answer.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of first attempts of an idempotency key (authorize, capture, void, refund)
    /// that take `slow_first_ms` before they take effect and answer; a repeat of the key
    /// meanwhile is answered `409 {"error": "idempotency_key_in_use"}`.
    #[serde(default)]
    pub slow_first_rate: f64,
    /// How long a slow first attempt takes, on top of `latency_ms`.
    #[serde(default)]
    pub slow_first_ms: u64,
    /// Share of requests to the calls in `faults_on` answered `500 {"error": "internal"}`.
    #[serde(default)]
    pub error_rate: f64,
    /// Share of requests to the calls in `faults_on` whose connection is reset without
    /// any answer.
    #[serde(default)]
    pub reset_rate: f64,
    /// The calls `error_rate` and `reset_rate` apply to.
    #[serde(default = "default_faults_on")]
    pub faults_on: Vec<PaymentCall>,
    /// Share of the faulty requests that take effect (ledger, stored idempotent result)
    /// before their answer fails: the charge happened, the caller never heard.
    #[serde(default = "default_fault_after_effect")]
    pub fault_after_effect: f64,
}

impl Default for PaymentSpec {
    fn default() -> Self {
        PaymentSpec {
            port: 0,
            latency_ms: 0,
            slow_first_rate: 0.0,
            slow_first_ms: 0,
            error_rate: 0.0,
            reset_rate: 0.0,
            faults_on: default_faults_on(),
            fault_after_effect: default_fault_after_effect(),
        }
    }
}

/// A call of the payment provider, as `[payment] faults_on` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaymentCall {
    /// `POST /v1/authorizations`.
    Authorize,
    /// `POST /v1/authorizations/{id}/capture`.
    Capture,
    /// `POST /v1/authorizations/{id}/void`.
    Void,
    /// `POST /v1/charges/{id}/refund`.
    Refund,
}

/// How a lying order confirmation lies (`[sellers.faults] confirm_lie`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmLie {
    /// Booked at the honest total; the confirmation states that total negated.
    Negative,
    /// Booked at the honest total in the seller's currency; the confirmation states it
    /// converted into `confirm_currency`.
    OtherCurrency,
    /// Booked at the honest total plus `inflate_pct` percent, and confirmed at that
    /// booked total.
    Inflated,
}

/// `[[customers]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerSpec {
    /// Customer id.
    pub id: String,
    /// The API key in clear; only its SHA-256 goes into the engine config.
    pub api_key: String,
}

/// The protocol a seller speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// JSON over HTTP/1.1 (optionally TLS).
    Json,
    /// XML over HTTP/1.1.
    Xml,
    /// The pipelined line protocol over TCP.
    Line,
}

impl Protocol {
    /// The name used in scenario and config files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Json => "json",
            Protocol::Xml => "xml",
            Protocol::Line => "line",
        }
    }
}

/// `[[sellers]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SellerSpec {
    /// Unique name.
    pub name: String,
    /// `json`, `xml` or `line`.
    pub protocol: Protocol,
    /// First endpoint's port; 0 = any.
    #[serde(default)]
    pub port: u16,
    /// Number of listening ports.
    #[serde(default = "default_one_u16")]
    pub endpoints: u16,
    /// json only: serve https with a generated certificate.
    #[serde(default)]
    pub tls: bool,
    /// The seller's currency.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Share of the catalogue this seller stocks.
    #[serde(default = "default_share")]
    pub stock_share: f64,
    /// Offers per stocked book.
    #[serde(default = "default_one_u32")]
    pub offers_per_isbn: u32,
    /// Lowest price, decimal string in the seller's currency.
    #[serde(default = "default_price_min")]
    pub price_min: String,
    /// Highest price.
    #[serde(default = "default_price_max")]
    pub price_max: String,
    /// Lowest shipping.
    #[serde(default = "default_shipping_min")]
    pub shipping_min: String,
    /// Highest shipping.
    #[serde(default = "default_shipping_max")]
    pub shipping_max: String,
    /// Copies per offer.
    #[serde(default = "default_stock")]
    pub stock: u32,
    /// Copied into the emitted engine config.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Copied into the emitted engine config.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u32,
    /// Extra: keep quoting sold-out offers (quantity 1), like a marketplace whose search
    /// index lags, so that orders for them meet `sold_out`.
    #[serde(default)]
    pub stale_listings: bool,
    /// Extra: most offers a title search returns.
    #[serde(default = "default_title_results_max")]
    pub title_results_max: u32,
    /// Latency model.
    #[serde(default)]
    pub latency: LatencySpec,
    /// Fault injection.
    #[serde(default)]
    pub faults: FaultSpec,
}

/// `[sellers.latency]`: every answer waits `base + uniform(0, jitter)`, or `slow_ms` for a
/// share `slow_share` of answers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySpec {
    /// Base delay.
    #[serde(default = "default_base_ms")]
    pub base_ms: f64,
    /// Uniform jitter on top.
    #[serde(default = "default_jitter_ms")]
    pub jitter_ms: f64,
    /// Share of slow answers.
    #[serde(default)]
    pub slow_share: f64,
    /// Total delay of a slow answer.
    #[serde(default)]
    pub slow_ms: f64,
}

impl Default for LatencySpec {
    fn default() -> Self {
        LatencySpec {
            base_ms: default_base_ms(),
            jitter_ms: default_jitter_ms(),
            slow_share: 0.0,
            slow_ms: 0.0,
        }
    }
}

/// `[sellers.faults]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Share of requests answered 500 / `ERR`.
    #[serde(default)]
    pub error_rate: f64,
    /// Share of requests answered 429 (json) / 503 (xml) / `BUSY` (line).
    #[serde(default)]
    pub overload_rate: f64,
    /// The `Retry-After` value in seconds.
    #[serde(default = "default_one_u64")]
    pub retry_after_s: u64,
    /// Share of orders whose price changed since the quote.
    #[serde(default)]
    pub drift_rate: f64,
    /// By how much the price rises, in percent.
    #[serde(default = "default_drift_pct")]
    pub drift_pct: f64,
    /// Share of quote answers that are garbage.
    #[serde(default)]
    pub garbage_rate: f64,
    /// Share of quote answers cut off by closing the connection.
    #[serde(default)]
    pub close_rate: f64,
    /// Never answer quotes.
    #[serde(default)]
    pub hang: bool,
    /// Share of quote requests never answered (the connection stays open).
    #[serde(default)]
    pub hang_rate: f64,
    /// Share of placed orders whose confirmation lies, as `confirm_lie` says (decided
    /// per idempotency key).
    #[serde(default)]
    pub confirm_lie_rate: f64,
    /// How a lying confirmation lies; required when `confirm_lie_rate` is above 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_lie: Option<ConfirmLie>,
    /// The currency an `other_currency` lie states its total in (fx base or in rates,
    /// other than the seller's own); required for that lie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_currency: Option<String>,
    /// By how much an `inflated` order is booked above the honest total, in percent.
    #[serde(default = "default_inflate_pct")]
    pub inflate_pct: f64,
    /// Share of first attempts of an order idempotency key that are slow (decided per
    /// key): booked at once, answered `order_slow_first_ms` later; a repeat meanwhile is
    /// answered "in progress".
    #[serde(default)]
    pub order_slow_first_rate: f64,
    /// How much longer a slow first order attempt takes to answer.
    #[serde(default)]
    pub order_slow_first_ms: u64,
    /// Share of cancel requests that stall `cancel_stall_ms` before they take effect and
    /// answer.
    #[serde(default)]
    pub cancel_stall_rate: f64,
    /// How long a stalled cancel waits.
    #[serde(default)]
    pub cancel_stall_ms: u64,
    /// Line sellers: after this many quote, order and cancel requests (0 = never), the
    /// seller goes silent for `silence_ms`. Every connection open during the silence
    /// stays silent for good (reads, never answers, never closes); connections accepted
    /// after it are served as usual.
    #[serde(default)]
    pub silence_after: u64,
    /// How long the silence lasts.
    #[serde(default)]
    pub silence_ms: u64,
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            error_rate: 0.0,
            overload_rate: 0.0,
            retry_after_s: 1,
            drift_rate: 0.0,
            drift_pct: default_drift_pct(),
            garbage_rate: 0.0,
            close_rate: 0.0,
            hang: false,
            hang_rate: 0.0,
            confirm_lie_rate: 0.0,
            confirm_lie: None,
            confirm_currency: None,
            inflate_pct: default_inflate_pct(),
            order_slow_first_rate: 0.0,
            order_slow_first_ms: 0,
            cancel_stall_rate: 0.0,
            cancel_stall_ms: 0,
            silence_after: 0,
            silence_ms: 0,
        }
    }
}

/// `[engine]` (extra): settings written into the emitted engine config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    /// `[server] listen` of the emitted config.
    #[serde(default = "default_engine_listen")]
    pub listen: String,
    /// `[quotes] deadline_ms` of the emitted config.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for EngineSpec {
    fn default() -> Self {
        EngineSpec {
            listen: default_engine_listen(),
            deadline_ms: default_deadline_ms(),
        }
    }
}

/// `[runtime]` (extra): how the simulator runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSpec {
    /// Worker threads of the simulator's runtime.
    #[serde(default = "default_workers")]
    pub workers: usize,
}

impl Default for RuntimeSpec {
    fn default() -> Self {
        RuntimeSpec {
            workers: default_workers(),
        }
    }
}

fn default_seed() -> u64 {
    42
}
fn default_isbns() -> u32 {
    200
}
fn default_currency() -> String {
    "USD".to_string()
}
fn default_one_u16() -> u16 {
    1
}
fn default_one_u32() -> u32 {
    1
}
fn default_one_u64() -> u64 {
    1
}
fn default_share() -> f64 {
    1.0
}
fn default_price_min() -> String {
    "5.00".to_string()
}
fn default_price_max() -> String {
    "60.00".to_string()
}
fn default_shipping_min() -> String {
    "0.00".to_string()
}
fn default_shipping_max() -> String {
    "6.00".to_string()
}
fn default_stock() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    150
}
fn default_max_concurrency() -> u32 {
    256
}
fn default_title_results_max() -> u32 {
    100
}
fn default_base_ms() -> f64 {
    2.0
}
fn default_jitter_ms() -> f64 {
    1.0
}
fn default_drift_pct() -> f64 {
    10.0
}
fn default_inflate_pct() -> f64 {
    10.0
}
fn default_faults_on() -> Vec<PaymentCall> {
    vec![
        PaymentCall::Authorize,
        PaymentCall::Capture,
        PaymentCall::Void,
    ]
}
fn default_fault_after_effect() -> f64 {
    0.5
}
fn default_engine_listen() -> String {
    "127.0.0.1:8080".to_string()
}
fn default_deadline_ms() -> u64 {
    200
}
fn default_workers() -> usize {
    2
}

/// Largest catalogue; bigger ones take long to generate and say nothing new.
const MAX_ISBNS: u32 = 2_000_000;
/// Largest number of offers per book.
const MAX_OFFERS_PER_ISBN: u32 = 20;
/// Largest number of endpoints per seller.
const MAX_ENDPOINTS: u16 = 64;
/// Longest delay a latency setting may ask for (one hour).
const MAX_DELAY_MS: f64 = 3_600_000.0;

/// Price bounds of a seller, parsed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PriceBounds {
    pub price_min: i64,
    pub price_max: i64,
    pub shipping_min: i64,
    pub shipping_max: i64,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SimError {
    SimError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_share(field: String, value: f64) -> Result<(), SimError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between 0 and 1, found {value}"),
        ))
    }
}

fn check_ms(field: String, value: f64) -> Result<(), SimError> {
    if value.is_finite() && (0.0..=MAX_DELAY_MS).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between 0 and {MAX_DELAY_MS} ms, found {value}"),
        ))
    }
}

/// Checks a whole-millisecond delay against the same bound as the latency settings.
fn check_delay_ms(field: String, value: u64) -> Result<(), SimError> {
    // The bound is a whole number of milliseconds, so the conversion is exact.
    if value <= MAX_DELAY_MS as u64 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be at most {MAX_DELAY_MS} ms, found {value}"),
        ))
    }
}

fn check_pct(field: String, value: f64) -> Result<(), SimError> {
    if value.is_finite() && (0.0..=1000.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between 0 and 1000, found {value}"),
        ))
    }
}

fn parse_currency(field: String, code: &str) -> Result<Currency, SimError> {
    Currency::parse(code).map_err(|e| invalid(field, e.to_string()))
}

fn parse_amount(field: String, text: &str, currency: Currency) -> Result<i64, SimError> {
    let money =
        Money::parse_decimal(text, currency).map_err(|e| invalid(field.clone(), e.to_string()))?;
    if money.minor < 0 {
        return Err(invalid(
            field,
            format!("must not be negative, found {text:?}"),
        ));
    }
    Ok(money.minor)
}

impl Scenario {
    /// Parses and validates a scenario from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Scenario, SimError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| SimError::Parse(e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::from_toml_str(&text)
    }

    /// Checks every field; the error names the first offending one
    /// (e.g. `sellers[2].latency.slow_share`).
    pub fn validate(&self) -> Result<(), SimError> {
        if self.catalogue.isbns == 0 || self.catalogue.isbns > MAX_ISBNS {
            return Err(invalid(
                "catalogue.isbns",
                format!(
                    "must be between 1 and {MAX_ISBNS}, found {}",
                    self.catalogue.isbns
                ),
            ));
        }
        let base = parse_currency("fx.base".into(), &self.fx.base)?;
        let mut known = vec![base];
        for (code, rate) in &self.fx.rates {
            let field = format!("fx.rates.{code}");
            let currency = parse_currency(field.clone(), code)?;
            if !rate.is_finite() || *rate <= 0.0 {
                return Err(invalid(
                    field,
                    format!("must be a positive number, found {rate}"),
                ));
            }
            known.push(currency);
        }
        self.validate_payment()?;
        let mut customer_ids = HashSet::new();
        for (i, c) in self.customers.iter().enumerate() {
            if c.id.trim().is_empty() {
                return Err(invalid(format!("customers[{i}].id"), "must not be empty"));
            }
            if !customer_ids.insert(c.id.as_str()) {
                return Err(invalid(
                    format!("customers[{i}].id"),
                    format!("duplicate id {:?}", c.id),
                ));
            }
            if c.api_key.is_empty() {
                return Err(invalid(
                    format!("customers[{i}].api_key"),
                    "must not be empty",
                ));
            }
        }
        if self.sellers.is_empty() {
            return Err(invalid(
                "sellers",
                "at least one [[sellers]] entry is needed",
            ));
        }
        let mut names = HashSet::new();
        // Explicit ports, to catch two listeners asking for the same one before binding.
        let mut ports: Vec<(u16, String)> = Vec::new();
        if self.payment.port != 0 {
            ports.push((self.payment.port, "payment.port".into()));
        }
        for (i, s) in self.sellers.iter().enumerate() {
            let at = format!("sellers[{i}]");
            if s.name.trim().is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            if s.name
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                return Err(invalid(
                    format!("{at}.name"),
                    "must not hold control characters, quotes or backslashes",
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("duplicate seller name {:?}", s.name),
                ));
            }
            let at = format!("sellers[{i}] ({})", s.name);
            if s.endpoints == 0 || s.endpoints > MAX_ENDPOINTS {
                return Err(invalid(
                    format!("{at}.endpoints"),
                    format!(
                        "must be between 1 and {MAX_ENDPOINTS}, found {}",
                        s.endpoints
                    ),
                ));
            }
            if s.port != 0 {
                let last = u32::from(s.port) + u32::from(s.endpoints) - 1;
                if last > u32::from(u16::MAX) {
                    return Err(invalid(
                        format!("{at}.port"),
                        format!(
                            "port {} plus {} endpoints passes 65535",
                            s.port, s.endpoints
                        ),
                    ));
                }
                for k in 0..s.endpoints {
                    let p = s.port.saturating_add(k);
                    if let Some((_, other)) = ports.iter().find(|(q, _)| *q == p) {
                        return Err(invalid(
                            format!("{at}.port"),
                            format!("port {p} is also used by {other}"),
                        ));
                    }
                    ports.push((p, format!("{at}.port")));
                }
            }
            if s.tls && s.protocol != Protocol::Json {
                return Err(invalid(
                    format!("{at}.tls"),
                    "only json sellers can use TLS",
                ));
            }
            let currency = parse_currency(format!("{at}.currency"), &s.currency)?;
            if !known.contains(&currency) {
                return Err(invalid(
                    format!("{at}.currency"),
                    format!("{} is neither fx.base nor in fx.rates", s.currency),
                ));
            }
            check_share(format!("{at}.stock_share"), s.stock_share)?;
            if s.offers_per_isbn == 0 || s.offers_per_isbn > MAX_OFFERS_PER_ISBN {
                return Err(invalid(
                    format!("{at}.offers_per_isbn"),
                    format!(
                        "must be between 1 and {MAX_OFFERS_PER_ISBN}, found {}",
                        s.offers_per_isbn
                    ),
                ));
            }
            s.price_bounds(&at)?;
            if s.timeout_ms == 0 {
                return Err(invalid(format!("{at}.timeout_ms"), "must be positive"));
            }
            if s.max_concurrency == 0 {
                return Err(invalid(format!("{at}.max_concurrency"), "must be positive"));
            }
            if s.title_results_max == 0 {
                return Err(invalid(
                    format!("{at}.title_results_max"),
                    "must be positive",
                ));
            }
            let l = &s.latency;
            check_ms(format!("{at}.latency.base_ms"), l.base_ms)?;
            check_ms(format!("{at}.latency.jitter_ms"), l.jitter_ms)?;
            check_ms(format!("{at}.latency.slow_ms"), l.slow_ms)?;
            check_share(format!("{at}.latency.slow_share"), l.slow_share)?;
            let f = &s.faults;
            check_share(format!("{at}.faults.error_rate"), f.error_rate)?;
            check_share(format!("{at}.faults.overload_rate"), f.overload_rate)?;
            check_share(format!("{at}.faults.drift_rate"), f.drift_rate)?;
            check_share(format!("{at}.faults.garbage_rate"), f.garbage_rate)?;
            check_share(format!("{at}.faults.close_rate"), f.close_rate)?;
            check_share(format!("{at}.faults.hang_rate"), f.hang_rate)?;
            let sum = f.error_rate + f.overload_rate + f.garbage_rate + f.close_rate + f.hang_rate;
            if sum > 1.0 + 1e-9 {
                return Err(invalid(
                    format!("{at}.faults"),
                    format!("error_rate + overload_rate + garbage_rate + close_rate + hang_rate must not exceed 1, found {sum}"),
                ));
            }
            if !f.drift_pct.is_finite() || !(0.0..=1000.0).contains(&f.drift_pct) {
                return Err(invalid(
                    format!("{at}.faults.drift_pct"),
                    format!("must be between 0 and 1000, found {}", f.drift_pct),
                ));
            }
            if f.retry_after_s > 86_400 {
                return Err(invalid(
                    format!("{at}.faults.retry_after_s"),
                    "must be at most 86400",
                ));
            }
            self.validate_partner_faults(&at, f, currency, &known)?;
            if f.silence_after > 0 && s.protocol != Protocol::Line {
                return Err(invalid(
                    format!("{at}.faults.silence_after"),
                    "only line sellers can go silent",
                ));
            }
            check_delay_ms(format!("{at}.faults.silence_ms"), f.silence_ms)?;
        }
        if self.engine.listen.trim().is_empty() {
            return Err(invalid("engine.listen", "must not be empty"));
        }
        if self.engine.deadline_ms == 0 {
            return Err(invalid("engine.deadline_ms", "must be positive"));
        }
        if self.runtime.workers == 0 || self.runtime.workers > 64 {
            return Err(invalid(
                "runtime.workers",
                format!("must be between 1 and 64, found {}", self.runtime.workers),
            ));
        }
        Ok(())
    }
}

impl Scenario {
    /// Checks the `[payment]` fault and slowness settings.
    fn validate_payment(&self) -> Result<(), SimError> {
        let p = &self.payment;
        check_share("payment.slow_first_rate".into(), p.slow_first_rate)?;
        check_delay_ms("payment.slow_first_ms".into(), p.slow_first_ms)?;
        check_share("payment.error_rate".into(), p.error_rate)?;
        check_share("payment.reset_rate".into(), p.reset_rate)?;
        check_share("payment.fault_after_effect".into(), p.fault_after_effect)?;
        let sum = p.error_rate + p.reset_rate;
        if sum > 1.0 + 1e-9 {
            return Err(invalid(
                "payment",
                format!("error_rate + reset_rate must not exceed 1, found {sum}"),
            ));
        }
        Ok(())
    }

    /// Checks a seller's lie, slow-first and stall settings (`at` names the seller).
    fn validate_partner_faults(
        &self,
        at: &str,
        f: &FaultSpec,
        seller_currency: Currency,
        known: &[Currency],
    ) -> Result<(), SimError> {
        check_share(format!("{at}.faults.confirm_lie_rate"), f.confirm_lie_rate)?;
        check_pct(format!("{at}.faults.inflate_pct"), f.inflate_pct)?;
        check_share(
            format!("{at}.faults.order_slow_first_rate"),
            f.order_slow_first_rate,
        )?;
        check_delay_ms(
            format!("{at}.faults.order_slow_first_ms"),
            f.order_slow_first_ms,
        )?;
        check_share(
            format!("{at}.faults.cancel_stall_rate"),
            f.cancel_stall_rate,
        )?;
        check_delay_ms(format!("{at}.faults.cancel_stall_ms"), f.cancel_stall_ms)?;
        if let Some(code) = &f.confirm_currency {
            let field = format!("{at}.faults.confirm_currency");
            let currency = parse_currency(field.clone(), code)?;
            if !known.contains(&currency) {
                return Err(invalid(
                    field,
                    format!("{code} is neither fx.base nor in fx.rates"),
                ));
            }
            if currency == seller_currency {
                // A confirmation in the seller's own currency would not lie at all.
                return Err(invalid(
                    field,
                    format!("must differ from the seller's currency {seller_currency}"),
                ));
            }
        }
        if f.confirm_lie_rate > 0.0 {
            match f.confirm_lie {
                None => {
                    return Err(invalid(
                        format!("{at}.faults.confirm_lie"),
                        "is required when confirm_lie_rate is above 0: negative, other_currency or inflated",
                    ))
                }
                Some(ConfirmLie::OtherCurrency) if f.confirm_currency.is_none() => {
                    return Err(invalid(
                        format!("{at}.faults.confirm_currency"),
                        "is required for confirm_lie = \"other_currency\"",
                    ))
                }
                Some(ConfirmLie::OtherCurrency) => {
                    // The conversion needs a usable rate table, not just known codes.
                    self.fx_table()?;
                }
                Some(ConfirmLie::Negative | ConfirmLie::Inflated) => {}
            }
        }
        Ok(())
    }

    /// The `[fx]` table as exact rates, for converting amounts the way the engine does.
    pub fn fx_table(&self) -> Result<FxTable, SimError> {
        let base = parse_currency("fx.base".into(), &self.fx.base)?;
        let mut rates = Vec::with_capacity(self.fx.rates.len());
        for (code, rate) in &self.fx.rates {
            let currency = parse_currency(format!("fx.rates.{code}"), code)?;
            rates.push((currency, FxTable::rate_text_from_f64(*rate)));
        }
        let pairs: Vec<(Currency, &str)> = rates.iter().map(|(c, t)| (*c, t.as_str())).collect();
        FxTable::new(base, &pairs).map_err(|e| invalid("fx.rates", e.to_string()))
    }
}

impl SellerSpec {
    /// The seller's currency (valid after [`Scenario::validate`]).
    pub(crate) fn currency(&self, at: &str) -> Result<Currency, SimError> {
        parse_currency(format!("{at}.currency"), &self.currency)
    }

    /// Parses and checks the four price bounds.
    pub(crate) fn price_bounds(&self, at: &str) -> Result<PriceBounds, SimError> {
        let currency = self.currency(at)?;
        let price_min = parse_amount(format!("{at}.price_min"), &self.price_min, currency)?;
        let price_max = parse_amount(format!("{at}.price_max"), &self.price_max, currency)?;
        let shipping_min =
            parse_amount(format!("{at}.shipping_min"), &self.shipping_min, currency)?;
        let shipping_max =
            parse_amount(format!("{at}.shipping_max"), &self.shipping_max, currency)?;
        if price_min > price_max {
            return Err(invalid(
                format!("{at}.price_min"),
                "must not exceed price_max",
            ));
        }
        if price_max == 0 {
            return Err(invalid(format!("{at}.price_max"), "must be positive"));
        }
        if shipping_min > shipping_max {
            return Err(invalid(
                format!("{at}.shipping_min"),
                "must not exceed shipping_max",
            ));
        }
        // Far below i64::MAX so totals and drift never overflow.
        let limit = 1_000_000_000_000_i64;
        if price_max > limit || shipping_max > limit {
            return Err(invalid(format!("{at}.price_max"), "is absurdly large"));
        }
        Ok(PriceBounds {
            price_min,
            price_max,
            shipping_min,
            shipping_max,
        })
    }
}
