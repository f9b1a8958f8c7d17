//! The bookbroker engine: one executor pinned per core (compio, tokio or glommio, behind
//! the seam in [`rt`]), each serving the customer API over HTTP/1.1 with hyper and fanning
//! quote requests out to every seller over its own pooled connections. See
//! `ARCHITECTURE.md` at the repository root for the map.
#![warn(missing_docs)]

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod hedge;
pub mod metrics;
pub mod net;
pub mod problem;
pub mod purchase;
pub mod quotes;
pub mod ratelimit;
pub mod respond;
pub mod rt;
pub mod runtime;
pub mod sellers;
pub mod server;
pub mod signal;
pub mod state;
