//! Starting and stopping the engine: one thread per core, each running an executor
//! (from the seam in [`crate::rt`]) pinned to its CPU, plus a signal thread that turns
//! SIGINT/SIGTERM into a graceful shutdown.
//!
//! Start-up failures are reported with what to change: a backend the host cannot run,
//! the address in use, a seller endpoint that cannot be set up.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::auth::ApiKeys;
use crate::cache::QuoteCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::CoreTimer;
use crate::purchase;
use crate::purchase::durable::GroupCommit;
use crate::purchase::lane::{LaneReceiver, Lanes};
use crate::purchase::secrets::TokenCipher;
use crate::purchase::state::{CustomerCounts, Purchases, ShardOwner};
use crate::rt::{self, Backend};
use crate::sellers::SellerClient;
use crate::server;
use crate::signal::LocalSignal;
use crate::state::{Core, Shared};
use bookbroker_storage::DataDir;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Most (seller, query) keys one core's quote cache holds.
pub const CACHE_MAX_ENTRIES: usize = 200_000;

/// Why the engine could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Something about the host is not as the engine needs it.
    #[error("{0}")]
    Environment(String),
    /// The config cannot be served (a seller endpoint, the FX table).
    #[error("{0}")]
    Config(String),
    /// A core could not start.
    #[error("cannot start core {core}: {why}")]
    Startup {
        /// Which core.
        core: usize,
        /// What it reported.
        why: CoreError,
    },
    /// An executor thread died.
    #[error("core {core} stopped unexpectedly: {why}")]
    CoreFailed {
        /// Which core.
        core: usize,
        /// What it reported.
        why: CoreError,
    },
}

/// Why one core could not start, or stopped. Every variant but `Panicked` is about the
/// host or the config (fix it and start again); `Panicked` is a bug in the engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CoreError {
    /// A seller's client cannot be built from its config (an endpoint, a CA file).
    #[error("seller {seller:?}: {why}")]
    Seller {
        /// The seller's name.
        seller: String,
        /// What is wrong.
        why: String,
    },
    /// The API keys or the FX table of the config cannot be used.
    #[error("{0}")]
    Config(String),
    /// A shard of the data directory cannot be opened.
    #[error("cannot open shard {shard}: {why}")]
    Shard {
        /// The shard.
        shard: u32,
        /// What storage said.
        why: String,
    },
    /// The payment provider's client cannot be built.
    #[error("payment.url: {0}")]
    Payment(String),
    /// The listen address cannot be bound on this core.
    #[error("cannot listen on {addr}: {why}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        why: String,
    },
    /// The executor backend cannot run on this core.
    #[error("{0}")]
    Executor(String),
    /// The core's thread panicked.
    #[error("the core's thread panicked")]
    Panicked,
}

/// Options that override the config on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--cores`.
    pub cores: Option<usize>,
    /// `--data-dir`.
    pub data_dir: Option<std::path::PathBuf>,
    /// `--runtime`.
    pub runtime: Option<rt::RuntimeChoice>,
}

/// A started engine: wait for it with [`Engine::wait`], stop it with [`Engine::stop`].
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<Result<(), CoreError>>>,
}

/// Applies the overrides to `config`.
pub fn apply_overrides(mut config: Config, o: &Overrides) -> Config {
    if let Some(l) = &o.listen {
        config.server.listen = l.clone();
    }
    if let Some(c) = o.cores {
        config.server.cores = c;
    }
    if let Some(d) = &o.data_dir {
        config.server.data_dir = d.clone();
    }
    if let Some(r) = o.runtime {
        config.server.runtime = r;
    }
    config
}

/// From here on a panic anywhere in the process aborts it, after the panic message and
/// one log line.
///
/// A panic is a broken invariant. The core it happened on owns shards, running sagas,
/// pools and connections, and after unwinding their state is unknown (a `RefCell` left
/// borrowed, a saga between its write and its call). Restarting that core in-process
/// would mean rebuilding all of it while the other cores keep sending to its lane;
/// leaving it dead (what unwinding alone did) made its shards answer 503 until someone
/// restarted the process. Aborting joins the path that is tested end to end: the
/// supervisor restarts the engine on the same address at once and recovery resumes
/// every unfinished purchase from the shards, exactly as after `kill -9`.
///
/// Start-up failures stay errors (a core that cannot start is reported, not aborted):
/// the hook aborts only on a core thread that already serves ([`serving_here`]), or
/// anywhere once every core serves. A core starts serving (and answering `/readyz`)
/// before the others are ready, so waiting for all of them alone would leave a window
/// in which a panic on a serving core was only unwound.
fn abort_on_panic() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if !SERVING_HERE.with(Cell::get) && !ALL_SERVING.load(Ordering::SeqCst) {
                return;
            }
            let thread = std::thread::current();
            tracing::error!(
                thread = thread.name().unwrap_or("unnamed"),
                "a panic while serving: aborting so that the supervisor restarts the \
                 engine and recovery resumes its purchases"
            );
            std::process::abort();
        }));
    });
}

/// Set once every core of the engine serves.
static ALL_SERVING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on a core's thread when it starts serving.
    static SERVING_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as a serving core: from now on a panic on it aborts the process.
fn serving_here() {
    SERVING_HERE.with(|s| s.set(true));
}

impl Engine {
    /// Starts one executor per core and returns once every core listens.
    pub fn start(config: Config) -> Result<Engine, RuntimeError> {
        let listen: SocketAddr = config.server.listen.parse().map_err(|e| {
            RuntimeError::Config(format!("server.listen {:?}: {e}", config.server.listen))
        })?;
        let online = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cores = if config.server.cores == 0 {
            online
        } else {
            config.server.cores
        };
        if cores > online {
            // Two executors pinned to one CPU take turns on it: each serves at half
            // speed and their latency doubles, which nothing else would show.
            tracing::warn!(
                cores,
                cpus = online,
                "server.cores asks for {cores} executors but this process may run on \
                 {online} CPUs: some executors share a CPU (executor i runs on CPU \
                 i mod {online}); set server.cores = 0 for one per CPU"
            );
        }
        preflight(listen)?;
        let selection = rt::select(config.server.runtime, config.server.coalesce())
            .map_err(|e| RuntimeError::Environment(e.to_string()))?;
        tracing::info!(
            runtime = selection.backend.name(),
            "executor backend: {}",
            selection.why
        );
        let names: Vec<String> = config.sellers.iter().map(|s| s.name.clone()).collect();
        let shards_if_new = if config.storage.shards == 0 {
            cores as u32
        } else {
            config.storage.shards
        };
        let data = DataDir::open_or_create(&config.server.data_dir, shards_if_new)
            .map_err(|e| RuntimeError::Environment(format!("{e}")))?;
        // The directory holds one partition's purchases for good: refuse another.
        crate::cluster::claim_data_dir(data.path(), &crate::cluster::Membership::of(&config))
            .map_err(|e| RuntimeError::Config(e.to_string()))?;
        let cipher = TokenCipher::load(&config.purchases.token_key, &config.server.data_dir)
            .map_err(|e| RuntimeError::Config(format!("purchases.token_key: {e}")))?;
        let (lanes, receivers) = Lanes::new(cores);
        tracing::info!(data_dir = %data.path().display(), shards = data.shards(), "data directory open");
        let rate_limits = crate::ratelimit::RateLimits::from_config(&config.customers);
        let failpoint_panic =
            std::env::var("BOOKBROKER_FAILPOINT").is_ok_and(|v| v == "panic-on-quote");
        if failpoint_panic {
            tracing::warn!("BOOKBROKER_FAILPOINT=panic-on-quote: a quote can panic its core");
        }
        let shared = Arc::new(Shared {
            failpoint_panic,
            rate_limits,
            config,
            listen,
            cores,
            backend: selection.backend,
            metrics: Metrics::new(cores, &names),
            shutdown: AtomicBool::new(false),
            lanes,
            data,
            cipher: Arc::new(cipher),
            running_per_customer: CustomerCounts::default(),
        });
        abort_on_panic();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), CoreError>)>();
        let mut threads = Vec::with_capacity(cores);
        for (core, inbox) in receivers.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let ready = ready_tx.clone();
            let cpu = core % online;
            let handle = std::thread::Builder::new()
                .name(format!("bookbroker-core-{core}"))
                .spawn(move || {
                    // A panic inside a core (a bug, or an executor that cannot cope with
                    // the host) must not leave start-up waiting for a ready signal.
                    let panicked = ready.clone();
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_core(core, cpu, shared, inbox, ready)
                    }))
                    .unwrap_or_else(|_| {
                        let _ = panicked.send((core, Err(CoreError::Panicked)));
                        Err(CoreError::Panicked)
                    })
                })
                .map_err(|e| RuntimeError::Environment(format!("cannot start a thread: {e}")))?;
            threads.push(handle);
        }
        drop(ready_tx);
        let engine = Engine { shared, threads };
        for _ in 0..cores {
            match ready_rx.recv_timeout(Duration::from_secs(30)) {
                Ok((_, Ok(()))) => {}
                Ok((core, Err(why))) => {
                    engine.stop();
                    let _ = engine.wait();
                    return Err(RuntimeError::Startup { core, why });
                }
                Err(_) => {
                    engine.stop();
                    return Err(RuntimeError::Environment(
                        "the executors did not start within 30 s".into(),
                    ));
                }
            }
        }
        ALL_SERVING.store(true, Ordering::SeqCst);
        Ok(engine)
    }

    /// The address every core listens on.
    pub fn listen(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Number of cores serving.
    pub fn cores(&self) -> usize {
        self.shared.cores
    }

    /// The executor backend the cores run.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// Asks every core to stop accepting and drain.
    pub fn stop(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
    }

    /// A handle that can stop the engine from another thread (e.g. a signal handler).
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.shutdown.store(true, Ordering::SeqCst)
    }

    /// Waits for every core to finish.
    pub fn wait(self) -> Result<(), RuntimeError> {
        let mut first_err = None;
        for (core, t) in self.threads.into_iter().enumerate() {
            let res = match t.join() {
                Ok(r) => r,
                Err(_) => Err(CoreError::Panicked),
            };
            if let Err(why) = res {
                first_err.get_or_insert(RuntimeError::CoreFailed { core, why });
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Checks what can be checked before any executor starts, so the common mistakes get a
/// clear message instead of an errno from deep inside an executor. (Whether the host
/// allows io_uring is the seam's question: [`rt::select`].)
fn preflight(listen: SocketAddr) -> Result<(), RuntimeError> {
    check_address_free(listen)
}

/// How long start-up waits for a listen address in use to be released before it reports
/// it in use.
///
/// When an engine exits, above all by `kill -9`, its listeners outlive the process for a
/// few tens of milliseconds: the kernel tears down each executor's io_uring (which holds
/// the sockets of its pending accepts and reads) after the process is reaped. A service
/// manager that restarts the engine at once would otherwise meet its predecessor's
/// listeners and give up.
pub const ADDRESS_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How often the address is tried again within [`ADDRESS_RELEASE_WAIT`].
const ADDRESS_RETRY_EVERY: Duration = Duration::from_millis(20);

/// Fails clearly when another socket listens on `listen`, after giving a stopped
/// process's listeners [`ADDRESS_RELEASE_WAIT`] to go away.
fn check_address_free(listen: SocketAddr) -> Result<(), RuntimeError> {
    let until = Instant::now() + ADDRESS_RELEASE_WAIT;
    let mut waiting_since: Option<Instant> = None;
    loop {
        // Bind with SO_REUSEADDR (std sets it) and *without* SO_REUSEPORT. The kernel
        // lets SO_REUSEPORT sockets of the same user bind next to each other even while
        // one listens: with it here, the check would pass beside a live engine (or any
        // such listener) and the executors, which need SO_REUSEPORT among themselves,
        // would then silently share the port with it. Without it, any listener on the
        // port is a conflict, whatever its options. SO_REUSEADDR is what makes the
        // connections a stopped or crashed engine left in TIME_WAIT no conflict: the
        // executors' listeners set it too, so every connection they accepted has it
        // (see `server::bind`).
        match std::net::TcpListener::bind(listen) {
            Ok(l) => {
                drop(l);
                if let Some(since) = waiting_since {
                    tracing::info!(%listen, waited = ?since.elapsed(), "the address was released");
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if Instant::now() >= until {
                    return Err(RuntimeError::Environment(format!(
                        "cannot listen on {listen}: the address is already in use; stop the \
                         other process or choose another address with --listen"
                    )));
                }
                if waiting_since.is_none() {
                    tracing::info!(
                        %listen,
                        "the address is in use; waiting up to {ADDRESS_RELEASE_WAIT:?} in case \
                         it is a stopped process's socket being released"
                    );
                    waiting_since = Some(Instant::now());
                }
                std::thread::sleep(ADDRESS_RETRY_EVERY);
            }
            Err(e) => {
                return Err(RuntimeError::Environment(format!(
                    "cannot listen on {listen}: {e}"
                )))
            }
        }
    }
}

/// How often each core looks for expired purchases.
pub const EXPIRY_SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Opens the shards `core` owns (shard `s` belongs to core `s % cores`) and its payment
/// client.
fn open_purchases(core: usize, shared: &Shared) -> Result<Purchases, CoreError> {
    let mut shards = HashMap::new();
    for index in 0..shared.data.shards() {
        if purchase::owner_core(index, shared.cores) != core {
            continue;
        }
        let shard = shared
            .data
            .open_shard(index)
            .map_err(|e| CoreError::Shard {
                shard: index,
                why: e.to_string(),
            })?;
        shards.insert(
            index,
            Rc::new(ShardOwner {
                commit: GroupCommit::new(shard, shared.config.storage.group_commit),
                running: RefCell::new(HashMap::new()),
            }),
        );
    }
    let payment = Purchases::payment_pool(&shared.config.payment.url)
        .map_err(|e| CoreError::Payment(e.to_string()))?;
    Ok(Purchases {
        shards,
        shard_count: shared.data.shards(),
        payment,
        cipher: Arc::clone(&shared.cipher),
        running: std::cell::Cell::new(0),
    })
}

fn run_core(
    core: usize,
    cpu: usize,
    shared: Arc<Shared>,
    inbox: LaneReceiver,
    ready: mpsc::Sender<(usize, Result<(), CoreError>)>,
) -> Result<(), CoreError> {
    let backend = shared.backend;
    let failed = ready.clone();
    let ran = rt::run_core(backend, core, cpu, move || async move {
        CoreTimer::start_driver();
        crate::net::start_orphanage();
        let setup = (|| -> Result<Rc<Core>, CoreError> {
            let sellers = shared
                .config
                .sellers
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    SellerClient::new(i, s, &shared.config.hedging, shared.cores).map_err(|e| {
                        CoreError::Seller {
                            seller: s.name.clone(),
                            why: e.to_string(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let keys = ApiKeys::from_config(&shared.config.customers)
                .map_err(|e| CoreError::Config(e.to_string()))?;
            let fx = shared
                .config
                .fx_table()
                .map_err(|e| CoreError::Config(e.to_string()))?;
            let purchases = open_purchases(core, &shared)?;
            Ok(Rc::new(Core {
                purchases,
                index: core,
                shared: Arc::clone(&shared),
                keys,
                fx,
                sellers,
                shutdown: LocalSignal::new(),
                open_connections: std::cell::Cell::new(0),
                in_flight: std::cell::Cell::new(0),
                cache: (shared.config.quotes.cache_ttl_ms > 0).then(|| {
                    std::cell::RefCell::new(QuoteCache::new(
                        Duration::from_millis(shared.config.quotes.cache_ttl_ms),
                        CACHE_MAX_ENTRIES,
                        usize::try_from(shared.config.quotes.cache_max_bytes).unwrap_or(usize::MAX),
                    ))
                }),
            }))
        })();
        let core_state = match setup {
            Ok(c) => c,
            Err(why) => {
                let _ = ready.send((core, Err(why.clone())));
                return Err(why);
            }
        };
        let listener = match server::bind(shared.listen) {
            Ok(l) => l,
            Err(e) => {
                let why = CoreError::Listen {
                    addr: shared.listen,
                    why: e.to_string(),
                };
                let _ = ready.send((core, Err(why.clone())));
                return Err(why);
            }
        };
        // Watch the process-wide flag and turn it into this core's local signal.
        let watcher = {
            let core_state = Rc::clone(&core_state);
            rt::spawn(async move {
                while !core_state.shared.shutdown.load(Ordering::Relaxed) {
                    rt::sleep(Duration::from_millis(25)).await;
                }
                core_state.shutdown.raise();
            })
        };
        // Recovery registers every unfinished purchase as running before the lane can
        // start a purchase: a purchase started first would be found unfinished and
        // resumed a second time.
        let resumed = purchase::recover(&core_state);
        if resumed > 0 {
            tracing::info!(core, resumed, "resuming unfinished purchases");
        }
        rt::spawn(purchase::serve_lane(Rc::clone(&core_state), inbox)).detach();
        rt::spawn(purchase::expire_loop(
            Rc::clone(&core_state),
            EXPIRY_SWEEP_EVERY,
        ))
        .detach();
        serving_here();
        let _ = ready.send((core, Ok(())));
        server::serve(Rc::clone(&core_state), listener).await;
        drop(watcher);
        Ok(())
    });
    match ran {
        Ok(result) => result,
        Err(e) => {
            let why = CoreError::Executor(e.to_string());
            let _ = failed.send((core, Err(why.clone())));
            Err(why)
        }
    }
}
