//! One loadgen run and what it measured: CPU, interrupts, upstream requests, metrics.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use crate::procs::{Engine, Sim};
use crate::report::f;
use crate::syscalls::{self, Syscalls};
use crate::{Ctx, API_KEY};

/// CPU seconds (user + system) of a process so far.
pub(crate) fn cpu_seconds(ctx: &Ctx, pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).ok_or_else(|| anyhow!("no utime"))?.parse()?;
    let stime: f64 = fields.get(12).ok_or_else(|| anyhow!("no stime"))?.parse()?;
    Ok((utime + stime) / ctx.clk_tck)
}

pub(crate) struct Load<'a> {
    pub(crate) scenario: &'a str,
    pub(crate) rate: u64,
    pub(crate) secs: u64,
    pub(crate) warmup: u64,
    pub(crate) connections: usize,
    pub(crate) zipf: f64,
    pub(crate) extra: &'a [&'a str],
}

/// What one loadgen run measured.
pub(crate) struct Measured {
    /// loadgen's JSON report.
    pub(crate) report: Value,
    /// CPU seconds each watched process used in the measured window.
    pub(crate) cpu: Vec<f64>,
    /// Quote requests the sellers answered in the measured window.
    pub(crate) upstream: u64,
    /// Rescheduling interrupts each CPU took in the measured window.
    pub(crate) resched: Vec<u64>,
    /// System calls and ring operations of the first watched process in the window, when
    /// perf could count them.
    pub(crate) syscalls: Option<Syscalls>,
}

impl Measured {
    /// Answers in the measured window (at least 1, to divide by).
    pub(crate) fn answers(&self) -> f64 {
        f(&self.report, &["responses"]).max(1.0)
    }

    /// CPU µs of the first watched process per answer.
    pub(crate) fn cpu_us_per_answer(&self) -> f64 {
        self.cpu.first().copied().unwrap_or(f64::NAN) * 1e6 / self.answers()
    }
}

/// Runs loadgen against the engine; CPU and upstream counts are taken from the end of the
/// warm-up to the end of the run (approximately: the warm-up is timed from loadgen's
/// start).
pub(crate) fn run_load(
    ctx: &Ctx,
    name: &str,
    sim: &Sim,
    engine: &Engine,
    load: &Load<'_>,
    cpus: &str,
    watch: &[u32],
) -> Result<Measured> {
    let target = format!("http://{}", engine.addr);
    run_loadgen(
        ctx,
        name,
        &target,
        Some(&sim.isbns),
        load,
        cpus,
        watch,
        || upstream_quotes(sim),
    )
}

/// Runs loadgen against `target`, watching the CPU time of `watch` and the rescheduling
/// interrupts of every CPU; `upstream` counts something at the far side (0 if nothing).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_loadgen(
    ctx: &Ctx,
    name: &str,
    target: &str,
    isbns: Option<&Path>,
    load: &Load<'_>,
    cpus: &str,
    watch: &[u32],
    upstream: impl Fn() -> Result<u64>,
) -> Result<Measured> {
    let json = ctx.out.join(format!("{name}.json"));
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpus])
        .arg(ctx.bin.join("loadgen"))
        .args(["--target", target])
        .args(["--rate", &load.rate.to_string()])
        .args(["--duration", &format!("{}s", load.secs)])
        .args(["--warmup", &format!("{}s", load.warmup)])
        .args(["--scenario", load.scenario])
        .args(["--api-key", API_KEY])
        .args(["--connections", &load.connections.to_string()])
        .args(["--zipf-s", &load.zipf.to_string()])
        .arg("--quiet")
        .arg("--json")
        .arg(&json)
        .args(load.extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(isbns) = isbns {
        cmd.arg("--isbns").arg(isbns);
    }
    let mut child = cmd.spawn().context("cannot start loadgen")?;
    std::thread::sleep(Duration::from_secs(load.warmup));
    let up0 = upstream()?;
    let res0 = resched_interrupts();
    let before: Vec<f64> = watch
        .iter()
        .map(|p| cpu_seconds(ctx, *p))
        .collect::<Result<_>>()?;
    let counting = watch
        .first()
        .and_then(|pid| syscalls::start(*pid, &ctx.out, name));
    let status = child.wait()?;
    let syscalls = counting.and_then(syscalls::Counting::stop);
    let up1 = upstream()?;
    let res1 = resched_interrupts();
    let after: Vec<f64> = watch
        .iter()
        .map(|p| cpu_seconds(ctx, *p))
        .collect::<Result<_>>()?;
    if !status.success() {
        bail!("loadgen failed ({status}) in {name}");
    }
    let report: Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    Ok(Measured {
        report,
        cpu: after.iter().zip(&before).map(|(a, b)| a - b).collect(),
        upstream: up1.saturating_sub(up0),
        resched: res1
            .iter()
            .zip(res0.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect(),
        syscalls,
    })
}

/// Rescheduling interrupts (IPIs, the `RES` row of `/proc/interrupts`) each CPU has taken
/// so far; empty if the file cannot be read.
pub(crate) fn resched_interrupts() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    text.lines()
        .find(|l| l.trim_start().starts_with("RES:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map_while(|n| n.parse::<u64>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Quote requests the sellers have answered so far, summed (sellersim's counters).
pub(crate) fn upstream_quotes(sim: &Sim) -> Result<u64> {
    let url = format!("{}/admin/stats", sim.payment);
    let body = http_get(&url)?;
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["sellers"]
        .as_array()
        .ok_or_else(|| anyhow!("no sellers in stats"))?
        .iter()
        .map(|s| s["requests"]["quote"].as_u64().unwrap_or(0))
        .sum())
}

/// The sum of a metric over its label sets, from the engine's `/metrics`.
pub(crate) fn metric_sum(engine: &Engine, name: &str) -> Result<f64> {
    let text = http_get(&format!("http://{}/metrics", engine.addr))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub(crate) fn http_get(url: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not http: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("bad answer"))?;
    Ok(body.to_string())
}
