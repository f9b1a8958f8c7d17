//! The seller simulator: every seller of a [`Scenario`] plus a payment provider, served
//! on loopback by a tokio runtime of its own.
//!
//! [`RunningSim::start`] binds every port before it returns (so errors such as a port in
//! use surface at once), then serves on a background thread until [`RunningSim::stop`]
//! (or drop). The `sellersim` binary and `bookbroker demo` both use it.
//!
//! Scenarios are TOML files; their format is documented in `scenarios/README.md` beside
//! this crate, and [`DEMO_SCENARIO`] is the one the demo runs.

#![warn(missing_docs)]

mod catalogue;
mod emit;
mod http;
mod line;
mod payment;
mod rng;
pub use rng::SplitMix64;
mod scenario;
mod seller;
mod tls;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

pub use emit::api_key_sha256;
pub use scenario::{
    CatalogueSpec, ConfirmLie, CustomerSpec, EngineSpec, FaultSpec, FxSpec, LatencySpec,
    PaymentCall, PaymentSpec, Protocol, RuntimeSpec, Scenario, SellerSpec,
};

use self::http::HttpApp;
use self::payment::PaymentState;
use self::seller::{bump, LieModel, SellerSetup, SellerState};

/// The scenario `bookbroker demo` runs, compiled in so the demo needs no files. It lives
/// in this crate, beside the simulator that gives it meaning, so the binary that embeds
/// it does not reach into another crate's directory.
pub const DEMO_SCENARIO: &str = include_str!("../scenarios/demo.toml");

/// The API key of the customer `demo` in [`DEMO_SCENARIO`] (printed for the user).
pub const DEMO_API_KEY: &str = "demo-key-123";

/// Why the simulator could not load a scenario or start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario is not valid TOML or has unknown or mistyped fields.
    #[error("invalid scenario: {0}")]
    Parse(String),
    /// A field has an invalid value.
    #[error("invalid scenario field {field}: {reason}")]
    Invalid {
        /// The field, e.g. `sellers[1] (corner-shop).latency.slow_share`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A port could not be bound.
    #[error("cannot listen on {addr} for {what}: {source}; is another program using the port? (port = 0 picks a free one)")]
    Bind {
        /// What the port is for, e.g. `seller harbor-books endpoint 1`.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or its thread could not start.
    #[error("cannot start the simulator runtime: {0}")]
    Runtime(std::io::Error),
    /// Certificates could not be made.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The engine config could not be encoded.
    #[error("cannot encode the engine config: {0}")]
    Encode(String),
}

/// A seller as it runs: where it listens and what the engine config needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerInfo {
    /// The seller's name.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// Endpoint URLs (`http://`, `https://` or `tcp://`).
    pub endpoints: Vec<String>,
    /// Its currency code.
    pub currency: String,
    /// Copied into the engine config.
    pub timeout_ms: u64,
    /// Copied into the engine config.
    pub max_concurrency: u32,
    /// Whether it serves https.
    pub tls: bool,
}

/// A running simulator. Stops serving when [`RunningSim::stop`] is called or it is dropped.
pub struct RunningSim {
    scenario: Scenario,
    sellers: Vec<SellerInfo>,
    payment_addr: SocketAddr,
    isbns: Vec<String>,
    stocked_by_all: Vec<String>,
    ca_pem: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("sellers", &self.sellers)
            .field("payment_addr", &self.payment_addr)
            .finish_non_exhaustive()
    }
}

/// A bound listener and what it serves.
enum Serve {
    Http(HttpApp),
    Https(HttpApp, TlsAcceptor),
    Line(Arc<SellerState>),
}

struct Bound {
    listener: StdListener,
    serve: Serve,
    /// Whose `connections_accepted` to count (none for the payment provider).
    counter: Option<Arc<SellerState>>,
}

fn bind(host: IpAddr, port: u16, what: String) -> Result<StdListener, SimError> {
    let addr = SocketAddr::new(host, port);
    let listener = StdListener::bind(addr).map_err(|source| SimError::Bind {
        what: what.clone(),
        addr,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| SimError::Bind { what, addr, source })?;
    Ok(listener)
}

fn local_addr(listener: &StdListener, what: &str) -> Result<SocketAddr, SimError> {
    listener.local_addr().map_err(|source| SimError::Bind {
        what: what.to_string(),
        addr: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0),
        source,
    })
}

impl RunningSim {
    /// Binds every port and starts serving on a new background thread with its own
    /// tokio runtime; returns once everything is bound.
    pub fn start(scenario: Scenario, host: IpAddr) -> Result<RunningSim, SimError> {
        scenario.validate()?;
        let books = catalogue::books(scenario.catalogue.seed, scenario.catalogue.isbns);
        let needs_tls = scenario.sellers.iter().any(|s| s.tls);
        let tls = if needs_tls {
            Some(tls::generate(host)?)
        } else {
            None
        };
        let acceptor = tls
            .as_ref()
            .map(|t| TlsAcceptor::from(t.server_config.clone()));

        // Bind first, build the seller states afterwards: they carry their endpoint list.
        let mut seller_listeners: Vec<Vec<StdListener>> = Vec::new();
        let mut infos = Vec::new();
        for spec in &scenario.sellers {
            let mut listeners = Vec::new();
            let mut endpoints = Vec::new();
            let scheme = match (spec.protocol, spec.tls) {
                (Protocol::Json, true) => "https",
                (Protocol::Json | Protocol::Xml, _) => "http",
                (Protocol::Line, _) => "tcp",
            };
            for k in 0..spec.endpoints {
                let port = if spec.port == 0 {
                    0
                } else {
                    spec.port.saturating_add(k)
                };
                let what = format!("seller {} endpoint {}", spec.name, k + 1);
                let listener = bind(host, port, what.clone())?;
                let addr = local_addr(&listener, &what)?;
                endpoints.push(format!("{scheme}://{addr}"));
                listeners.push(listener);
            }
            seller_listeners.push(listeners);
            infos.push(SellerInfo {
                name: spec.name.clone(),
                protocol: spec.protocol,
                endpoints,
                currency: spec.currency.clone(),
                timeout_ms: spec.timeout_ms,
                max_concurrency: spec.max_concurrency,
                tls: spec.tls,
            });
        }
        let payment_listener = bind(host, scenario.payment.port, "the payment provider".into())?;
        let payment_addr = local_addr(&payment_listener, "the payment provider")?;

        // Only lying sellers need the table; validation has checked it builds for them.
        let fx = scenario.fx_table().ok().map(Arc::new);
        let mut states = Vec::new();
        let mut isbn_set = std::collections::HashSet::new();
        for (i, (spec, info)) in scenario.sellers.iter().zip(&infos).enumerate() {
            let at = format!("sellers[{i}] ({})", spec.name);
            let currency = spec.currency(&at)?;
            let lie = lie_model(spec, &at, fx.as_ref())?;
            let bounds = spec.price_bounds(&at)?;
            let offers = catalogue::seller_offers(
                &books,
                &catalogue::SellerCatalogueSpec {
                    seed: scenario.catalogue.seed,
                    name: &spec.name,
                    protocol: spec.protocol,
                    currency,
                    stock_share: spec.stock_share,
                    offers_per_isbn: spec.offers_per_isbn,
                    bounds,
                    stock: spec.stock,
                },
            );
            let mut state = SellerState::new(SellerSetup {
                name: spec.name.clone(),
                protocol: spec.protocol,
                currency,
                seed: scenario.catalogue.seed,
                offers,
                latency: spec.latency.clone(),
                faults: spec.faults.clone(),
                title_results_max: spec.title_results_max as usize,
                stale_listings: spec.stale_listings,
                lie,
            });
            state.endpoints = info.endpoints.clone();
            isbn_set.extend(state.isbns().copied());
            states.push(Arc::new(state));
        }
        let isbns = books
            .iter()
            .filter(|b| isbn_set.contains(&b.isbn))
            .map(|b| b.isbn.as_str().to_string())
            .collect();
        let stocked_by_all = books
            .iter()
            .filter(|b| states.iter().all(|s| s.stocks(&b.isbn)))
            .map(|b| b.isbn.as_str().to_string())
            .collect();

        let mut bound = Vec::new();
        for ((spec, state), listeners) in scenario.sellers.iter().zip(&states).zip(seller_listeners)
        {
            for listener in listeners {
                let serve = match (spec.protocol, &acceptor) {
                    (Protocol::Json, Some(acceptor)) if spec.tls => {
                        Serve::Https(HttpApp::Json(state.clone()), acceptor.clone())
                    }
                    (Protocol::Json, _) => Serve::Http(HttpApp::Json(state.clone())),
                    (Protocol::Xml, _) => Serve::Http(HttpApp::Xml(state.clone())),
                    (Protocol::Line, _) => Serve::Line(state.clone()),
                };
                bound.push(Bound {
                    listener,
                    serve,
                    counter: Some(state.clone()),
                });
            }
        }
        bound.push(Bound {
            listener: payment_listener,
            serve: Serve::Http(HttpApp::Payment {
                state: Arc::new(PaymentState::new(&scenario.payment)),
                latency: Duration::from_millis(scenario.payment.latency_ms),
                sellers: Arc::new(states),
            }),
            counter: None,
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(scenario.runtime.workers)
            .thread_name("sellersim")
            .enable_all()
            .build()
            .map_err(SimError::Runtime)?;
        // Registering the listeners with the runtime here, not on the thread, keeps every
        // start-up error on the caller's side.
        let mut listeners = Vec::new();
        {
            let _guard = runtime.enter();
            for b in bound {
                let addr = b.listener.local_addr().ok();
                let listener =
                    TcpListener::from_std(b.listener).map_err(|source| SimError::Bind {
                        what: "a listener".into(),
                        addr: addr.unwrap_or_else(|| SocketAddr::new(host, 0)),
                        source,
                    })?;
                listeners.push((listener, b.serve, b.counter));
            }
        }
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sellersim-main".into())
            .spawn(move || {
                runtime.block_on(async move {
                    for (listener, serve, counter) in listeners {
                        tokio::spawn(accept_loop(listener, serve, counter));
                    }
                    // Either a stop request or the handle being dropped ends serving.
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(SimError::Runtime)?;

        Ok(RunningSim {
            scenario,
            sellers: infos,
            payment_addr,
            isbns,
            stocked_by_all,
            ca_pem: tls.map(|t| t.ca_pem),
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The engine config TOML text for this running sim (as `--emit-config` writes), with
    /// `ca_file` pointing at `ca_path` (the CA is written there if any seller uses TLS).
    pub fn engine_config(&self, ca_path: &Path) -> Result<String, SimError> {
        let ca_file = match &self.ca_pem {
            Some(pem) => {
                let absolute = if ca_path.is_absolute() {
                    ca_path.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(|source| SimError::Write {
                            path: ca_path.to_path_buf(),
                            source,
                        })?
                        .join(ca_path)
                };
                write_file(&absolute, pem.as_bytes())?;
                Some(absolute.to_string_lossy().into_owned())
            }
            None => None,
        };
        let payment_url = self.payment_url();
        let sellers: Vec<emit::RunningSeller<'_>> = self
            .sellers
            .iter()
            .map(|s| emit::RunningSeller {
                name: &s.name,
                protocol: s.protocol.as_str(),
                endpoints: &s.endpoints,
                currency: &s.currency,
                timeout_ms: s.timeout_ms,
                max_concurrency: s.max_concurrency,
                tls: s.tls,
            })
            .collect();
        emit::render(&self.scenario, &payment_url, &sellers, ca_file.as_deref())
    }

    /// Every ISBN-13 stocked by at least one seller, in catalogue order (as `--emit-isbns`).
    pub fn isbns(&self) -> Vec<String> {
        self.isbns.clone()
    }

    /// The ISBNs every seller stocks, in catalogue order (the demo quotes one of them).
    pub fn isbns_stocked_by_all(&self) -> &[String] {
        &self.stocked_by_all
    }

    /// The payment provider's base URL, e.g. `http://127.0.0.1:9100`.
    pub fn payment_url(&self) -> String {
        format!("http://{}", self.payment_addr)
    }

    /// The sellers as they run (names, endpoints).
    pub fn sellers(&self) -> &[SellerInfo] {
        &self.sellers
    }

    /// The generated CA certificate (PEM), when some seller serves https.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The scenario being served.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Stops serving, closes every port and joins the thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::warn!("simulator thread panicked");
            }
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// The lie model of a seller, or `None` when its confirmations never lie.
fn lie_model(
    spec: &SellerSpec,
    at: &str,
    fx: Option<&Arc<bookbroker_protocols::FxTable>>,
) -> Result<Option<LieModel>, SimError> {
    let f = &spec.faults;
    if f.confirm_lie_rate <= 0.0 {
        return Ok(None);
    }
    let invalid = |field: &str, reason: &str| SimError::Invalid {
        field: format!("{at}.faults.{field}"),
        reason: reason.to_string(),
    };
    match f.confirm_lie {
        None => Err(invalid(
            "confirm_lie",
            "is required when confirm_lie_rate is above 0",
        )),
        Some(ConfirmLie::Negative) => Ok(Some(LieModel::Negative)),
        Some(ConfirmLie::Inflated) => Ok(Some(LieModel::Inflated {
            // Hundredths of a percent, so the booking is exact integer arithmetic.
            basis_points: (f.inflate_pct * 100.0).round() as i128,
        })),
        Some(ConfirmLie::OtherCurrency) => {
            let code = f
                .confirm_currency
                .as_deref()
                .ok_or_else(|| invalid("confirm_currency", "is required for other_currency"))?;
            let to = bookbroker_protocols::Currency::parse(code)
                .map_err(|e| invalid("confirm_currency", &e.to_string()))?;
            let fx = fx
                .cloned()
                .ok_or_else(|| invalid("confirm_currency", "the [fx] table is not usable"))?;
            Ok(Some(LieModel::OtherCurrency { to, fx }))
        }
    }
}

/// Writes a file completely: to a temporary name first, then renamed, so a reader that
/// waits for the file never sees half of it.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    let err = |source| SimError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

async fn accept_loop(listener: TcpListener, serve: Serve, counter: Option<Arc<SellerState>>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Some(seller) = &counter {
            bump(&seller.stats.connections_accepted);
        }
        let _ = stream.set_nodelay(true);
        match &serve {
            // Payment connections may be reset on purpose (`reset_rate`).
            Serve::Http(app) if app.is_payment() => {
                let (stream, reset) = http::ResettableStream::new(stream);
                tokio::spawn(http::serve_connection_with_reset(
                    stream,
                    app.clone(),
                    Some(reset),
                ));
            }
            Serve::Http(app) => {
                tokio::spawn(http::serve_connection(stream, app.clone()));
            }
            Serve::Https(app, acceptor) => {
                let app = app.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => http::serve_connection(tls, app).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
            Serve::Line(seller) => {
                tokio::spawn(line::serve_connection(stream, seller.clone()));
            }
        }
    }
}
