//! The engine's config file (TOML), section 4 of the contract: loaded with serde,
//! validated as a whole (every problem reported, each naming its field), and checkable
//! from the command line with `bookbroker check-config`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use bookbroker_protocols::{Currency, FxTable};

/// The whole config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[quotes]`.
    #[serde(default)]
    pub quotes: QuotesConfig,
    /// `[hedging]`.
    #[serde(default)]
    pub hedging: HedgingConfig,
    /// `[payment]`.
    #[serde(default)]
    pub payment: PaymentConfig,
    /// `[purchases]`.
    #[serde(default)]
    pub purchases: PurchasesConfig,
    /// `[storage]`.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[fx]`.
    #[serde(default)]
    pub fx: FxConfig,
    /// `[[sellers]]`.
    #[serde(default)]
    pub sellers: Vec<SellerConfig>,
    /// `[[customers]]`.
    #[serde(default)]
    pub customers: Vec<CustomerConfig>,
    /// `[cluster]` (design section 7); absent: a cluster of one.
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: every node of the cluster, in partition order, and which one this is.
/// Node `i` owns purchase partition `i` (see `crate::cluster`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every node's address (`host:port`, as the load balancer reaches it), in
    /// partition order. The order is part of the data: reordering the list moves
    /// purchases to nodes that do not hold them.
    pub nodes: Vec<String>,
    /// This node's index in `nodes`: the partition it owns.
    pub node: u32,
}

/// Most nodes of a cluster: a partition is a backend in the load balancer's config, and
/// more than this is a mistake rather than a plan.
pub const MAX_CLUSTER_NODES: usize = 1024;

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address, e.g. `0.0.0.0:8080`.
    pub listen: String,
    /// Executors (one per core); 0 = every core.
    pub cores: usize,
    /// Where durable state lives.
    pub data_dir: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers once it has started one, or its
    /// first request after connecting (slowloris protection).
    pub header_read_timeout_ms: u64,
    /// How long a keep-alive connection may sit idle between requests before the engine
    /// closes it. Keep it longer than the load balancer's own idle timeout, so the
    /// balancer closes first and never sends a request into a connection being closed.
    pub idle_timeout_ms: u64,
    /// Longest request target (path and query) accepted; longer ones get `414`.
    pub max_uri_bytes: usize,
    /// Most headers in one request.
    pub max_headers: usize,
    /// Most client connections one core keeps open; more are closed at once.
    pub max_connections_per_core: usize,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Most `/v1` requests one core works on at once; more are answered 503 at once
    /// (load shedding) instead of queueing without bound.
    pub max_in_flight_per_core: usize,
    /// Time a client has to send a request body once its headers arrived; a slower
    /// body is answered `408` and releases its in-flight slot.
    pub body_timeout_ms: u64,
    /// The executor backend: `auto` (io_uring when the host allows it, else epoll),
    /// `io_uring`, `epoll` or `glommio`.
    pub runtime: crate::rt::RuntimeChoice,
    /// io_uring backend: how long an idle core lets a completion wait for others before
    /// it wakes for them (µs; 0 = wake for each, as compio does). Needs Linux 6.12.
    pub io_uring_coalesce_us: u32,
    /// io_uring backend: this many completions end the wait at once.
    pub io_uring_coalesce_events: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            cores: 0,
            data_dir: PathBuf::from("./data"),
            max_body_bytes: 65536,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 75_000,
            max_uri_bytes: 8192,
            max_headers: 64,
            max_connections_per_core: 10_000,
            shutdown_grace_ms: 10_000,
            max_in_flight_per_core: 4096,
            body_timeout_ms: 10_000,
            runtime: crate::rt::RuntimeChoice::Auto,
            io_uring_coalesce_us: 1000,
            io_uring_coalesce_events: 16,
        }
    }
}

/// `[quotes]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotesConfig {
    /// One deadline for the whole fan-out.
    pub deadline_ms: u64,
    /// Quote cache lifetime; 0 = no cache.
    pub cache_ttl_ms: u64,
    /// Most bytes of answers one core's quote cache holds (an estimate of the offers'
    /// size). A title search can bring megabytes, so counting keys alone does not bound
    /// memory; an answer larger than this is not cached.
    pub cache_max_bytes: u64,
}

/// Default of `quotes.cache_max_bytes`: 64 MiB per core.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 << 20;

impl Default for QuotesConfig {
    fn default() -> Self {
        QuotesConfig {
            deadline_ms: 200,
            cache_ttl_ms: 0,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
        }
    }
}

/// `[hedging]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgingConfig {
    /// Whether slow quote requests are hedged. Retries of failed quote requests do not
    /// depend on it: they only need `budget`.
    pub enabled: bool,
    /// Hedges and retries allowed per primary request; 0 turns both off.
    pub budget: f64,
    /// Hedges allowed per second per seller per core on top of `budget`, so a quiet
    /// engine can still hedge.
    pub floor_per_sec: f64,
}

impl Default for HedgingConfig {
    fn default() -> Self {
        HedgingConfig {
            enabled: true,
            budget: 0.05,
            floor_per_sec: 1.0,
        }
    }
}

/// `[payment]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentConfig {
    /// The provider's base URL.
    pub url: String,
    /// Timeout of one call to the provider during a purchase. When it fires the
    /// connection is closed and the call is repeated with the same key.
    pub timeout_ms: u64,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            url: "http://127.0.0.1:9100".into(),
            timeout_ms: 2000,
        }
    }
}

/// `[purchases]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurchasesConfig {
    /// How long `POST /v1/purchases` waits for the outcome before answering
    /// `202 pending`.
    pub wait_ms: u64,
    /// How long a finished purchase and its idempotency key are kept, in hours.
    pub key_retention_hours: u64,
    /// Key (64 hex digits) that encrypts payment and shipping tokens at rest. Empty:
    /// taken from the environment variable `BOOKBROKER_TOKEN_KEY`, or else generated
    /// once and kept in the data directory (`token.key`, mode 0600).
    pub token_key: String,
    /// Timeout of one call to a seller during a purchase (the payment provider's is
    /// `payment.timeout_ms`). When it fires the connection is closed and the call is
    /// repeated with the same key: its outcome is unknown, not refused.
    pub step_timeout_ms: u64,
    /// How long a call whose outcome is unknown is repeated with short pauses (up to
    /// 2 s); after that it is still repeated, every 30 s at most, and the purchase counts
    /// as stuck in `/metrics`. A call of unknown outcome is never given up on: the saga
    /// never moves on or compensates before it knows what the partner did.
    pub step_retry_ms: u64,
    /// How many times one offer may be re-ordered at a changed price within the limit
    /// before the next offer is tried.
    pub max_reorders: u32,
    /// Most purchases running at once on one core; more get `429`.
    pub max_running_per_core: usize,
    /// Most purchases one customer may have running at once; more get `429`.
    pub max_running_per_customer: usize,
    /// Most unfinished purchases resumed at once per core after a restart.
    pub recovery_concurrency: usize,
}

impl Default for PurchasesConfig {
    fn default() -> Self {
        PurchasesConfig {
            wait_ms: 10_000,
            key_retention_hours: 24,
            token_key: String::new(),
            step_timeout_ms: 2_000,
            step_retry_ms: 10_000,
            max_reorders: 3,
            max_running_per_core: 4096,
            max_running_per_customer: 256,
            recovery_concurrency: 64,
        }
    }
}

impl fmt::Debug for PurchasesConfig {
    // The token key is a secret: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurchasesConfig")
            .field("wait_ms", &self.wait_ms)
            .field("key_retention_hours", &self.key_retention_hours)
            .field("token_key", &"<redacted>")
            .field("step_timeout_ms", &self.step_timeout_ms)
            .field("step_retry_ms", &self.step_retry_ms)
            .field("max_reorders", &self.max_reorders)
            .field("max_running_per_core", &self.max_running_per_core)
            .field("max_running_per_customer", &self.max_running_per_customer)
            .field("recovery_concurrency", &self.recovery_concurrency)
            .finish()
    }
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Shards of a *new* data directory; 0 = one per core. An existing directory keeps
    /// the count it was created with.
    pub shards: u32,
    /// Share one fsync among every purchase that needs one at the same moment (group
    /// commit). `false` syncs each write on its own (only for comparison).
    pub group_commit: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            shards: 0,
            group_commit: true,
        }
    }
}

/// `[fx]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FxConfig {
    /// The base currency.
    pub base: String,
    /// Value of one unit of each currency in the base.
    pub rates: BTreeMap<String, f64>,
}

impl Default for FxConfig {
    fn default() -> Self {
        FxConfig {
            base: "USD".into(),
            rates: BTreeMap::new(),
        }
    }
}

/// A seller protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// JSON over HTTP/1.1.
    Json,
    /// XML over HTTP/1.1.
    Xml,
    /// The pipelined line protocol over TCP.
    Line,
}

fn default_timeout_ms() -> u64 {
    150
}
fn default_max_concurrency() -> usize {
    256
}
fn default_line_connections() -> usize {
    2
}

/// `[[sellers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SellerConfig {
    /// Unique name, shown to customers.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// One or more endpoints (`http://`, `https://` or `tcp://host:port`).
    pub endpoints: Vec<String>,
    /// The seller's own currency.
    pub currency: String,
    /// Timeout of one request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Requests in flight to this seller, for the whole engine.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// CA certificate (PEM) to trust for `https://` endpoints; system roots otherwise.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Connections per endpoint per core for `line` sellers.
    #[serde(default = "default_line_connections")]
    pub line_connections: usize,
}

/// `[[customers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerConfig {
    /// Customer id.
    pub id: String,
    /// Hex SHA-256 of the customer's API key.
    pub api_key_sha256: String,
    /// Most `/v1` requests per second this customer may make, over all cores together;
    /// more are answered `429` with `Retry-After`. Absent: no limit.
    #[serde(default)]
    pub rate_per_sec: Option<u32>,
    /// Requests the customer may make at once above the rate after a quiet spell.
    /// Absent: one second's worth (`rate_per_sec`).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// One semantic problem in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, e.g. `sellers[2].endpoints[0]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type or unknown.
    #[error("{0}")]
    Parse(String),
    /// Parsed, but with problems.
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!("{} problem(s):\n  {}", problems.len(), lines.join("\n  "))
}

/// A parsed `host:port` of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Splits `scheme://host:port[/]` into scheme and host/port. Paths other than `/` are
/// not allowed: sellers are addressed by their base URL.
pub fn parse_url(url: &str) -> Result<(&str, HostPort), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL (scheme://host:port)"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err(format!(
            "{url:?} must be scheme://host:port, without path or user"
        ));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (h, p) = inner
            .split_once("]:")
            .ok_or_else(|| format!("{url:?}: expected [ipv6]:port"))?;
        (h, p)
    } else {
        rest.rsplit_once(':')
            .ok_or_else(|| format!("{url:?} has no port"))?
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{url:?}: port {port:?} is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(format!("{url:?}: port 0 is not allowed"));
    }
    Ok((
        scheme,
        HostPort {
            host: host.to_string(),
            port,
        },
    ))
}

/// Checks a `host:port` a load balancer or client connects to: a DNS name, an IPv4
/// address or a bracketed IPv6 address, and a port from 1. Only characters such names
/// use are allowed, so the address can be written into a generated HAProxy config as
/// it is.
pub fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let (_, hp) = parse_url(&format!("tcp://{text}"))
        .map_err(|_| format!("{text:?} is not host:port (e.g. 10.0.0.1:8080)"))?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
    if !hp.host.chars().all(allowed) || text.ends_with('/') {
        return Err(format!("{text:?} is not host:port (e.g. 10.0.0.1:8080)"));
    }
    Ok(hp)
}

impl ClusterConfig {
    /// Every problem of the section, fields named as `cluster.…`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p = |field: String, message: String| out.push(Problem { field, message });
        if self.nodes.is_empty() {
            p(
                "cluster.nodes".into(),
                "at least one node is required (this one)".into(),
            );
        } else if self.nodes.len() > MAX_CLUSTER_NODES {
            p(
                "cluster.nodes".into(),
                format!(
                    "{} nodes is more than {MAX_CLUSTER_NODES}",
                    self.nodes.len()
                ),
            );
        }
        let mut seen = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            match parse_host_port(node) {
                Err(e) => p(format!("cluster.nodes[{i}]"), e),
                Ok(hp) => {
                    if !seen.insert((hp.host.to_ascii_lowercase(), hp.port)) {
                        p(
                            format!("cluster.nodes[{i}]"),
                            format!("{node:?} is listed twice: every node owns its own partition"),
                        );
                    }
                }
            }
        }
        if !self.nodes.is_empty() && self.node as usize >= self.nodes.len() {
            p(
                "cluster.node".into(),
                format!(
                    "{} is not the index of a node in cluster.nodes (0 to {})",
                    self.node,
                    self.nodes.len() - 1
                ),
            );
        }
        out
    }
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Reads and parses a file; a relative `ca_file` is resolved against the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml_str(&text)?;
        if let Some(dir) = path.parent() {
            for s in &mut config.sellers {
                if let Some(ca) = &s.ca_file {
                    if ca.is_relative() {
                        s.ca_file = Some(dir.join(ca));
                    }
                }
            }
        }
        Ok(config)
    }

    /// Loads and validates.
    pub fn load_valid(path: &Path) -> Result<Config, ConfigError> {
        let config = Config::load(path)?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The FX table of `[fx]`.
    pub fn fx_table(&self) -> Result<FxTable, ConfigError> {
        self.fx.table()
    }

    /// Every semantic problem, each naming its field: every section is checked, so one
    /// run reports them all.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        self.server.validate(&mut out);
        self.quotes.validate(&mut out);
        self.hedging.validate(&mut out);
        self.payment.validate(&mut out);
        self.purchases.validate(&mut out);
        self.storage.validate(&mut out);
        let convertible = self.fx.validate(&mut out);
        if self.sellers.is_empty() {
            out.add("sellers", "at least one [[sellers]] is required");
        }
        let mut names = HashSet::new();
        for (i, seller) in self.sellers.iter().enumerate() {
            seller.validate(i, &convertible, &self.fx.base, &mut names, &mut out);
        }
        if let Some(cluster) = &self.cluster {
            out.0.extend(cluster.problems());
        }
        let mut ids = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, c) in self.customers.iter().enumerate() {
            c.validate(i, &mut ids, &mut hashes, &mut out);
        }
        out.0
    }
}

/// The problems found so far.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records that `field` is wrong.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a problem unless `lo <= value <= hi`.
    pub fn range(&mut self, field: &str, value: u64, lo: u64, hi: u64) {
        if value < lo || value > hi {
            self.add(field, format!("{value} is not from {lo} to {hi}"));
        }
    }
}

impl ServerConfig {
    /// Checks `[server]`.
    pub fn validate(&self, out: &mut Problems) {
        if let Err(e) = self.listen.parse::<std::net::SocketAddr>() {
            out.add(
                "server.listen",
                format!(
                    "{:?} is not an address like 0.0.0.0:8080 ({e})",
                    self.listen
                ),
            );
        }
        if self.cores > 1024 {
            out.add("server.cores", format!("{} is more than 1024", self.cores));
        }
        out.range(
            "server.max_body_bytes",
            self.max_body_bytes as u64,
            1,
            16 << 20,
        );
        out.range(
            "server.header_read_timeout_ms",
            self.header_read_timeout_ms,
            1,
            600_000,
        );
        out.range("server.idle_timeout_ms", self.idle_timeout_ms, 1, 3_600_000);
        // hyper refuses request targets over 64 KiB itself, with a bare 414; staying
        // below that keeps every refusal a problem+json answer from the router.
        out.range(
            "server.max_uri_bytes",
            self.max_uri_bytes as u64,
            256,
            65_000,
        );
        out.range("server.max_headers", self.max_headers as u64, 1, 1024);
        if self.max_in_flight_per_core == 0 {
            out.add("server.max_in_flight_per_core", "must be at least 1");
        }
        if self.max_connections_per_core == 0 {
            out.add("server.max_connections_per_core", "must be at least 1");
        }
        if self.data_dir.as_os_str().is_empty() {
            out.add("server.data_dir", "must not be empty");
        }
        out.range("server.body_timeout_ms", self.body_timeout_ms, 1, 600_000);
        // Longer than 10 ms would be latency for nothing: a quote is over by then.
        out.range(
            "server.io_uring_coalesce_us",
            u64::from(self.io_uring_coalesce_us),
            0,
            10_000,
        );
        out.range(
            "server.io_uring_coalesce_events",
            u64::from(self.io_uring_coalesce_events),
            1,
            4096,
        );
    }

    /// How the io_uring backend coalesces completions; `None` when it does not.
    pub fn coalesce(&self) -> Option<crate::rt::Coalesce> {
        (self.io_uring_coalesce_us > 0).then_some(crate::rt::Coalesce {
            window_us: self.io_uring_coalesce_us,
            events: self.io_uring_coalesce_events.max(1),
        })
    }
}

impl QuotesConfig {
    /// Checks `[quotes]`.
    pub fn validate(&self, out: &mut Problems) {
        out.range("quotes.deadline_ms", self.deadline_ms, 1, 60_000);
        if self.cache_ttl_ms > 3_600_000 {
            out.add("quotes.cache_ttl_ms", "must be at most 3600000 (one hour)");
        }
        out.range(
            "quotes.cache_max_bytes",
            self.cache_max_bytes,
            1024,
            1 << 40,
        );
    }
}

impl HedgingConfig {
    /// Checks `[hedging]`.
    pub fn validate(&self, out: &mut Problems) {
        let b = self.budget;
        if !(0.0..=1.0).contains(&b) {
            out.add("hedging.budget", format!("{b} is not between 0 and 1"));
        }
        // TOML has inf and nan: an infinite floor would hedge every request without
        // limit, and the budget's arithmetic is only meaningful for finite values.
        let f = self.floor_per_sec;
        if !(0.0..=1000.0).contains(&f) {
            out.add(
                "hedging.floor_per_sec",
                format!("{f} is not between 0 and 1000"),
            );
        }
    }
}

impl PaymentConfig {
    /// Checks `[payment]`.
    pub fn validate(&self, out: &mut Problems) {
        match parse_url(&self.url) {
            Ok((scheme, _)) if scheme == "http" || scheme == "https" => {}
            Ok((scheme, _)) => out.add(
                "payment.url",
                format!("scheme {scheme:?} is not http or https"),
            ),
            Err(e) => out.add("payment.url", e),
        }
        out.range("payment.timeout_ms", self.timeout_ms, 1, 60_000);
    }
}

impl PurchasesConfig {
    /// Checks `[purchases]`.
    pub fn validate(&self, out: &mut Problems) {
        if self.wait_ms > 600_000 {
            out.add("purchases.wait_ms", "must be at most 600000");
        }
        out.range(
            "purchases.key_retention_hours",
            self.key_retention_hours,
            1,
            24 * 365,
        );
        if !self.token_key.is_empty()
            && (self.token_key.len() != 64 || hex::decode(&self.token_key).is_err())
        {
            out.add(
                "purchases.token_key",
                "must be 64 hex digits (32 bytes), or empty",
            );
        }
        out.range("purchases.step_timeout_ms", self.step_timeout_ms, 1, 60_000);
        if self.step_retry_ms < self.step_timeout_ms || self.step_retry_ms > 3_600_000 {
            out.add(
                "purchases.step_retry_ms",
                "must be at least step_timeout_ms and at most 3600000",
            );
        }
        if self.max_reorders > 100 {
            out.add("purchases.max_reorders", "must be at most 100");
        }
        for (name, value) in [
            ("purchases.max_running_per_core", self.max_running_per_core),
            (
                "purchases.max_running_per_customer",
                self.max_running_per_customer,
            ),
            ("purchases.recovery_concurrency", self.recovery_concurrency),
        ] {
            out.range(name, value as u64, 1, 1_000_000);
        }
    }
}

impl StorageConfig {
    /// Checks `[storage]`.
    pub fn validate(&self, out: &mut Problems) {
        if self.shards > 4096 {
            out.add("storage.shards", "must be at most 4096");
        }
    }
}

impl FxConfig {
    /// Checks `[fx]`; returns the currencies a price can be converted from (the base
    /// and every currency with a rate).
    pub fn validate(&self, out: &mut Problems) -> HashSet<String> {
        let base = Currency::parse(&self.base);
        if let Err(e) = &base {
            out.add("fx.base", e.to_string());
        }
        let mut convertible: HashSet<String> = HashSet::new();
        convertible.insert(self.base.clone());
        let mut rates_ok = base.is_ok();
        for (code, rate) in &self.rates {
            let field = format!("fx.rates.{code}");
            match Currency::parse(code) {
                Err(e) => {
                    out.add(field.clone(), e.to_string());
                    rates_ok = false;
                }
                Ok(_) => {
                    convertible.insert(code.clone());
                }
            }
            if !rate.is_finite() || *rate <= 0.0 {
                out.add(field, format!("rate {rate} must be a positive number"));
                rates_ok = false;
            } else if *rate > 1e9 || *rate < 1e-9 {
                out.add(field, format!("rate {rate} is absurd"));
            }
        }
        // Only a table whose parts each parse can say what is wrong with the whole.
        if rates_ok {
            if let Err(ConfigError::Invalid(ps)) = self.table() {
                out.0.extend(ps);
            }
        }
        convertible
    }

    /// The FX table.
    pub fn table(&self) -> Result<FxTable, ConfigError> {
        let bad =
            |field: String, message: String| ConfigError::Invalid(vec![Problem { field, message }]);
        let base = Currency::parse(&self.base).map_err(|e| bad("fx.base".into(), e.to_string()))?;
        let mut rates = Vec::with_capacity(self.rates.len());
        let mut texts = Vec::with_capacity(self.rates.len());
        for (code, rate) in &self.rates {
            let c = Currency::parse(code)
                .map_err(|e| bad(format!("fx.rates.{code}"), e.to_string()))?;
            rates.push(c);
            texts.push(FxTable::rate_text_from_f64(*rate));
        }
        let pairs: Vec<(Currency, &str)> = rates
            .iter()
            .copied()
            .zip(texts.iter().map(String::as_str))
            .collect();
        FxTable::new(base, &pairs).map_err(|e| bad("fx.rates".into(), e.to_string()))
    }
}

impl SellerConfig {
    /// Checks `[[sellers]]` number `i`. `convertible` and `base` are from `[fx]`;
    /// `names` collects the names seen so far (they must differ).
    pub fn validate(
        &self,
        i: usize,
        convertible: &HashSet<String>,
        base: &str,
        names: &mut HashSet<String>,
        out: &mut Problems,
    ) {
        let f = |k: &str| format!("sellers[{i}].{k}");
        if self.name.is_empty() {
            out.add(f("name"), "must not be empty");
        } else if !self
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            out.add(
                f("name"),
                format!("{:?} may only contain a-z, 0-9, - and _", self.name),
            );
        } else if self.name.len() > 64 {
            out.add(f("name"), "is longer than 64 characters");
        }
        if !self.name.is_empty() && !names.insert(self.name.clone()) {
            out.add(
                f("name"),
                format!("{:?} is used by another seller", self.name),
            );
        }
        if self.endpoints.is_empty() {
            out.add(f("endpoints"), "at least one endpoint is required");
        }
        let mut https = false;
        for (j, ep) in self.endpoints.iter().enumerate() {
            let field = format!("sellers[{i}].endpoints[{j}]");
            match parse_url(ep) {
                Err(e) => out.add(field, e),
                Ok((scheme, _)) => {
                    let ok = match self.protocol {
                        Protocol::Json | Protocol::Xml => scheme == "http" || scheme == "https",
                        Protocol::Line => scheme == "tcp",
                    };
                    https |= scheme == "https";
                    if !ok {
                        let want = match self.protocol {
                            Protocol::Line => "tcp://",
                            _ => "http:// or https://",
                        };
                        out.add(
                            field,
                            format!("{ep:?} is not {want} (protocol {:?})", self.protocol),
                        );
                    }
                }
            }
        }
        match Currency::parse(&self.currency) {
            Err(e) => out.add(f("currency"), e.to_string()),
            Ok(_) if !convertible.contains(&self.currency) => out.add(
                f("currency"),
                format!("{} has no rate in [fx] rates (base {base})", self.currency),
            ),
            Ok(_) => {}
        }
        out.range(&f("timeout_ms"), self.timeout_ms, 1, 60_000);
        if self.max_concurrency == 0 {
            out.add(f("max_concurrency"), "must be at least 1");
        }
        out.range(&f("line_connections"), self.line_connections as u64, 1, 64);
        if let Some(ca) = &self.ca_file {
            if !https {
                out.add(f("ca_file"), "is only used with https:// endpoints");
            } else if !ca.is_file() {
                out.add(f("ca_file"), format!("{} does not exist", ca.display()));
            }
        }
    }
}

impl CustomerConfig {
    /// Checks `[[customers]]` number `i`; `ids` and `hashes` collect what was seen so
    /// far (both must differ between customers).
    pub fn validate(
        &self,
        i: usize,
        ids: &mut HashSet<String>,
        hashes: &mut HashSet<String>,
        out: &mut Problems,
    ) {
        let f = |k: &str| format!("customers[{i}].{k}");
        if self.id.is_empty() {
            out.add(f("id"), "must not be empty");
        } else if !ids.insert(self.id.clone()) {
            out.add(f("id"), format!("{:?} is used twice", self.id));
        }
        let h = &self.api_key_sha256;
        if h.len() != 64
            || !h
                .chars()
                .all(|ch| ch.is_ascii_digit() || ('a'..='f').contains(&ch))
        {
            out.add(
                f("api_key_sha256"),
                "must be 64 lower-case hex digits (the SHA-256 of the API key)",
            );
        } else if !hashes.insert(h.clone()) {
            out.add(f("api_key_sha256"), "is the same key as another customer's");
        }
        if let Some(r) = self.rate_per_sec {
            out.range(&f("rate_per_sec"), u64::from(r), 1, 10_000_000);
        }
        match (self.burst, self.rate_per_sec) {
            (Some(0), _) => out.add(f("burst"), "must be at least 1"),
            (Some(_), None) => out.add(f("burst"), "needs rate_per_sec"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
listen = "0.0.0.0:8080"
cores = 0
data_dir = "./data"
max_body_bytes = 65536

[quotes]
deadline_ms = 200
cache_ttl_ms = 0

[hedging]
enabled = true
budget = 0.05

[payment]
url = "http://127.0.0.1:9100"

[fx]
base = "USD"
rates = { EUR = 1.08, GBP = 1.27 }

[[sellers]]
name = "harbor-books"
protocol = "json"
endpoints = ["https://127.0.0.1:9001"]
currency = "USD"
timeout_ms = 150
max_concurrency = 256

[[sellers]]
name = "corner-shop"
protocol = "line"
endpoints = ["tcp://127.0.0.1:9003"]
currency = "GBP"

[[customers]]
id = "alice"
api_key_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
"#;

    fn fields(text: &str) -> Vec<String> {
        Config::from_toml_str(text)
            .map(|c| c.problems().into_iter().map(|p| p.field).collect())
            .unwrap_or_else(|e| vec![format!("parse: {e}")])
    }

    #[test]
    fn the_contract_example_is_valid() {
        assert_eq!(fields(EXAMPLE), Vec::<String>::new());
        let c = Config::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(c.sellers[1].timeout_ms, 150);
        assert_eq!(c.sellers[1].protocol, Protocol::Line);
        assert!(c.fx_table().is_ok());
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let text = EXAMPLE
            .replace("\"GBP\"\n\n[[customers]]", "\"XYZ\"\n\n[[customers]]")
            .replace("tcp://127.0.0.1:9003", "ftp://127.0.0.1:9003")
            .replace("deadline_ms = 200", "deadline_ms = 0")
            .replace("budget = 0.05", "budget = 2.0")
            .replace("cache_ttl_ms = 0", "cache_ttl_ms = 0\ncache_max_bytes = 10")
            .replace("name = \"corner-shop\"", "name = \"harbor-books\"");
        let f = fields(&text);
        for want in [
            "quotes.deadline_ms",
            "quotes.cache_max_bytes",
            "hedging.budget",
            "sellers[1].name",
            "sellers[1].endpoints[0]",
            "sellers[1].currency",
        ] {
            assert!(f.iter().any(|x| x == want), "{want} missing from {f:?}");
        }
    }

    #[test]
    fn the_hedging_floor_must_be_a_finite_rate() {
        // Found by the config fuzzer: TOML's inf and nan passed validation.
        for floor in ["inf", "-inf", "nan", "-1.0", "5000.0"] {
            let text = EXAMPLE.replace(
                "budget = 0.05",
                &format!("budget = 0.05\nfloor_per_sec = {floor}"),
            );
            assert_eq!(fields(&text), vec!["hedging.floor_per_sec"], "{floor}");
        }
    }

    #[test]
    fn completion_coalescing_is_bounded_and_zero_turns_it_off() {
        let with = |lines: &str| EXAMPLE.replacen("[server]\n", &format!("[server]\n{lines}\n"), 1);
        assert!(fields(&with("io_uring_coalesce_us = 10000")).is_empty());
        assert_eq!(
            fields(&with("io_uring_coalesce_us = 10001")),
            vec!["server.io_uring_coalesce_us"]
        );
        assert_eq!(
            fields(&with("io_uring_coalesce_events = 0")),
            vec!["server.io_uring_coalesce_events"]
        );
        let off = Config::from_toml_str("[server]\nio_uring_coalesce_us = 0\n").unwrap();
        assert_eq!(off.server.coalesce(), None);
        let on = Config::from_toml_str("").unwrap().server.coalesce();
        assert_eq!(
            on,
            Some(crate::rt::Coalesce {
                window_us: 1000,
                events: 16
            })
        );
    }

    #[test]
    fn unknown_keys_and_types_are_parse_errors() {
        let e = Config::from_toml_str("[server]\nlisten = 5\n").unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::from_toml_str("[server]\nlistn = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }

    #[test]
    fn currencies_need_a_rate_and_hashes_must_be_hex() {
        let text = EXAMPLE
            .replace(
                "rates = { EUR = 1.08, GBP = 1.27 }",
                "rates = { EUR = 1.08, GBP = -1.0 }",
            )
            .replace(
                "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
                "XYZ",
            );
        let f = fields(&text);
        assert!(f.iter().any(|x| x == "fx.rates.GBP"), "{f:?}");
        assert!(
            f.iter().any(|x| x == "customers[0].api_key_sha256"),
            "{f:?}"
        );
        let text = EXAMPLE.replace("currency = \"GBP\"", "currency = \"JPY\"");
        assert!(fields(&text).iter().any(|x| x == "sellers[1].currency"));
    }

    #[test]
    fn the_runtime_is_one_of_four_names() {
        for name in crate::rt::RuntimeChoice::NAMES {
            let c = Config::from_toml_str(&format!("[server]\nruntime = \"{name}\"\n")).unwrap();
            assert_eq!(c.server.runtime.name(), name);
        }
        assert_eq!(
            Config::from_toml_str("").unwrap().server.runtime,
            crate::rt::RuntimeChoice::Auto
        );
        let e = Config::from_toml_str("[server]\nruntime = \"uring\"\n").unwrap_err();
        assert!(e.to_string().contains("runtime"), "{e}");
        assert!(e.to_string().contains("io_uring"), "{e}");
    }

    #[test]
    fn cluster_section_is_validated() {
        let with = |section: &str| fields(&format!("{EXAMPLE}\n[cluster]\n{section}\n"));
        assert_eq!(
            with("nodes = [\"10.0.0.1:8080\", \"node-b.internal:8080\", \"[::1]:9000\"]\nnode = 2"),
            Vec::<String>::new()
        );
        assert_eq!(with("nodes = []\nnode = 0"), vec!["cluster.nodes"]);
        assert_eq!(
            with("nodes = [\"10.0.0.1:8080\", \"10.0.0.2\"]\nnode = 2"),
            vec!["cluster.nodes[1]", "cluster.node"]
        );
        assert_eq!(
            with("nodes = [\"10.0.0.1:8080\", \"10.0.0.1:8080\"]\nnode = 0"),
            vec!["cluster.nodes[1]"]
        );
        // Nothing that could break out of a generated HAProxy line.
        assert_eq!(
            with("nodes = [\"a b:80\", \"x'y:80\", \"h:80/\"]\nnode = 0"),
            vec!["cluster.nodes[0]", "cluster.nodes[1]", "cluster.nodes[2]"]
        );
        let f = fields(&format!("{EXAMPLE}\n[cluster]\nnodes = [\"a:1\"]\n"));
        assert!(f[0].contains("node"), "{f:?}");
        let f = fields(&format!(
            "{EXAMPLE}\n[cluster]\nnodes = [\"a:1\"]\nnode = 0\nweight = 1\n"
        ));
        assert!(f[0].contains("weight"), "{f:?}");
        assert!(Config::from_toml_str(EXAMPLE).unwrap().cluster.is_none());
    }

    #[test]
    fn urls_parse() {
        assert_eq!(parse_url("http://127.0.0.1:80").unwrap().1.port, 80);
        assert_eq!(parse_url("tcp://[::1]:9000").unwrap().1.host, "::1");
        assert!(parse_url("http://127.0.0.1").is_err());
        assert!(parse_url("http://127.0.0.1:0").is_err());
        assert!(parse_url("http://127.0.0.1:80/x").is_err());
        assert!(parse_url("127.0.0.1:80").is_err());
    }
}
