//! The state every part of the engine is handed: [`Shared`], read-only and the same on
//! every core, and [`Core`], one core's own (its pools, caches, breakers, shards). Both
//! are built by `runtime` at start; routes and services take them, and nothing here
//! knows about routes or services.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bookbroker_protocols::FxTable;
use bookbroker_storage::DataDir;

use crate::auth::ApiKeys;
use crate::cache::QuoteCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::purchase::lane::Lanes;
use crate::purchase::secrets::TokenCipher;
use crate::purchase::state::{CustomerCounts, Purchases};
use crate::ratelimit::RateLimits;
use crate::rt::Backend;
use crate::sellers::SellerClient;
use crate::signal::LocalSignal;

/// State shared read-only by every core (plus the shutdown flag and metrics, which are
/// atomics).
pub struct Shared {
    /// The validated config.
    pub config: Config,
    /// Where every core listens.
    pub listen: SocketAddr,
    /// Number of cores serving.
    pub cores: usize,
    /// The executor backend every core runs.
    pub backend: Backend,
    /// Metrics, one slot per core.
    pub metrics: Arc<Metrics>,
    /// Set once when the process should stop.
    pub shutdown: AtomicBool,
    /// Every core's purchase inbox.
    pub lanes: Lanes,
    /// The data directory (its shard count is fixed).
    pub data: DataDir,
    /// Token encryption and request fingerprints.
    pub cipher: Arc<TokenCipher>,
    /// Running purchases per customer, across cores.
    pub running_per_customer: CustomerCounts,
    /// Request rates of the customers with `rate_per_sec`, across cores.
    pub rate_limits: RateLimits,
    /// Set by the environment variable `BOOKBROKER_FAILPOINT=panic-on-quote` (tests
    /// only): a quote for the title `__panic__` panics its core, so the test suite can
    /// see what a bug in a core does to the process.
    pub failpoint_panic: bool,
}

/// Everything one core needs to serve requests.
pub struct Core {
    /// Index of this core (0-based), also its metrics slot.
    pub index: usize,
    /// State shared read-only by all cores.
    pub shared: Arc<Shared>,
    /// This core's copy of the API keys.
    pub keys: ApiKeys,
    /// This core's copy of the FX table.
    pub fx: FxTable,
    /// This core's seller clients, in config order.
    pub sellers: Vec<SellerClient>,
    /// Raised when the core should stop accepting and drain.
    pub shutdown: Rc<LocalSignal>,
    /// Client connections open on this core.
    pub open_connections: Cell<usize>,
    /// The quote cache, when `quotes.cache_ttl_ms` > 0.
    pub cache: Option<RefCell<QuoteCache>>,
    /// `/v1` requests this core is working on.
    pub in_flight: Cell<usize>,
    /// The shards this core owns and its payment client.
    pub purchases: Purchases,
}
