//! `loadgen`: open-model customer load for bookbroker.
//!
//! Sends requests at a constant rate (request `i` is due at `start + i / rate`, as in
//! wrk2), over `--connections` keep-alive HTTP/1.1 connections with at most one request
//! in flight each, and measures every latency from the request's *intended* start, so a
//! server that stalls shows up as latency instead of as a lower request rate
//! (coordinated omission corrected). Prints a progress line each second on stderr
//! and a report on stdout; `--json FILE` writes the report as JSON (field names are
//! documented on `stats::Report`). The report splits each latency into the dispatch
//! delay (intended start until a connection took the request: loadgen's own share)
//! and the service time after it.
//!
//! `--burst 1ms` sends the same number of requests in bursts once a millisecond
//! instead of evenly, which is the traffic oha's `-q` produces; it exists to compare
//! the two tools on identical load.
//!
//! ```text
//! loadgen --target http://127.0.0.1:8080 --rate 10000 --duration 30s \
//!         --scenario quotes --isbns isbns.txt --api-key KEY --connections 64
//! ```
//!
//! Exit status: 0 when the run happened (even with errors), 2 for bad arguments,
//! 1 when the target cannot be reached at all or the run could not be set up.

// A crate root looks for its modules beside itself (in src/bin/), where they would
// be taken for binaries of their own; they live in src/bin/loadgen/ instead.
#[path = "loadgen/clock.rs"]
mod clock;
#[path = "loadgen/duration.rs"]
mod duration;
#[path = "loadgen/schedule.rs"]
mod schedule;
#[path = "loadgen/stats.rs"]
mod stats;
#[path = "loadgen/worker.rs"]
mod worker;
#[path = "loadgen/workload.rs"]
mod workload;
#[path = "loadgen/zipf.rs"]
mod zipf;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;

use crate::clock::now_ns;
use crate::duration::parse_duration;
use crate::schedule::Schedule;
use crate::stats::{new_histogram, Report, RunInfo, Stats};
use crate::worker::{run_worker, Progress, Ready, WorkerConfig};
use crate::workload::{Plan, PlanConfig, Scenario};

// The same allocator as the engine it drives, on the same shared machine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Open-model (constant-rate) load generator for bookbroker's customer API",
    long_about = "Sends requests at a constant rate and measures each latency from the \
                  request's intended start (coordinated omission corrected). Durations \
                  take a unit: 500ms, 30s, 2m."
)]
struct Args {
    /// Base URL of the engine, e.g. http://127.0.0.1:8080 (http only).
    #[arg(long)]
    target: String,
    /// Requests per second, over all connections and threads.
    #[arg(long)]
    rate: f64,
    /// Length of the measured window (after the warm-up).
    #[arg(long, value_parser = parse_duration)]
    duration: Duration,
    /// Which calls to make.
    #[arg(long, value_enum, default_value_t = Scenario::Quotes)]
    scenario: Scenario,
    /// ISBNs to ask for, one a line, most popular first. Without it, synthetic ISBNs.
    #[arg(long)]
    isbns: Option<PathBuf>,
    /// How many synthetic ISBNs to use when --isbns is not given.
    #[arg(long, default_value_t = 10_000)]
    books: usize,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    api_key: Option<String>,
    /// Keep-alive connections, over all threads.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Warm-up before the measured window: sent, not recorded.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    warmup: Duration,
    /// Zipf exponent of book popularity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Share of purchases that re-send an earlier idempotency key with the same body.
    #[arg(long, default_value_t = 0.05)]
    duplicate_share: f64,
    /// Share of purchases in the `mix` scenario.
    #[arg(long, default_value_t = 0.10)]
    purchase_share: f64,
    /// Worker threads, each a single-threaded runtime with its share of rate and
    /// connections.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Per-request timeout (from when the request is written); also bounds the drain
    /// at the end.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    timeout: Duration,
    /// Purchase limit in minor units (cents).
    #[arg(long, default_value_t = 5000)]
    max_price: u64,
    /// Currency of quotes and purchases (ISO 4217).
    #[arg(long, default_value = "USD")]
    currency: String,
    /// Condition asked for in purchases: any, new or used.
    #[arg(long, default_value = "any")]
    condition: String,
    /// Payment token sent with purchases.
    #[arg(long, default_value = "tok_ok_4242")]
    payment_token: String,
    /// Shipping token sent with purchases.
    #[arg(long, default_value = "ship_home")]
    shipping_token: String,
    /// Seed of the book and duplicate choices (idempotency keys differ every run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Shortest period of the release timer; requests due within one period are
    /// released together (ignored with --burst, whose period is the timer's).
    #[arg(long, value_parser = parse_duration, default_value = "50us")]
    tick: Duration,
    /// Send in bursts instead of evenly spaced: every BURST, all requests of that
    /// period at once, each measured from the burst's time. 0 (the default) = evenly
    /// spaced. `--burst 1ms` reproduces the traffic of oha's `-q` (whose timer wakes
    /// once a millisecond), to compare the two tools on the same load.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    burst: Duration,
    /// A request written more than this after its intended time counts as fell-behind.
    #[arg(long, value_parser = parse_duration, default_value = "1ms")]
    behind_threshold: Duration,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn check_args(a: &Args) -> Result<(), String> {
    if !a.rate.is_finite() || a.rate <= 0.0 || a.rate > 10_000_000.0 {
        return Err(format!(
            "--rate must be > 0 and at most 10000000, not {}",
            a.rate
        ));
    }
    if a.duration.is_zero() {
        return Err("--duration must be longer than 0".into());
    }
    if a.connections == 0 || a.connections > 100_000 {
        return Err("--connections must be between 1 and 100000".into());
    }
    if a.threads == 0 || a.threads > 1024 {
        return Err("--threads must be between 1 and 1024".into());
    }
    if a.threads > a.connections {
        return Err(format!(
            "--threads ({}) must not exceed --connections ({})",
            a.threads, a.connections
        ));
    }
    if a.timeout.is_zero() {
        return Err("--timeout must be longer than 0".into());
    }
    if a.tick.is_zero() {
        return Err("--tick must be longer than 0".into());
    }
    if a.burst > a.duration {
        return Err("--burst must not be longer than --duration".into());
    }
    for (name, v) in [
        ("--duplicate-share", a.duplicate_share),
        ("--purchase-share", a.purchase_share),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{name} must be between 0 and 1, not {v}"));
        }
    }
    if !a.zipf_s.is_finite() || a.zipf_s < 0.0 {
        return Err(format!("--zipf-s must be >= 0, not {}", a.zipf_s));
    }
    if a.currency.len() != 3 || !a.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "--currency must be three upper-case letters (ISO 4217), not `{}`",
            a.currency
        ));
    }
    if !matches!(a.condition.as_str(), "any" | "new" | "used") {
        return Err(format!(
            "--condition must be any, new or used, not `{}`",
            a.condition
        ));
    }
    if a.isbns.is_none() && a.books == 0 {
        return Err("--books must be at least 1".into());
    }
    Ok(())
}

/// A run id that makes this run's idempotency keys differ from every other run's.
fn run_id() -> String {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{:x}{:x}", wall, std::process::id())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(msg) = check_args(&args) {
        eprintln!("loadgen: {msg}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// What the main thread learns from the progress slots.
struct Totals {
    sent: u64,
    responses: u64,
    errors: u64,
    behind: u64,
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let target = match workload::parse_target(&args.target) {
        Ok(t) => t,
        Err(msg) => {
            eprintln!("loadgen: {msg}");
            return Ok(ExitCode::from(2));
        }
    };
    let isbns = match &args.isbns {
        Some(path) => match workload::read_isbns(path) {
            Ok(v) => v,
            Err(msg) => {
                eprintln!("loadgen: {msg}");
                return Ok(ExitCode::from(2));
            }
        },
        None => workload::synthetic_isbns(args.books),
    };
    let plan = Arc::new(
        Plan::new(PlanConfig {
            scenario: args.scenario,
            isbns,
            zipf_s: args.zipf_s,
            purchase_share: args.purchase_share,
            duplicate_share: args.duplicate_share,
            target: &target,
            api_key: args.api_key.as_deref(),
            max_price: args.max_price,
            currency: &args.currency,
            condition: &args.condition,
            payment_token: &args.payment_token,
            shipping_token: &args.shipping_token,
            run_id: run_id(),
        })
        .map_err(|e| anyhow!(e))?,
    );

    let warmup_ns = args.warmup.as_nanos() as u64;
    let duration_ns = args.duration.as_nanos() as u64;
    let lanes = args.threads;
    let mut slots = Vec::with_capacity(lanes);
    let mut starts = Vec::with_capacity(lanes);
    let mut handles = Vec::with_capacity(lanes);
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    for lane in 0..lanes {
        let progress = Arc::new(Mutex::new(Progress::new()?));
        slots.push(progress.clone());
        let (start_tx, start_rx) = mpsc::channel();
        starts.push(start_tx);
        let cfg = WorkerConfig {
            schedule: Schedule::new(args.rate, lane, lanes, warmup_ns, duration_ns)
                .with_burst(args.burst.as_nanos() as u64),
            window_ns: warmup_ns.saturating_add(duration_ns),
            connections: args.connections / lanes + usize::from(lane < args.connections % lanes),
            addr: target.addr,
            timeout: args.timeout,
            min_tick_ns: args.tick.as_nanos() as u64,
            behind_ns: args.behind_threshold.as_nanos() as u64,
            plan: plan.clone(),
            seed: args.seed,
            lane,
            progress,
        };
        let ready = ready_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{lane}"))
            .spawn(move || run_worker(cfg, ready, start_rx))
            .context("cannot start a worker thread")?;
        handles.push(handle);
    }
    drop(ready_tx);

    // Every worker connects first; the run starts only if the target answers at all.
    let mut connected = 0;
    let mut first_error = None;
    for _ in 0..lanes {
        match ready_rx.recv() {
            Ok(r) => {
                connected += r.connected;
                if first_error.is_none() {
                    first_error = r.error;
                }
            }
            Err(_) => break,
        }
    }
    if connected == 0 {
        for s in &starts {
            let _ = s.send(None);
        }
        for h in handles {
            let _ = h.join();
        }
        bail!(
            "cannot reach {}: {}",
            args.target,
            first_error.unwrap_or_else(|| "no connection could be made".into())
        );
    }
    if let Some(e) = &first_error {
        eprintln!("loadgen: warning: only {connected} of {} connections opened ({e}); the rest retry when used", args.connections);
    }
    // A little ahead, so every thread is waiting when the first request is due.
    let start_ns = now_ns() + 20_000_000;
    for s in &starts {
        let _ = s.send(Some(start_ns));
    }

    progress_loop(&args, &slots, &handles, start_ns, warmup_ns)?;

    let mut merged = Stats::new()?;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => merged.merge(&s),
            Ok(Err(e)) => return Err(e.context("a worker failed")),
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    let report = Report::new(
        RunInfo {
            target: args.target.clone(),
            scenario: args.scenario.name().to_string(),
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            connections: args.connections,
            threads: args.threads,
            behind_threshold_ms: args.behind_threshold.as_secs_f64() * 1000.0,
            burst_ms: args.burst.as_secs_f64() * 1000.0,
        },
        &merged,
    );
    print!("{}", report.to_text());
    if let Some(path) = &args.json {
        let mut text = serde_json::to_string_pretty(&report)?;
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.responses == 0 && report.errors.connect > 0 {
        eprintln!("loadgen: the target could not be reached during the run");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a progress line about once a second until every worker is done.
fn progress_loop(
    args: &Args,
    slots: &[Arc<Mutex<Progress>>],
    handles: &[std::thread::JoinHandle<anyhow::Result<Stats>>],
    start_ns: u64,
    warmup_ns: u64,
) -> anyhow::Result<()> {
    let mut so_far = new_histogram()?;
    let mut measuring = warmup_ns == 0;
    let mut last = Totals {
        sent: 0,
        responses: 0,
        errors: 0,
        behind: 0,
    };
    let mut last_ns = start_ns;
    let mut next_ns = start_ns + 1_000_000_000;
    loop {
        // Short naps, so the report follows the last worker without delay.
        while now_ns() < next_ns && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let finished = handles.iter().all(|h| h.is_finished());
        let now = now_ns();
        let elapsed = now.saturating_sub(start_ns);
        if !measuring && elapsed >= warmup_ns {
            // Warm-up latencies do not belong in the "so far" figure.
            measuring = true;
            so_far.reset();
            for s in slots {
                if let Ok(mut p) = s.lock() {
                    p.hist.reset();
                }
            }
        }
        let mut t = Totals {
            sent: 0,
            responses: 0,
            errors: 0,
            behind: 0,
        };
        for s in slots {
            if let Ok(mut p) = s.lock() {
                t.sent += p.sent;
                t.responses += p.responses;
                t.errors += p.errors;
                t.behind += p.behind;
                let _ = so_far.add(&p.hist);
                p.hist.reset();
            }
        }
        if !args.quiet && !finished {
            let dt = (now.saturating_sub(last_ns)) as f64 / 1e9;
            let rate = if dt > 0.0 {
                (t.sent - last.sent.min(t.sent)) as f64 / dt
            } else {
                0.0
            };
            let p99 = if so_far.is_empty() {
                0.0
            } else {
                so_far.value_at_quantile(0.99) as f64 / 1000.0
            };
            eprintln!(
                "[{:>6.1}s]{} sent {} ({:.0}/s), responses {}, p99 {:.3} ms, errors {}, behind {}",
                elapsed as f64 / 1e9,
                if measuring { "" } else { " warm-up" },
                t.sent,
                rate,
                t.responses,
                p99,
                t.errors,
                t.behind
            );
        }
        if finished {
            return Ok(());
        }
        last = t;
        last_ns = now;
        next_ns += 1_000_000_000;
    }
}
