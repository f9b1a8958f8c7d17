//! `sellersim --scenario FILE [--emit-config FILE] [--emit-isbns FILE] [--listen-host IP]`
//!
//! Serves every seller of a scenario and a payment provider, writes the engine config and
//! the ISBN list, prints `sellersim ready`, and serves until SIGINT or SIGTERM.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use bookbroker_sellersim::{write_file, RunningSim, Scenario};
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

// The same allocator as the engine: the simulator shares the benchmark machine with it,
// and glibc's malloc was a twentieth of its CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulated sellers (json, xml, line) and a payment provider for bookbroker.
#[derive(Debug, Parser)]
#[command(name = "sellersim", version)]
struct Args {
    /// The scenario file (TOML).
    #[arg(long)]
    scenario: PathBuf,
    /// Write an engine config pointing at the running sellers here (and the CA of https
    /// sellers next to it, as `<FILE>.ca.pem`).
    #[arg(long)]
    emit_config: Option<PathBuf>,
    /// Write every stocked ISBN-13 here, one a line.
    #[arg(long)]
    emit_isbns: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    listen_host: IpAddr,
}

fn main() {
    if let Err(e) = run() {
        // Every error message already carries its cause.
        eprintln!("sellersim: {e}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Registered before anything is served, so a signal right after `ready` is not lost.
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))?;
    let scenario = Scenario::load(&args.scenario)?;
    let sim = RunningSim::start(scenario, args.listen_host)?;
    if let Some(path) = &args.emit_config {
        let mut ca = path.as_os_str().to_owned();
        ca.push(".ca.pem");
        let text = sim.engine_config(&PathBuf::from(ca))?;
        write_file(path, text.as_bytes())?;
    }
    if let Some(path) = &args.emit_isbns {
        let mut text = sim.isbns().join("\n");
        text.push('\n');
        write_file(path, text.as_bytes())?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "sellersim ready")
        .and_then(|()| stdout.flush())
        .map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}"))?;
    drop(stdout);
    let signal = signals.forever().next();
    tracing::info!(?signal, "stopping");
    sim.stop();
    Ok(())
}
