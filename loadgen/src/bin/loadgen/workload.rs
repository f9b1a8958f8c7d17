//! What to send: the target, the books, and the requests of each scenario, built so
//! that the per-request work is a few reference-count increments (pre-built URIs and
//! header maps) plus, for purchases, the body and the idempotency key.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use bookbroker_protocols::Isbn;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::zipf::Zipf;

/// The kind of customer call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `GET /v1/quotes?isbn=…&currency=…` only.
    Quotes,
    /// `POST /v1/purchases` only, with a share of duplicate-key retries.
    Purchases,
    /// Quotes and purchases mixed (90 % quotes by default).
    Mix,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Quotes => "quotes",
            Scenario::Purchases => "purchases",
            Scenario::Mix => "mix",
        }
    }
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved socket address (the first the name resolves to).
    pub addr: SocketAddr,
    /// `Host` header value (`host:port` as given).
    pub host: HeaderValue,
    /// Path prefix from the URL, without a trailing slash (usually empty).
    pub base_path: String,
}

/// Parses and resolves `http://host[:port][/prefix]`.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--target `{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "--target `{url}`: scheme `{other}` is not supported (only http://)"
            ))
        }
        None => {
            return Err(format!(
                "--target `{url}` needs a scheme, e.g. http://{url}"
            ))
        }
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--target `{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "--target `{url}`: credentials in the URL are not supported"
        ));
    }
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("--target `{url}`: cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("--target `{url}`: `{host}` resolves to no address"))?;
    if uri.query().is_some() {
        return Err(format!("--target `{url}` must not have a query string"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|_| format!("--target `{url}`: host is not a valid header value"))?;
    Ok(Target {
        addr,
        host,
        base_path,
    })
}

/// Reads ISBNs, one a line (ISBN-10 or ISBN-13, hyphens allowed; blank lines and
/// lines starting with `#` are skipped), and returns them in ISBN-13 form, in file
/// order: the first line is the most popular book.
pub fn read_isbns(path: &Path) -> Result<Vec<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--isbns {}: {e}", path.display()))?;
    parse_isbns(&text).map_err(|e| format!("--isbns {}: {e}", path.display()))
}

fn parse_isbns(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let isbn = Isbn::parse(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(isbn.as_str().to_string());
    }
    if out.is_empty() {
        return Err("no ISBN in the file".into());
    }
    Ok(out)
}

/// `count` valid, distinct ISBN-13s (978-0-00…), for runs without `--isbns`.
pub fn synthetic_isbns(count: usize) -> Vec<String> {
    (0..count as u64)
        .filter_map(|i| Isbn::from_prefix12(&format!("978{:09}", i % 1_000_000_000)))
        .map(|isbn| isbn.as_str().to_string())
        .collect()
}

/// Everything that shapes the requests, shared read-only by all worker threads.
pub struct Plan {
    /// Which calls to make.
    pub scenario: Scenario,
    /// Share of purchases in `mix`.
    pub purchase_share: f64,
    /// Share of purchases that re-send an earlier key with the same body.
    pub duplicate_share: f64,
    zipf: Zipf,
    isbns: Vec<String>,
    quote_uris: Vec<Uri>,
    purchase_uri: Uri,
    get_headers: HeaderMap,
    post_headers: HeaderMap,
    /// The purchase body after the ISBN: `","max_price":…}`.
    body_tail: String,
    /// Makes idempotency keys unique across runs against the same engine.
    run_id: String,
}

/// Settings of [`Plan::new`].
pub struct PlanConfig<'a> {
    /// Which calls to make.
    pub scenario: Scenario,
    /// Books, most popular first.
    pub isbns: Vec<String>,
    /// Zipf exponent of book popularity.
    pub zipf_s: f64,
    /// Share of purchases in `mix`.
    pub purchase_share: f64,
    /// Share of duplicate-key purchases.
    pub duplicate_share: f64,
    /// The target.
    pub target: &'a Target,
    /// Bearer token, if any.
    pub api_key: Option<&'a str>,
    /// Purchase limit in minor units.
    pub max_price: u64,
    /// ISO-4217 code for quotes and purchases.
    pub currency: &'a str,
    /// `any`, `new` or `used`.
    pub condition: &'a str,
    /// Payment token sent with purchases.
    pub payment_token: &'a str,
    /// Shipping token sent with purchases.
    pub shipping_token: &'a str,
    /// Distinguishes this run's idempotency keys.
    pub run_id: String,
}

impl Plan {
    /// Pre-builds every URI and header map.
    pub fn new(cfg: PlanConfig<'_>) -> Result<Plan, String> {
        let zipf = Zipf::new(cfg.isbns.len(), cfg.zipf_s)?;
        let base = &cfg.target.base_path;
        let mut quote_uris = Vec::with_capacity(cfg.isbns.len());
        for isbn in &cfg.isbns {
            let s = format!("{base}/v1/quotes?isbn={isbn}&currency={}", cfg.currency);
            let uri = Uri::from_maybe_shared(Bytes::from(s))
                .map_err(|e| format!("cannot build quote URI for {isbn}: {e}"))?;
            quote_uris.push(uri);
        }
        let purchase_uri = Uri::from_maybe_shared(Bytes::from(format!("{base}/v1/purchases")))
            .map_err(|e| format!("cannot build purchase URI: {e}"))?;
        let mut get_headers = HeaderMap::with_capacity(4);
        get_headers.insert(HOST, cfg.target.host.clone());
        if let Some(key) = cfg.api_key {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "--api-key contains characters not allowed in a header".to_string())?;
            v.set_sensitive(true);
            get_headers.insert(AUTHORIZATION, v);
        }
        let mut post_headers = get_headers.clone();
        post_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let tail = serde_json::json!({
            "max_price": cfg.max_price,
            "currency": cfg.currency,
            "condition": cfg.condition,
            "payment_token": cfg.payment_token,
            "shipping_token": cfg.shipping_token,
        });
        // `{"max_price":…}` → `","max_price":…}` so that `{"isbn":"<isbn>` + tail is
        // the whole body; serde_json keeps the keys in the order of the map, which
        // does not matter to the server.
        let tail = tail.to_string();
        let body_tail = format!("\",{}", tail.strip_prefix('{').unwrap_or(&tail));
        Ok(Plan {
            scenario: cfg.scenario,
            purchase_share: cfg.purchase_share,
            duplicate_share: cfg.duplicate_share,
            zipf,
            isbns: cfg.isbns,
            quote_uris,
            purchase_uri,
            get_headers,
            post_headers,
            body_tail,
            run_id: cfg.run_id,
        })
    }

    fn purchase_body(&self, isbn: usize) -> Bytes {
        let isbn = self.isbns.get(isbn).map_or("", String::as_str);
        let mut body = Vec::with_capacity(10 + isbn.len() + self.body_tail.len());
        body.extend_from_slice(b"{\"isbn\":\"");
        body.extend_from_slice(isbn.as_bytes());
        body.extend_from_slice(self.body_tail.as_bytes());
        Bytes::from(body)
    }
}

/// Which customer call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A quote search.
    Quote,
    /// A purchase (fresh key).
    Purchase,
    /// A purchase re-sending an earlier key and body.
    DuplicatePurchase,
}

/// How many recent purchases a duplicate may repeat.
const RECENT: usize = 4096;

/// Per-thread request factory: its own random stream and key sequence.
pub struct Generator {
    plan: Arc<Plan>,
    rng: SmallRng,
    lane: usize,
    seq: u64,
    /// (key sequence number, book) of recent fresh purchases, a ring.
    recent: Vec<(u64, u32)>,
    recent_next: usize,
}

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

impl Generator {
    /// A generator for worker `lane`, seeded from `seed` and the lane.
    pub fn new(plan: Arc<Plan>, seed: u64, lane: usize) -> Generator {
        Generator {
            plan,
            rng: SmallRng::seed_from_u64(seed ^ (lane as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            lane,
            seq: 0,
            recent: Vec::new(),
            recent_next: 0,
        }
    }

    /// The next request of the scenario.
    pub fn next_request(&mut self) -> (Kind, Request<Full<Bytes>>) {
        let purchase = match self.plan.scenario {
            Scenario::Quotes => false,
            Scenario::Purchases => true,
            Scenario::Mix => self.rng.gen::<f64>() < self.plan.purchase_share,
        };
        if purchase {
            self.purchase()
        } else {
            (Kind::Quote, self.quote())
        }
    }

    fn quote(&mut self) -> Request<Full<Bytes>> {
        let book = self.plan.zipf.sample(&mut self.rng);
        let mut req = Request::new(Full::new(Bytes::new()));
        if let Some(uri) = self.plan.quote_uris.get(book) {
            *req.uri_mut() = uri.clone();
        }
        *req.headers_mut() = self.plan.get_headers.clone();
        req
    }

    fn purchase(&mut self) -> (Kind, Request<Full<Bytes>>) {
        let duplicate =
            !self.recent.is_empty() && self.rng.gen::<f64>() < self.plan.duplicate_share;
        let (kind, seq, book) = if duplicate {
            let pick = self.rng.gen_range(0..self.recent.len());
            let (seq, book) = self.recent.get(pick).copied().unwrap_or((0, 0));
            (Kind::DuplicatePurchase, seq, book as usize)
        } else {
            let book = self.plan.zipf.sample(&mut self.rng);
            let seq = self.seq;
            self.seq += 1;
            let entry = (seq, book as u32);
            if self.recent.len() < RECENT {
                self.recent.push(entry);
            } else if let Some(slot) = self.recent.get_mut(self.recent_next) {
                *slot = entry;
            }
            self.recent_next = (self.recent_next + 1) % RECENT;
            (Kind::Purchase, seq, book)
        };
        let mut req = Request::new(Full::new(self.plan.purchase_body(book)));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.plan.purchase_uri.clone();
        let mut headers = self.plan.post_headers.clone();
        let key = format!("lg-{}-{}-{}", self.plan.run_id, self.lane, seq);
        if let Ok(v) = HeaderValue::try_from(key) {
            headers.insert(IDEMPOTENCY_KEY.clone(), v);
        }
        *req.headers_mut() = headers;
        (kind, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn target() -> Target {
        parse_target("http://127.0.0.1:18080").unwrap()
    }

    fn plan(scenario: Scenario, dup: f64) -> Arc<Plan> {
        let t = target();
        Arc::new(
            Plan::new(PlanConfig {
                scenario,
                isbns: synthetic_isbns(50),
                zipf_s: 1.0,
                purchase_share: 0.1,
                duplicate_share: dup,
                target: &t,
                api_key: Some("k_123"),
                max_price: 2000,
                currency: "USD",
                condition: "any",
                payment_token: "tok_ok_4242",
                shipping_token: "ship_home",
                run_id: "r1".into(),
            })
            .unwrap(),
        )
    }

    #[test]
    fn targets() {
        let t = parse_target("http://127.0.0.1:18080/").unwrap();
        assert_eq!(t.addr.port(), 18080);
        assert_eq!(t.host, "127.0.0.1:18080");
        assert_eq!(t.base_path, "");
        let t = parse_target("http://localhost:9/api").unwrap();
        assert_eq!(t.base_path, "/api");
        assert_eq!(parse_target("http://127.0.0.1").unwrap().addr.port(), 80);
        assert!(parse_target("https://127.0.0.1").is_err());
        assert!(parse_target("127.0.0.1:80").is_err());
        assert!(parse_target("not a url").is_err());
    }

    #[test]
    fn isbn_files() {
        let v = parse_isbns("# books\n9780131103627\n\n0-13-110362-8\n").unwrap();
        assert_eq!(v, vec!["9780131103627", "9780131103627"]);
        assert!(parse_isbns("9780131103628\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_isbns("\n# nothing\n").is_err());
        let s = synthetic_isbns(3);
        assert_eq!(s.len(), 3);
        for i in &s {
            assert!(Isbn::parse(i).is_ok());
        }
    }

    #[test]
    fn quote_requests() {
        let mut g = Generator::new(plan(Scenario::Quotes, 0.0), 1, 0);
        let (kind, req) = g.next_request();
        assert_eq!(kind, Kind::Quote);
        assert_eq!(req.method(), Method::GET);
        assert!(req.uri().to_string().starts_with("/v1/quotes?isbn=978"));
        assert!(req.uri().to_string().ends_with("&currency=USD"));
        assert_eq!(req.headers()[HOST], "127.0.0.1:18080");
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer k_123");
    }

    #[tokio::test]
    async fn purchase_requests_and_duplicates() {
        let mut g = Generator::new(plan(Scenario::Purchases, 0.3), 1, 2);
        let mut seen = std::collections::HashMap::new();
        let mut dups = 0;
        for _ in 0..2000 {
            let (kind, req) = g.next_request();
            assert_eq!(req.method(), Method::POST);
            assert_eq!(req.uri(), "/v1/purchases");
            let key = req.headers()["idempotency-key"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(key.starts_with("lg-r1-2-"));
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["max_price"], 2000);
            assert_eq!(v["payment_token"], "tok_ok_4242");
            assert_eq!(v["shipping_token"], "ship_home");
            assert_eq!(v["condition"], "any");
            assert_eq!(v["currency"], "USD");
            assert!(Isbn::parse(v["isbn"].as_str().unwrap()).is_ok());
            match kind {
                Kind::DuplicatePurchase => {
                    dups += 1;
                    // Same key, same body as the first time.
                    assert_eq!(seen.get(&key), Some(&body));
                }
                Kind::Purchase => {
                    assert!(seen.insert(key, body).is_none());
                }
                Kind::Quote => panic!("quote in purchases"),
            }
        }
        assert!((450..750).contains(&dups), "duplicates {dups}");
    }

    #[test]
    fn mix_share() {
        let mut g = Generator::new(plan(Scenario::Mix, 0.0), 9, 0);
        let purchases = (0..10_000)
            .filter(|_| g.next_request().0 != Kind::Quote)
            .count();
        assert!((800..1200).contains(&purchases), "purchases {purchases}");
    }
}
