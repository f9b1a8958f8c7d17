//! `baseline-tokio`: an idiomatic tokio + axum + reqwest aggregator of the quote
//! endpoint, kept only as a **measured baseline** for `bench/e2e` (issue 4: the engine
//! should be at least 3x cheaper in CPU per quote than this). It is not part of the
//! product and is not a member of the main workspace.
//!
//! It is written the way a competent Rust developer would write it with these libraries
//! in an afternoon: a multi-threaded tokio runtime, an axum router, one shared
//! `reqwest::Client` for the json and xml sellers, a small pool of TCP connections per
//! line seller, `join_all` over the sellers with a `tokio::time::timeout` each. It is
//! neither tuned (no hedging, cache, breakers, custom allocator or per-core layout) nor
//! handicapped. Seller wire formats, FX and the vocabulary come from the workspace's
//! sans-IO `bookbroker-protocols` crate, so the comparison is about the I/O stack.
//!
//! ```text
//! baseline-tokio --config ENGINE.toml --listen 127.0.0.1:PORT [--workers N]
//! ```
//! `ENGINE.toml` is an engine config (e.g. from `sellersim --emit-config`); only
//! `[quotes] deadline_ms`, `[fx]` and `[[sellers]]` are read. Routes: `GET /v1/quotes`
//! (the `Authorization` header is accepted and ignored) and `GET /healthz`.

#![warn(missing_docs)]

mod config;
mod quotes;
mod sellers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::quotes::AppState;
use crate::sellers::Seller;

const USAGE: &str =
    "usage: baseline-tokio --config ENGINE.toml --listen 127.0.0.1:PORT [--workers N]";

struct Args {
    config: PathBuf,
    listen: SocketAddr,
    workers: Option<usize>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut config = None;
    let mut listen = None;
    let mut workers = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--config" => config = Some(PathBuf::from(value()?)),
            "--listen" => {
                let text = value()?;
                listen = Some(
                    text.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {text:?}: {e}"))?,
                );
            }
            "--workers" => {
                let text = value()?;
                let n = text
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--workers {text:?}: expected a positive number"))?;
                workers = Some(n);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Args {
        config: config.ok_or_else(|| format!("--config is required\n{USAGE}"))?,
        listen: listen.ok_or_else(|| format!("--listen is required\n{USAGE}"))?,
        workers,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, workers)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("baseline-tokio: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, workers: usize) -> Result<(), String> {
    let config = Config::load(&args.config)?;
    let fx = config.fx_table()?;
    let sellers = config
        .sellers
        .iter()
        .map(Seller::new)
        .collect::<Result<Vec<_>, _>>()?;
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let state = Arc::new(AppState {
        sellers,
        fx,
        deadline: Duration::from_millis(config.quotes.deadline_ms),
        http,
    });

    let app = Router::new()
        .route("/v1/quotes", get(quotes::get_quotes))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(
        listen = %args.listen,
        workers,
        sellers = config.sellers.len(),
        "baseline-tokio ready"
    );
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_flags() {
        let a = args(&[
            "--config",
            "x.toml",
            "--listen",
            "127.0.0.1:9000",
            "--workers",
            "2",
        ])
        .unwrap();
        assert_eq!(a.config, PathBuf::from("x.toml"));
        assert_eq!(a.listen.port(), 9000);
        assert_eq!(a.workers, Some(2));
        assert!(args(&["--config", "x.toml"]).is_err());
        assert!(args(&["--listen", "127.0.0.1:1", "--config", "x", "--workers", "0"]).is_err());
        assert!(args(&["--bogus"]).is_err());
    }
}
