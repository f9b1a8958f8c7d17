//! Reading loadgen's reports and writing the table into BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use serde_json::Value;

pub(crate) fn f(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_f64().unwrap_or(f64::NAN)
}

pub(crate) fn errors(v: &Value) -> u64 {
    v["errors"]["total"].as_u64().unwrap_or(0) + v["unsent"].as_u64().unwrap_or(0)
}

pub(crate) struct Row {
    pub(crate) cells: Vec<String>,
}

pub(crate) fn table(head: &[&str], rows: &[Row]) -> String {
    let mut s = format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
    for r in rows {
        s.push_str(&format!("| {} |\n", r.cells.join(" | ")));
    }
    s
}

pub(crate) fn ladder_row(rate: u64, r: &Value) -> Row {
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

pub(crate) const LADDER_HEAD: [&str; 6] = [
    "target rate/s",
    "answers/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "errors",
];

pub(crate) fn ok_at(r: &Value) -> bool {
    let answered = f(r, &["responses"]);
    f(r, &["latency_ms", "p99"]) < 50.0 && (errors(r) as f64) <= answered * 0.001
}

/// UTC date and time without a date crate.
pub(crate) fn chrono_like_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn write_into_benchmarks(path: &Path, table: &str) -> Result<()> {
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
