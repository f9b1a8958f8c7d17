//! The processes an experiment runs: sellersim, the engine, and waiting for them.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::Ctx;

/// A child process that is killed when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) struct Sim {
    pub(crate) _proc: Proc,
    pub(crate) config: PathBuf,
    pub(crate) isbns: PathBuf,
    pub(crate) payment: String,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) fn start_sim(ctx: &Ctx, scenario_text: &str, cpus: &str) -> Result<Sim> {
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

pub(crate) struct Engine {
    pub(crate) proc_: Proc,
    pub(crate) addr: String,
    pub(crate) _data: tempfile::TempDir,
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn start_engine(
    ctx: &Ctx,
    sim: &Sim,
    extra: &str,
    cores: usize,
    cpus: &str,
) -> Result<Engine> {
    let data = tempfile::tempdir()?;
    let config = data.path().join("engine.toml");
    let text = std::fs::read_to_string(&sim.config)?;
    let mut settings = extra.to_string();
    for set in &ctx.set {
        // `section.key=value`, as with_sections reads it.
        settings.push('\n');
        settings.push_str(set);
    }
    std::fs::write(&config, with_sections(&text, &settings))?;
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
pub(crate) fn wait_listening(addr: &str, limit: Duration, what: &str) -> Result<()> {
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
pub(crate) fn with_sections(config: &str, extra: &str) -> String {
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
