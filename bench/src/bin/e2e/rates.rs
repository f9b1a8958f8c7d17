//! Experiments 2 to 5: the rate ladders, the sustained run, hedging on against off,
//! and purchases per second.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::measure::{metric_sum, run_load, Load};
use crate::procs::{start_engine, start_sim};
use crate::report::{errors, f, ladder_row, ok_at, table, Row, LADDER_HEAD};
use crate::Ctx;

pub(crate) fn ladder(
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

pub(crate) fn sustained(
    ctx: &Ctx,
    scenario: &str,
    extra: &str,
    rate: u64,
    report: &mut String,
) -> Result<()> {
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

pub(crate) fn slow_tail(scenario: &str) -> String {
    // 2% of answers 20x slower than the usual ~3 ms (base 2 + jitter 0..2).
    scenario.replace(
        "jitter_ms = 2.0",
        "jitter_ms = 2.0\nslow_share = 0.02\nslow_ms = 60.0",
    )
}

pub(crate) fn hedging(ctx: &Ctx, scenario: &str, report: &mut String) -> Result<()> {
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

pub(crate) fn purchases(ctx: &Ctx, scenario: &str, report: &mut String) -> Result<()> {
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
