//! The `bookbroker` command: `serve`, `demo`, `check-config`, `haproxy-config`.
//!
//! Everything but `demo` is the engine library's public API; `demo` also needs the
//! simulator and exists only when the `demo` feature (on by default) is.

#[cfg(feature = "demo")]
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bookbroker_engine::cluster::{haproxy, Membership};
use bookbroker_engine::config::Config;
use bookbroker_engine::rt::RuntimeChoice;
use bookbroker_engine::runtime::{apply_overrides, Engine, Overrides};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Buys the cheapest available copy of a book from many sellers at once.
#[derive(Parser)]
#[command(name = "bookbroker", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the customer API with the sellers of a config file.
    Serve {
        /// The config file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Number of cores (executors), overriding `server.cores`; 0 = every core.
        #[arg(long)]
        cores: Option<usize>,
        /// Data directory, overriding `server.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Executor backend, overriding `server.runtime`: auto, io_uring, epoll or glommio.
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<RuntimeChoice>,
    },
    /// Run the embedded demo: simulated sellers and payment provider in-process.
    #[cfg_attr(
        not(feature = "demo"),
        command(about = "Not in this build: it was built without the cargo feature `demo`")
    )]
    Demo {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Executor backend: auto, io_uring, epoll or glommio.
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<RuntimeChoice>,
    },
    /// Validate a config file, print every problem, exit non-zero if any.
    CheckConfig {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Print a complete HAProxy 2.6 configuration for the cluster of a config file:
    /// quotes balanced over every node, each purchase sent to its partition's owner only.
    HaproxyConfig {
        /// The config file (TOML) with the `[cluster]` section every node shares.
        #[arg(long)]
        config: PathBuf,
        /// Where the balancer listens (`host:port`).
        #[arg(long)]
        listen: String,
        /// The UNIX socket of HAProxy's runtime API (for `set server … addr`).
        #[arg(long, default_value = haproxy::DEFAULT_ADMIN_SOCKET)]
        admin_socket: String,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            config,
            listen,
            cores,
            data_dir,
            runtime,
        } => serve(
            config,
            Overrides {
                listen,
                cores,
                data_dir,
                runtime,
            },
        ),
        Command::Demo { listen, runtime } => demo(listen, runtime),
        Command::CheckConfig { file } => return check_config(&file),
        Command::HaproxyConfig {
            config,
            listen,
            admin_socket,
        } => haproxy_config(
            &config,
            &haproxy::Options {
                listen,
                admin_socket,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookbroker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_runtime(name: &str) -> Result<RuntimeChoice, String> {
    RuntimeChoice::parse(name).ok_or_else(|| {
        format!(
            "{name:?} is not a runtime; choose one of {}",
            RuntimeChoice::NAMES.join(", ")
        )
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(path: PathBuf, overrides: Overrides) -> anyhow::Result<()> {
    let config = Config::load_valid(&path).with_context(|| format!("config {}", path.display()))?;
    let config = apply_overrides(config, &overrides);
    let problems = config.problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!("invalid command-line override:\n  {}", list.join("\n  "));
    }
    run(config)
}

fn run(config: Config) -> anyhow::Result<()> {
    let engine = Engine::start(config)?;
    tracing::info!(
        listen = %engine.listen(),
        cores = engine.cores(),
        runtime = engine.backend().name(),
        "bookbroker serving"
    );
    install_signal_handler(engine.stopper())?;
    engine.wait()?;
    tracing::info!("bookbroker stopped");
    Ok(())
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
fn install_signal_handler(stop: impl Fn() + Send + Sync + 'static) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    std::thread::Builder::new()
        .name("bookbroker-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(signal = sig, "shutting down: finishing in-flight requests");
                    stop();
                } else {
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

#[cfg(feature = "demo")]
fn demo(listen: String, runtime: Option<RuntimeChoice>) -> anyhow::Result<()> {
    let demo = demo::Demo::start(&listen)?;
    let mut config = demo.config.clone();
    if let Some(r) = runtime {
        config.server.runtime = r;
    }
    let engine = Engine::start(config)?;
    println!("{}", demo.instructions(&listen));
    install_signal_handler(engine.stopper())?;
    let result = engine.wait();
    demo.sim.stop();
    let _ = std::fs::remove_dir_all(&demo.dir);
    result.map_err(Into::into)
}

/// The subcommand stays so that `bookbroker demo` on such a build says why it cannot run
/// instead of clap calling it an unknown command.
#[cfg(not(feature = "demo"))]
fn demo(_listen: String, _runtime: Option<RuntimeChoice>) -> anyhow::Result<()> {
    anyhow::bail!(
        "this bookbroker was built without the demo (cargo feature `demo`); \
         build it with default features, or run `sellersim` and `bookbroker serve`"
    )
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            ExitCode::FAILURE
        }
        Ok(config) => {
            let problems = config.problems();
            if problems.is_empty() {
                let cluster = Membership::of(&config);
                let place = if cluster.is_declared() {
                    format!(
                        ", node {} of a cluster of {}",
                        cluster.node(),
                        cluster.partitions()
                    )
                } else {
                    String::new()
                };
                println!(
                    "{}: ok ({} sellers, {} customers{place})",
                    path.display(),
                    config.sellers.len(),
                    config.customers.len()
                );
                ExitCode::SUCCESS
            } else {
                for p in &problems {
                    eprintln!("{}: {p}", path.display());
                }
                eprintln!("{}: {} problem(s)", path.display(), problems.len());
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints the HAProxy configuration for the cluster of the config at `path`.
fn haproxy_config(path: &std::path::Path, opts: &haproxy::Options) -> anyhow::Result<()> {
    let config = Config::load_valid(path).with_context(|| format!("config {}", path.display()))?;
    let text = haproxy::render(&config, opts)?;
    print!("{text}");
    Ok(())
}
