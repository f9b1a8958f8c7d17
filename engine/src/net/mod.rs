//! Networking on glommio: the glue that lets hyper run on a glommio executor, a timer for
//! hyper, TLS, and the per-core connection pools to sellers.
//!
//! Everything here is `!Send` by design: each core builds its own pools and nothing is
//! shared between cores.

mod endpoint;
mod error;
mod http_client;
mod io;
mod line_client;
mod timer;
mod tls;

pub use endpoint::{Endpoint, Scheme};
pub use error::NetError;
pub use http_client::{HttpPool, OwnedReply};
pub use io::HyperIo;
pub use line_client::{LinePool, OnTimeout};
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
