//! Experiment 1: the engine's CPU per quote beside the nginx proxy and the tokio baseline.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::measure::{run_load, run_loadgen, Load};
use crate::procs::{free_port, start_engine, start_sim, wait_listening, Proc, Sim};
use crate::report::{f, table, Row};
use crate::syscalls::Syscalls;
use crate::Ctx;

pub(crate) fn cpu_per_quote(ctx: &Ctx, scenario: &str, report: &mut String) -> Result<()> {
    let sim = start_sim(ctx, scenario, "1")?;
    let engine = start_engine(ctx, &sim, "", 1, "0")?;
    let pid = engine.proc_.0.id();
    let nginx = NginxProxy::start()?;
    let tokio = start_tokio_baseline(ctx, &sim)?;
    let mut rows = Vec::new();
    for rate in [1000u64, 3000, 6000] {
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
                Some((t.cpu_us_per_answer(), t.syscalls, t.answers()))
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
                tokio_us.map_or("n/a".into(), |(t, _, _)| format!("{t:.1}")),
                tokio_us.map_or("n/a".into(), |(t, _, _)| format!("{:.2}x", t / cpu_us)),
                per_quote(m.syscalls, answers),
                tokio_us.map_or("n/a".into(), |(_, s, n)| per_quote(s, n)),
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
            "engine per quote: syscalls / io_uring_enter / socket read+write / epoll_wait / ring ops",
            "tokio per quote: syscalls / io_uring_enter / socket read+write / epoll_wait / ring ops",
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
         answers the same quotes from the same sellers. System calls and ring operations \
         are counted by `perf stat` on the kernel's tracepoints (`raw_syscalls`, \
         `io_uring:io_uring_submit_req`) for every thread of the process, during the same \
         window; socket read+write counts sendto, recvfrom, sendmsg, recvmsg, read, write \
         and writev.\n\n",
    );
    if nginx.is_none() {
        report.push_str("(nginx was not found, so its columns are empty.)\n\n");
    }
    if tokio.is_none() {
        report.push_str("(bench/baseline-tokio is not built, so its columns are empty.)\n\n");
    }
    Ok(())
}

/// System calls and ring operations per answer, as the table shows them.
fn per_quote(s: Option<Syscalls>, answers: f64) -> String {
    match s {
        Some(s) => {
            let per = |n: u64| n as f64 / answers;
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                per(s.all),
                per(s.ring_enter),
                per(s.socket_io),
                per(s.waits),
                per(s.ring_ops)
            )
        }
        None => "n/a".into(),
    }
}

/// Starts the tokio baseline (built by `bench/e2e` into its own target directory) on
/// CPU 0 with one worker, on the sellers of `sim`; `None` if it is not built.
pub(crate) fn start_tokio_baseline(ctx: &Ctx, sim: &Sim) -> Result<Option<(Proc, String)>> {
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
pub(crate) struct NginxProxy {
    pub(crate) front: Proc,
    pub(crate) _back: Proc,
    pub(crate) url: String,
    pub(crate) _dir: tempfile::TempDir,
}

impl NginxProxy {
    /// Starts both, or `None` if nginx is not installed.
    pub(crate) fn start() -> Result<Option<NginxProxy>> {
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
pub(crate) fn start_nginx(
    dir: &Path,
    name: &str,
    port: u16,
    http: &str,
    cpus: &str,
) -> Result<Proc> {
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
