//! `e2e`: the end-to-end benchmark. Starts `sellersim` with `bench/scenarios/fanout5.toml`,
//! the engine and `loadgen` (all release builds, on this machine), runs each experiment
//! of issue 4's table, and writes the table into `BENCHMARKS.md` between the markers
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

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

const API_KEY: &str = "bench-key";

struct Ctx {
    root: PathBuf,
    bin: PathBuf,
    out: PathBuf,
    quick: bool,
    clk_tck: f64,
    runs: usize,
    /// `--runtime=NAME`: the engine's executor backend; `None` leaves its default.
    runtime: Option<String>,
}

impl Ctx {
    fn secs(&self, full: u64) -> u64 {
        if self.quick {
            (full / 5).max(2)
        } else {
            full
        }
    }
}

/// A child process that is killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Sim {
    _proc: Proc,
    config: PathBuf,
    isbns: PathBuf,
    payment: String,
    _dir: tempfile::TempDir,
}

fn start_sim(ctx: &Ctx, scenario_text: &str, cpus: &str) -> Result<Sim> {
    let dir = tempfile::tempdir()?;
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, scenario_text)?;
    let config = dir.path().join("engine.toml");
    let isbns = dir.path().join("isbns.txt");
    let mut child = Command::new("taskset")
        .args(["-c", cpus])
        .arg(ctx.bin.join("sellersim"))
        .arg("--scenario")
        .arg(&scenario)
        .arg("--emit-config")
        .arg(&config)
        .arg("--emit-isbns")
        .arg(&isbns)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start sellersim")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let proc_ = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "sellersim ready" {
        bail!("sellersim did not start: {line:?}");
    }
    let text = std::fs::read_to_string(&config)?;
    let payment = text
        .lines()
        .skip_while(|l| l.trim() != "[payment]")
        .find_map(|l| l.trim().strip_prefix("url = "))
        .map(|u| u.trim_matches('"').to_string())
        .ok_or_else(|| anyhow!("no payment url in the emitted config"))?;
    Ok(Sim {
        _proc: proc_,
        config,
        isbns,
        payment,
        _dir: dir,
    })
}

struct Engine {
    proc_: Proc,
    addr: String,
    _data: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start_engine(ctx: &Ctx, sim: &Sim, extra: &str, cores: usize, cpus: &str) -> Result<Engine> {
    let data = tempfile::tempdir()?;
    let config = data.path().join("engine.toml");
    let text = std::fs::read_to_string(&sim.config)?;
    std::fs::write(&config, with_sections(&text, extra))?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new("taskset")
        .args(["-c", cpus])
        .arg(ctx.bin.join("bookbroker"))
        .args(["serve", "--cores", &cores.to_string(), "--listen", &addr])
        .args(ctx.runtime.iter().flat_map(|r| ["--runtime", r.as_str()]))
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start bookbroker")?;
    let engine = Engine {
        proc_: Proc(child),
        addr,
        _data: data,
    };
    wait_listening(&engine.addr, Duration::from_secs(30), "the engine")?;
    Ok(engine)
}

/// Waits until `addr` accepts connections, or fails naming `what` after `limit`.
fn wait_listening(addr: &str, limit: Duration, what: &str) -> Result<()> {
    let until = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > until {
            bail!("{what} did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Replaces keys inside sections of an emitted config. `extra` is TOML lines of the
/// form `section.key = value`.
fn with_sections(config: &str, extra: &str) -> String {
    let mut out = config.to_string();
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        let Some((path, value)) = line.split_once('=') else {
            continue;
        };
        let Some((section, key)) = path.trim().split_once('.') else {
            continue;
        };
        let header = format!("[{section}]");
        let setting = format!("{} = {}", key.trim(), value.trim());
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        match lines.iter().position(|l| l.trim() == header) {
            Some(at) => {
                let end = lines[at + 1..]
                    .iter()
                    .position(|l| l.trim_start().starts_with('['))
                    .map(|p| at + 1 + p)
                    .unwrap_or(lines.len());
                let existing = lines[at + 1..end]
                    .iter()
                    .position(|l| l.split('=').next().map(str::trim) == Some(key.trim()));
                match existing {
                    Some(p) => lines[at + 1 + p] = setting,
                    None => lines.insert(at + 1, setting),
                }
            }
            None => {
                lines.insert(0, String::new());
                lines.insert(0, setting);
                lines.insert(0, header);
            }
        }
        out = lines.join("\n") + "\n";
    }
    out
}

/// CPU seconds (user + system) of a process so far.
fn cpu_seconds(ctx: &Ctx, pid: u32) -> Result<f64> {
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

struct Load<'a> {
    scenario: &'a str,
    rate: u64,
    secs: u64,
    warmup: u64,
    connections: usize,
    zipf: f64,
    extra: &'a [&'a str],
}

/// What one loadgen run measured.
struct Measured {
    /// loadgen's JSON report.
    report: Value,
    /// CPU seconds each watched process used in the measured window.
    cpu: Vec<f64>,
    /// Quote requests the sellers answered in the measured window.
    upstream: u64,
    /// Rescheduling interrupts each CPU took in the measured window.
    resched: Vec<u64>,
}

impl Measured {
    /// Answers in the measured window (at least 1, to divide by).
    fn answers(&self) -> f64 {
        f(&self.report, &["responses"]).max(1.0)
    }

    /// CPU µs of the first watched process per answer.
    fn cpu_us_per_answer(&self) -> f64 {
        self.cpu.first().copied().unwrap_or(f64::NAN) * 1e6 / self.answers()
    }
}

/// Runs loadgen against the engine; CPU and upstream counts are taken from the end of the
/// warm-up to the end of the run (approximately: the warm-up is timed from loadgen's
/// start).
fn run_load(
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
fn run_loadgen(
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
    let status = child.wait()?;
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
    })
}

/// Rescheduling interrupts (IPIs, the `RES` row of `/proc/interrupts`) each CPU has taken
/// so far; empty if the file cannot be read.
fn resched_interrupts() -> Vec<u64> {
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
fn upstream_quotes(sim: &Sim) -> Result<u64> {
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
fn metric_sum(engine: &Engine, name: &str) -> Result<f64> {
    let text = http_get(&format!("http://{}/metrics", engine.addr))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn http_get(url: &str) -> Result<String> {
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

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

fn errors(v: &Value) -> u64 {
    v["errors"]["total"].as_u64().unwrap_or(0) + v["unsent"].as_u64().unwrap_or(0)
}

struct Row {
    cells: Vec<String>,
}

fn table(head: &[&str], rows: &[Row]) -> String {
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.cells.join(" | ")));
    }
    s
}

fn ladder_row(rate: u64, r: &Value) -> Row {
    Row {
        cells: vec![
            rate.to_string(),
            format!("{:.0}", f(r, &["response_rate"])),
            format!("{:.2}", f(r, &["latency_ms", "p50"])),
            format!("{:.2}", f(r, &["latency_ms", "p99"])),
            format!("{:.2}", f(r, &["latency_ms", "p99_9"])),
            errors(r).to_string(),
        ],
    }
}

const LADDER_HEAD: [&str; 6] = [
    "target rate/s",
    "answers/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
];

fn ok_at(r: &Value) -> bool {
    let answered = f(r, &["responses"]);
    f(r, &["latency_ms", "p99"]) < 50.0 && (errors(r) as f64) <= answered * 0.001
}

fn cpu_per_quote(ctx: &Ctx, scenario: &str, report: &mut String) -> Result<()> {
    let sim = start_sim(ctx, scenario, "1")?;
    let engine = start_engine(ctx, &sim, "", 1, "0")?;
    let pid = engine.proc_.0.id();
    let nginx = NginxProxy::start()?;
    let tokio = start_tokio_baseline(ctx, &sim)?;
    let mut rows = Vec::new();
    for rate in [1000u64, 2000, 3000] {
        let load = Load {
            scenario: "quotes",
            rate,
            secs: ctx.secs(15),
            warmup: 3,
            connections: 64,
            zipf: 1.0,
            extra: &[],
        };
        let m = run_load(
            ctx,
            &format!("cpu-{rate}"),
            &sim,
            &engine,
            &load,
            "1",
            &[pid],
        )?;
        let r = &m.report;
        let answers = m.answers();
        let cpu_us = m.cpu_us_per_answer();
        let ipis = m.resched.first().copied().unwrap_or(0) as f64 / answers;
        // The same number of HTTP exchanges per second through nginx: a quote is six
        // exchanges, a proxied request two, so three proxied requests per quote.
        let baseline = match &nginx {
            Some(n) => {
                let load = Load {
                    rate: rate * 3,
                    ..load
                };
                let b = run_loadgen(
                    ctx,
                    &format!("cpu-nginx-{}", rate * 3),
                    &n.url,
                    None,
                    &load,
                    "1",
                    &[n.front.0.id()],
                    || Ok(0),
                )?;
                Some(b.cpu_us_per_answer() * 3.0)
            }
            None => None,
        };
        // The same quotes through the idiomatic tokio + axum + reqwest aggregator.
        let tokio_us = match &tokio {
            Some((p, url)) => {
                let t = run_loadgen(
                    ctx,
                    &format!("cpu-tokio-{rate}"),
                    url,
                    Some(&sim.isbns),
                    &load,
                    "1",
                    &[p.0.id()],
                    || Ok(0),
                )?;
                Some(t.cpu_us_per_answer())
            }
            None => None,
        };
        rows.push(Row {
            cells: vec![
                rate.to_string(),
                format!("{:.0}", f(r, &["response_rate"])),
                format!("{:.2}", f(r, &["latency_ms", "p99"])),
                format!("{:.1}", cpu_us),
                format!("{:.1}", ipis),
                format!("{:.2}", m.upstream as f64 / answers),
                baseline.map_or("n/a".into(), |b| format!("{b:.1}")),
                baseline.map_or("n/a".into(), |b| format!("{:.2}x", cpu_us / b)),
                tokio_us.map_or("n/a".into(), |t| format!("{t:.1}")),
                tokio_us.map_or("n/a".into(), |t| format!("{:.2}x", t / cpu_us)),
            ],
        });
    }
    report.push_str("### Engine CPU per quote (fan-out 5, cache off, engine on 1 pinned core)\n\n");
    report.push_str(&table(
        &[
            "rate/s",
            "answers/s",
            "p99 ms",
            "engine CPU µs per quote",
            "IPIs taken per quote",
            "upstream requests per quote",
            "nginx: CPU µs per 6 exchanges at the same exchange rate",
            "engine / nginx",
            "tokio + axum + reqwest: CPU µs per quote",
            "tokio / engine",
        ],
        &rows,
    ));
    report.push_str(
        "\nIPIs: rescheduling interrupts taken by the engine's CPU. The nginx baseline is one \
         nginx worker (`master_process off`) on the engine's CPU proxying, over keep-alive, \
         to a second nginx on the sellers' CPU, driven by the same loadgen at three times \
         the quote rate: the same HTTP exchanges per second (a quote is six, a proxied \
         request two). The tokio baseline (`bench/baseline-tokio`: tokio with one worker, \
         axum, one reqwest client, the same protocol codecs) runs pinned like the engine and \
         answers the same quotes from the same sellers.\n\n",
    );
    if nginx.is_none() {
        report.push_str("(nginx was not found, so its columns are empty.)\n\n");
    }
    if tokio.is_none() {
        report.push_str("(bench/baseline-tokio is not built, so its columns are empty.)\n\n");
    }
    Ok(())
}

/// Starts the tokio baseline (built by `bench/e2e` into its own target directory) on
/// CPU 0 with one worker, on the sellers of `sim`; `None` if it is not built.
fn start_tokio_baseline(ctx: &Ctx, sim: &Sim) -> Result<Option<(Proc, String)>> {
    let bin = ctx
        .root
        .join("bench/baseline-tokio/target/release/baseline-tokio");
    if !bin.exists() {
        return Ok(None);
    }
    let addr = format!("127.0.0.1:{}", free_port()?);
    let child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&bin)
        .arg("--config")
        .arg(&sim.config)
        .args(["--listen", &addr, "--workers", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start baseline-tokio")?;
    let proc_ = Proc(child);
    wait_listening(&addr, Duration::from_secs(10), "baseline-tokio")?;
    Ok(Some((proc_, format!("http://{addr}"))))
}

/// Two nginx processes, each one worker with `master_process off` so its pid is the
/// process doing the work: `front` (on CPU 0, where the engine runs in the CPU
/// experiment) proxies over keep-alive to `back` (on CPU 1, where the sellers run), which
/// answers every request with a small seller-like JSON body.
struct NginxProxy {
    front: Proc,
    _back: Proc,
    url: String,
    _dir: tempfile::TempDir,
}

impl NginxProxy {
    /// Starts both, or `None` if nginx is not installed.
    fn start() -> Result<Option<NginxProxy>> {
        if Command::new("nginx").arg("-v").output().is_err() {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let back_port = free_port()?;
        let front_port = free_port()?;
        let body = r#"{"isbn":"9780000000000","offers":[{"sku":"s1","condition":"new","price":{"amount":"12.50","currency":"EUR"},"shipping":{"amount":"3.00","currency":"EUR"},"stock":4}]}"#;
        let back = start_nginx(
            dir.path(),
            "back",
            back_port,
            &format!(
                "server {{ listen 127.0.0.1:{back_port}; default_type application/json; \
                 location / {{ return 200 '{body}'; }} }}"
            ),
            "1",
        )?;
        let front = start_nginx(
            dir.path(),
            "front",
            front_port,
            &format!(
                "upstream back {{ server 127.0.0.1:{back_port}; keepalive 64; }} \
                 server {{ listen 127.0.0.1:{front_port}; location / {{ proxy_pass http://back; \
                 proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
            ),
            "0",
        )?;
        Ok(Some(NginxProxy {
            front,
            _back: back,
            url: format!("http://127.0.0.1:{front_port}"),
            _dir: dir,
        }))
    }
}

/// Starts one nginx with `http` as its http block's body, which listens on `port`.
fn start_nginx(dir: &Path, name: &str, port: u16, http: &str, cpus: &str) -> Result<Proc> {
    let prefix = dir.join(name);
    std::fs::create_dir_all(&prefix)?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {pid}; \
             error_log {err} warn; events {{ worker_connections 4096; }} \
             http {{ access_log off; keepalive_requests 1000000; {http} }}\n",
            pid = prefix.join("nginx.pid").display(),
            err = prefix.join("error.log").display(),
        ),
    )?;
    let child = Command::new("taskset")
        .args(["-c", cpus, "nginx", "-p"])
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start nginx")?;
    let proc_ = Proc(child);
    let log = prefix.join("error.log");
    wait_listening(
        &format!("127.0.0.1:{port}"),
        Duration::from_secs(10),
        &format!("nginx ({name}; see {})", log.display()),
    )?;
    Ok(proc_)
}

fn ladder(
    ctx: &Ctx,
    title: &str,
    scenario: &str,
    extra: &str,
    rates: &[u64],
    report: &mut String,
) -> Result<Option<u64>> {
    let sim = start_sim(ctx, scenario, "0,1")?;
    let engine = start_engine(ctx, &sim, extra, 2, "0,1")?;
    let mut rows = Vec::new();
    let mut best = None;
    for rate in rates {
        let load = Load {
            scenario: "quotes",
            rate: *rate,
            secs: ctx.secs(15),
            warmup: 3,
            connections: 256,
            zipf: 1.0,
            extra: &[],
        };
        let name = format!(
            "{}-{rate}",
            title.split_whitespace().next().unwrap_or("run")
        );
        let r = run_load(ctx, &name, &sim, &engine, &load, "0,1", &[])?.report;
        let good = ok_at(&r);
        rows.push(ladder_row(*rate, &r));
        if good {
            best = Some(*rate);
        } else {
            break;
        }
    }
    report.push_str(&format!("### {title}\n\n"));
    report.push_str(&table(&LADDER_HEAD, &rows));
    report.push_str(&format!(
        "\nHighest rate with p99 < 50 ms and no errors: **{}**\n\n",
        best.map(|b| format!("{b}/s"))
            .unwrap_or_else(|| "none of the rates tried".into())
    ));
    Ok(best)
}

fn sustained(ctx: &Ctx, scenario: &str, extra: &str, rate: u64, report: &mut String) -> Result<()> {
    let sim = start_sim(ctx, scenario, "0,1")?;
    let engine = start_engine(ctx, &sim, extra, 2, "0,1")?;
    let load = Load {
        scenario: "quotes",
        rate,
        secs: ctx.secs(30),
        warmup: 3,
        connections: 256,
        zipf: 1.0,
        extra: &[],
    };
    let r = run_load(
        ctx,
        &format!("sustained-{rate}"),
        &sim,
        &engine,
        &load,
        "0,1",
        &[],
    )?
    .report;
    report.push_str(&format!(
        "### Cache on, Zipf s = 1, {rate}/s for {} s\n\n",
        load.secs
    ));
    report.push_str(&table(&LADDER_HEAD, &[ladder_row(rate, &r)]));
    report.push('\n');
    Ok(())
}

fn slow_tail(scenario: &str) -> String {
    // 2% of answers 20x slower than the usual ~3 ms (base 2 + jitter 0..2).
    scenario.replace(
        "jitter_ms = 2.0",
        "jitter_ms = 2.0\nslow_share = 0.02\nslow_ms = 60.0",
    )
}

fn hedging(ctx: &Ctx, scenario: &str, report: &mut String) -> Result<()> {
    let scenario = slow_tail(scenario);
    let mut results: BTreeMap<&str, Vec<(f64, f64, f64, f64)>> = BTreeMap::new();
    for run in 0..ctx.runs {
        for (label, extra) in [
            ("on", "hedging.enabled = true"),
            ("off", "hedging.enabled = false"),
        ] {
            let sim = start_sim(ctx, &scenario, "1")?;
            let engine = start_engine(ctx, &sim, extra, 1, "0")?;
            let load = Load {
                scenario: "quotes",
                rate: 1000,
                secs: ctx.secs(20),
                warmup: 3,
                connections: 64,
                zipf: 1.0,
                extra: &[],
            };
            let m = run_load(
                ctx,
                &format!("hedging-{label}-{run}"),
                &sim,
                &engine,
                &load,
                "1",
                &[],
            )?;
            let r = &m.report;
            let answers = f(r, &["responses"]).max(1.0);
            results.entry(label).or_default().push((
                f(r, &["latency_ms", "p50"]),
                f(r, &["latency_ms", "p99"]),
                f(r, &["latency_ms", "p99_9"]),
                m.upstream as f64 / answers / 5.0,
            ));
        }
    }
    let mut rows = Vec::new();
    for label in ["on", "off"] {
        for (i, (p50, p99, p999, up)) in results.get(label).into_iter().flatten().enumerate() {
            rows.push(Row {
                cells: vec![
                    label.to_string(),
                    (i + 1).to_string(),
                    format!("{p50:.2}"),
                    format!("{p99:.2}"),
                    format!("{p999:.2}"),
                    format!("{up:.3}"),
                ],
            });
        }
    }
    let med = |label: &str, pick: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = results.get(label).into_iter().flatten().map(pick).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    report.push_str("### Hedging on vs off (2% of seller answers 20x slower, 1,000 quotes/s, engine on 1 core)\n\n");
    report.push_str(&table(
        &[
            "hedging",
            "run",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "upstream requests per seller per quote",
        ],
        &rows,
    ));
    report.push_str(&format!(
        "\nMedians: p99 off/on = **{:.1}x**, p99.9 off/on = **{:.1}x**, upstream on/off = **{:.3}x**\n\n",
        med("off", |r| r.1) / med("on", |r| r.1),
        med("off", |r| r.2) / med("on", |r| r.2),
        med("on", |r| r.3) / med("off", |r| r.3),
    ));
    Ok(())
}

fn purchases(ctx: &Ctx, scenario: &str, report: &mut String) -> Result<()> {
    // Plenty of stock so the run measures purchases, not sold-out books.
    let scenario = scenario.replace(
        "max_concurrency = 4096",
        "max_concurrency = 4096\nstock = 100000",
    );
    let mut rows = Vec::new();
    let mut best: BTreeMap<&str, u64> = BTreeMap::new();
    for (label, extra) in [
        ("group commit", "storage.group_commit = true"),
        ("fsync per write", "storage.group_commit = false"),
    ] {
        for rate in [500u64, 1000, 2000, 3000, 4000] {
            let sim = start_sim(ctx, &scenario, "1")?;
            let engine = start_engine(ctx, &sim, extra, 1, "0")?;
            let load = Load {
                scenario: "purchases",
                rate,
                secs: ctx.secs(10),
                warmup: 2,
                connections: 512,
                zipf: 0.0,
                extra: &["--max-price", "1000000", "--duplicate-share", "0"],
            };
            let name = format!("purchases-{}-{rate}", label.replace(' ', "-"));
            let r = run_load(ctx, &name, &sim, &engine, &load, "1", &[])?.report;
            let p99 = f(&r, &["latency_ms", "p99"]);
            let good = p99 < 100.0 && errors(&r) == 0;
            let syncs = metric_sum(&engine, "bookbroker_storage_syncs_total")?;
            let started = metric_sum(&engine, "bookbroker_purchases_started_total")?;
            rows.push(Row {
                cells: vec![
                    label.to_string(),
                    rate.to_string(),
                    format!("{:.0}", f(&r, &["response_rate"])),
                    format!("{:.2}", f(&r, &["latency_ms", "p50"])),
                    format!("{p99:.2}"),
                    errors(&r).to_string(),
                    format!("{:.3}", syncs / started.max(1.0)),
                ],
            });
            if !good {
                break;
            }
            best.insert(label, rate);
        }
    }
    report.push_str("### Purchases per second (engine on 1 core; each purchase: quote 5 sellers, 2 synced writes, authorize, order, capture)\n\n");
    report.push_str(&table(
        &[
            "durability",
            "target rate/s",
            "answers/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "fsyncs per purchase",
        ],
        &rows,
    ));
    report.push_str(&format!(
        "\nHighest rate with p99 < 100 ms and no errors: group commit **{}/s**, fsync per write **{}/s**\n\n",
        best.get("group commit").copied().unwrap_or(0),
        best.get("fsync per write").copied().unwrap_or(0),
    ));
    Ok(())
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
    };
    std::fs::create_dir_all(&ctx.out)?;
    let scenario = std::fs::read_to_string(ctx.root.join("bench/scenarios/fanout5.toml"))?;
    let want = |name: &str| only.is_empty() || only.contains(&name);
    let started = Instant::now();
    let mut report = String::new();
    report.push_str(&format!(
        "Produced by `bench/e2e{}{}` on {} ({} CPUs){}.\n\n",
        if quick { " --quick" } else { "" },
        ctx.runtime
            .as_deref()
            .map_or(String::new(), |r| format!(" --runtime={r}")),
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
    write_into_benchmarks(&ctx.root.join("BENCHMARKS.md"), &report)?;
    println!("{report}");
    Ok(())
}

/// UTC date and time without a date crate.
fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn write_into_benchmarks(path: &Path, table: &str) -> Result<()> {
    const BEGIN: &str = "<!-- e2e:begin -->";
    const END: &str = "<!-- e2e:end -->";
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let block = format!("{BEGIN}\n{table}{END}");
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &text[..a], block, &text[b + END.len()..]),
        _ => format!("{text}\n## End-to-end (`bench/e2e`)\n\n{block}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}
