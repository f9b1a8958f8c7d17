//! Networking: a timer for hyper, TLS configuration, and the per-core connection pools to
//! sellers. Sockets and hyper's I/O traits come from the executor seam ([`crate::rt`]).
//!
//! Everything here is `!Send` by design: each core builds its own pools and nothing is
//! shared between cores.

mod endpoint;
mod error;
mod http_client;
mod line_client;
mod orphans;
mod timer;
mod tls;

pub use endpoint::{Endpoint, Scheme};
pub use error::NetError;
pub use http_client::{HttpPool, OwnedReply};
pub use line_client::{LinePool, OnTimeout};
pub use orphans::start_driver as start_orphanage;
pub use timer::{sleep, CoreTimer};
pub use tls::client_config;

/// Runs `fut` until it completes or `timeout` passes; `None` on timeout.
pub async fn with_timeout<F: std::future::Future>(
    timeout: std::time::Duration,
    fut: F,
) -> Option<F::Output> {
    use futures_util::future::{select, Either};
    let fut = std::pin::pin!(fut);
    let timer = sleep(timeout);
    match select(fut, timer).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}
