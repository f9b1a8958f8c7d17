//! `e2e`: the end-to-end benchmark. Starts `sellersim` with `bench/scenarios/fanout5.toml`,
//! the engine and `loadgen` (all release builds, on this machine), runs each experiment
//! of the end-to-end table, and writes the table into `BENCHMARKS.md` between the markers
//! `<!-- e2e:begin -->` and `<!-- e2e:end -->`. Raw loadgen reports go to
//! `target/e2e/`. Run it with `bench/e2e` (which builds first); `--quick` shortens every
//! run for a smoke test.
//!
//! Experiments:
//! 1. engine CPU per quote (cache off, fan-out 5): engine on one core pinned to CPU 0,
//!    sellersim and loadgen on CPU 1, at rates below saturation; CPU is user + system
//!    time from `/proc/PID/stat` over the measured window, divided by answers. Beside
//!    each rate, if nginx is installed, the same number of HTTP exchanges per second
//!    through an nginx proxy pinned the same way (the baseline the CPU target is set
//!    against, measured in the same conditions), and the same quotes through the
//!    idiomatic tokio + axum + reqwest aggregator in `bench/baseline-tokio`.
//! 2. the highest quote rate with p99 < 50 ms, cache off, engine on both cores (sharing
//!    them with sellersim and loadgen, as the target says).
//! 3. the same with the cache on and Zipf popularity, plus a 30 s run at 10,000/s.
//! 4. hedging on against off on the slow-tail variant (2% of seller answers 20x slower),
//!    alternated, three runs each: p99, p99.9 and upstream requests per quote (counted
//!    by sellersim).
//! 5. purchases per second, group commit against one fsync per write.

mod cpu;
mod measure;
mod procs;
mod rates;
mod report;
mod syscalls;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::cpu::cpu_per_quote;
use crate::rates::{hedging, ladder, purchases, sustained};
use crate::report::{chrono_like_now, write_into_benchmarks};

pub(crate) const API_KEY: &str = "bench-key";

pub(crate) struct Ctx {
    pub(crate) root: PathBuf,
    pub(crate) bin: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) quick: bool,
    pub(crate) clk_tck: f64,
    pub(crate) runs: usize,
    /// `--runtime=NAME`: the engine's executor backend; `None` leaves its default.
    pub(crate) runtime: Option<String>,
    /// `--set=section.key=value` (repeatable): engine settings every experiment gets,
    /// on top of its own.
    pub(crate) set: Vec<String>,
}

impl Ctx {
    pub(crate) fn secs(&self, full: u64) -> u64 {
        if self.quick {
            (full / 5).max(2)
        } else {
            full
        }
    }
}

fn main() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("no workspace root"))?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args
        .iter()
        .filter_map(|a| a.strip_prefix("--only="))
        .flat_map(|s| s.split(','))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let clk_tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ctx = Ctx {
        bin: root.join("target/release"),
        out: root.join("target/e2e"),
        root,
        quick,
        clk_tck: if clk_tck > 0.0 { clk_tck } else { 100.0 },
        runs: if quick { 1 } else { 3 },
        runtime: args
            .iter()
            .find_map(|a| a.strip_prefix("--runtime="))
            .map(str::to_string),
        set: args
            .iter()
            .filter_map(|a| a.strip_prefix("--set="))
            .map(str::to_string)
            .collect(),
    };
    std::fs::create_dir_all(&ctx.out)?;
    let scenario = std::fs::read_to_string(ctx.root.join("bench/scenarios/fanout5.toml"))?;
    let want = |name: &str| only.is_empty() || only.contains(&name);
    let started = Instant::now();
    let mut report = String::new();
    report.push_str(&format!(
        "Produced by `bench/e2e{}{}{}` on {} ({} CPUs){}.\n\n",
        if quick { " --quick" } else { "" },
        ctx.runtime
            .as_deref()
            .map_or(String::new(), |r| format!(" --runtime={r}")),
        ctx.set
            .iter()
            .map(|s| format!(" --set={s}"))
            .collect::<String>(),
        chrono_like_now(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if quick {
            ", quick mode (short runs: smoke test, not figures)"
        } else {
            ""
        }
    ));
    if want("cpu") {
        cpu_per_quote(&ctx, &scenario, &mut report)?;
    }
    if want("nocache") {
        ladder(
            &ctx,
            "nocache: quotes, cache off, fan-out 5, engine on 2 cores (shared with sellersim and loadgen)",
            &scenario,
            "quotes.cache_ttl_ms = 0",
            &[1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 10000],
            &mut report,
        )?;
    }
    if want("cache") {
        ladder(
            &ctx,
            "cache: quotes, cache on (1 s TTL), Zipf s = 1 over 10,000 books, engine on 2 cores",
            &scenario,
            "quotes.cache_ttl_ms = 1000",
            &[5000, 10000, 12500, 15000, 20000],
            &mut report,
        )?;
        sustained(
            &ctx,
            &scenario,
            "quotes.cache_ttl_ms = 1000",
            10000,
            &mut report,
        )?;
    }
    if want("hedging") {
        hedging(&ctx, &scenario, &mut report)?;
    }
    if want("purchases") {
        purchases(&ctx, &scenario, &mut report)?;
    }
    report.push_str(&format!(
        "Whole run: {:.0} s. Raw loadgen reports: `target/e2e/*.json`.\n",
        started.elapsed().as_secs_f64()
    ));
    // Only a whole run replaces the tables in BENCHMARKS.md; a subset (--only) would
    // drop the experiments it did not run.
    if only.is_empty() {
        write_into_benchmarks(&ctx.root.join("BENCHMARKS.md"), &report)?;
    } else {
        std::fs::write(ctx.out.join("report.md"), &report)?;
    }
    println!("{report}");
    Ok(())
}
