//! A core's purchase state: the shards it owns with their group commits and running
//! purchases, its payment client, and the per-customer counts shared by all cores.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;

use super::durable::GroupCommit;
use super::secrets::TokenCipher;
use crate::net::{Endpoint, HttpPool, NetError};

/// One shard as its owning core sees it: storage plus the purchases running on it.
pub struct ShardOwner {
    /// The shard with its group commit.
    pub commit: Rc<GroupCommit>,
    /// Purchases in progress, by id, each with the tasks waiting for its end.
    pub running: RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

/// A core's purchase machinery: the shards it owns and its payment client.
pub struct Purchases {
    /// Owned shards by index.
    pub shards: HashMap<u32, Rc<ShardOwner>>,
    /// Shards in the data directory.
    pub shard_count: u32,
    /// The payment provider, over this core's connections.
    pub payment: HttpPool,
    /// Token encryption and request fingerprints.
    pub cipher: Arc<TokenCipher>,
    /// Sagas running on this core (bounded by `purchases.max_running_per_core`).
    pub running: Cell<usize>,
}

impl Purchases {
    /// Builds the payment client for `url`.
    pub fn payment_pool(url: &str) -> Result<HttpPool, NetError> {
        let endpoint = Endpoint::parse(url)?;
        let tls = if url.starts_with("https://") {
            Some(crate::net::client_config(None)?)
        } else {
            None
        };
        HttpPool::new(vec![endpoint], tls, 4096)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Running purchases per customer, across every core. Touched twice per purchase (not
/// per quote), so a lock is cheap enough and keeps the count exact.
#[derive(Debug, Default)]
pub struct CustomerCounts {
    counts: std::sync::Mutex<HashMap<String, usize>>,
}

impl CustomerCounts {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, usize>) -> T) -> T {
        // A poisoned lock only means another core panicked mid-update of a counter;
        // the counts are still usable.
        let mut map = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut map)
    }

    /// Running purchases of `customer`.
    pub fn get(&self, customer: &str) -> usize {
        self.with(|m| m.get(customer).copied().unwrap_or(0))
    }

    /// Counts one more running purchase of `customer`.
    pub fn enter(&self, customer: &str) {
        self.with(|m| {
            let n = m.entry(customer.to_string()).or_insert(0);
            *n = n.saturating_add(1);
        });
    }

    /// Counts one less.
    pub fn leave(&self, customer: &str) {
        self.with(|m| {
            if let Some(n) = m.get_mut(customer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(customer);
                }
            }
        });
    }
}
