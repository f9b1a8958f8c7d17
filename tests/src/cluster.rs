//! Clusters for the tests: N engine nodes with a shared `[cluster]` section, and HAProxy
//! (Debian's package) in front of them, configured by `bookbroker haproxy-config`.
//!
//! HAProxy is installed by `scripts/ensure-deps.sh` when it is missing. Every process
//! started here is killed when its handle drops, so a failing test leaves none behind.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, free_port, Client, Engine, EngineOptions, Sim};

/// CRC-32 as zlib, gzip and HAProxy's `crc32` converter compute it (reflected IEEE
/// polynomial 0xEDB88320, initial value and final xor all ones), written out bit by bit
/// here so the tests check the engine's `crc32fast` and HAProxy against a third,
/// independent implementation.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The partition of an idempotency key in a cluster of `nodes` (design section 7).
pub fn partition(key: &str, nodes: usize) -> usize {
    (crc32(key.as_bytes()) % nodes as u32) as usize
}

/// The partition a purchase id names (`p2-pur_…` is 2), if it names one.
pub fn partition_of_id(id: &str) -> Option<usize> {
    let rest = id.strip_prefix('p')?;
    let (digits, _) = rest.split_once('-')?;
    digits.parse().ok()
}

/// Writes node `node`'s config: `base` (an engine config, e.g. sellersim's) with
/// `[cluster] nodes = …` and `node = …` appended, into `dir`.
pub fn node_config(base: &str, nodes: &[SocketAddr], node: usize, dir: &Path) -> PathBuf {
    let list: Vec<String> = nodes.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "{base}\n[cluster]\nnodes = [{}]\nnode = {node}\n",
        list.join(", ")
    );
    let path = dir.join(format!("node{node}.toml"));
    std::fs::write(&path, text).expect("write node config");
    path
}

/// The `haproxy` binary, installed through `scripts/ensure-deps.sh` when missing (as
/// `make test` does first).
pub fn haproxy_bin() -> PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
                .map(|d| d.join("haproxy"))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = find() {
        return p;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-deps.sh");
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} failed: {status}", script.display());
    find().expect("haproxy is still missing after scripts/ensure-deps.sh")
}

/// A running HAProxy in front of a cluster.
pub struct Haproxy {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its runtime API socket.
    pub admin: PathBuf,
    /// The configuration `bookbroker haproxy-config` wrote.
    pub config: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// Writes the configuration for the cluster of `engine_config` with
    /// `bookbroker haproxy-config`, checks it with `haproxy -c`, starts HAProxy on a free
    /// loopback port and waits until its runtime API answers.
    pub fn start(engine_config: &Path) -> Haproxy {
        let haproxy = haproxy_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin = dir.path().join("admin.sock");
        let config = dir.path().join("haproxy.cfg");
        let out = Command::new(bin("bookbroker"))
            .arg("haproxy-config")
            .arg("--config")
            .arg(engine_config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--admin-socket")
            .arg(&admin)
            .output()
            .expect("run bookbroker haproxy-config");
        assert!(
            out.status.success(),
            "bookbroker haproxy-config failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&config, &out.stdout).expect("write haproxy.cfg");
        let check = Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c refused the generated configuration:\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.path().join("haproxy.log");
        let file = std::fs::File::create(&log).expect("log");
        // `-db`: stay in the foreground, so the handle's kill stops it.
        let child = Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn haproxy");
        let mut h = Haproxy {
            child: Some(child),
            addr,
            admin,
            config,
            log,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(Ok(Some(status))) = h.child.as_mut().map(|c| c.try_wait()) {
                panic!("haproxy exited at once ({status}):\n{}", h.log_text());
            }
            if h.try_command("show info").is_ok() && Client::try_connect(h.addr).is_ok() {
                return h;
            }
            assert!(
                Instant::now() < until,
                "haproxy not up within 10 s:\n{}",
                h.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What HAProxy logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One runtime API command and its answer.
    pub fn try_command(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.admin)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// One runtime API command and its answer (panics when the socket fails).
    pub fn command(&self, command: &str) -> String {
        self.try_command(command)
            .unwrap_or_else(|e| panic!("haproxy runtime API {command:?}: {e}"))
    }

    /// Every server's status (`UP`, `DOWN`, `MAINT`, …) by (backend, server), from
    /// `show stat`.
    pub fn server_states(&self) -> BTreeMap<(String, String), String> {
        let text = self.command("show stat");
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
            panic!("show stat without pxname/svname/status: {text}");
        };
        lines
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let (px, sv, st) = (f.get(px)?, f.get(sv)?, f.get(st)?);
                (*sv != "FRONTEND" && *sv != "BACKEND")
                    .then(|| ((px.to_string(), sv.to_string()), st.to_string()))
            })
            .collect()
    }

    /// Waits until every server of node `node` (in backend `quotes` and in its
    /// partition's backend) has status `want` (`UP`, `DOWN`); panics after `within`.
    pub fn wait_node(&self, node: usize, want: &str, within: Duration) {
        let until = Instant::now() + within;
        let name = format!("node{node}");
        loop {
            let states = self.server_states();
            let mine: Vec<&String> = states
                .iter()
                .filter(|((_, sv), _)| *sv == name)
                .map(|(_, st)| st)
                .collect();
            if mine.len() == 2 && mine.iter().all(|s| s.starts_with(want)) {
                return;
            }
            assert!(
                Instant::now() < until,
                "{name} not {want} within {within:?}: {states:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every server is `UP`.
    pub fn wait_all_up(&self, within: Duration) {
        let until = Instant::now() + within;
        loop {
            let states = self.server_states();
            if !states.is_empty() && states.values().all(|s| s.starts_with("UP")) {
                return;
            }
            assert!(
                Instant::now() < until,
                "not every server UP within {within:?}: {states:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Repoints node `node` (its server in `quotes` and in its partition's backend) to
    /// `addr` through the runtime API (`set server … addr … port …`), as the failover
    /// drill does. Returns HAProxy's answers.
    pub fn repoint(&self, node: usize, addr: SocketAddr) -> Vec<String> {
        ["quotes".to_string(), format!("p{node}")]
            .iter()
            .map(|backend| {
                self.command(&format!(
                    "set server {backend}/node{node} addr {} port {}",
                    addr.ip(),
                    addr.port()
                ))
            })
            .collect()
    }

    /// A new client connection to the balancer.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// N engine nodes sharing one sellersim, each with its own data directory (kept by the
/// cluster, so a node can be restarted on it, here or at another address).
pub struct Cluster {
    /// Every node's address, in partition order (the `[cluster] nodes` list).
    pub addrs: Vec<SocketAddr>,
    /// The running nodes; `None` while one is down.
    pub nodes: Vec<Option<Engine>>,
    /// Each node's config file.
    pub configs: Vec<PathBuf>,
    /// Each node's data directory.
    pub data: Vec<tempfile::TempDir>,
    /// Cores per node.
    pub cores: usize,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes on free loopback ports with `base` (an engine config) plus the
    /// cluster section; `extra` is appended to every node's config.
    pub fn start(sim: &Sim, n: usize, cores: usize, extra: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().expect("addr"))
            .collect();
        let base = format!("{}\n{extra}\n", sim.config_text());
        let configs: Vec<PathBuf> = (0..n)
            .map(|i| node_config(&base, &addrs, i, dir.path()))
            .collect();
        let data: Vec<tempfile::TempDir> = (0..n)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let nodes = (0..n)
            .map(|i| {
                Some(Engine::start_at(
                    &configs[i],
                    cores,
                    data[i].path(),
                    addrs[i],
                ))
            })
            .collect();
        Cluster {
            addrs,
            nodes,
            configs,
            data,
            cores,
            dir,
        }
    }

    /// Node `i`'s config.
    pub fn config(&self, i: usize) -> &Path {
        &self.configs[i]
    }

    /// A folder for files the test writes.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kill -9` of node `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut e) = self.nodes[i].take() {
            e.kill9();
        }
    }

    /// Starts node `i` again on its data directory, at `addr` (its own address, or
    /// another one for the failover drill).
    pub fn restart_at(&mut self, i: usize, addr: SocketAddr) {
        let engine = Engine::start_opts(
            &self.configs[i],
            self.cores,
            &EngineOptions {
                data_dir: Some(self.data[i].path().to_path_buf()),
                listen: Some(addr),
                ..EngineOptions::default()
            },
        );
        self.nodes[i] = Some(engine);
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &Engine {
        self.nodes[i].as_ref().expect("node is running")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_zlibs() {
        // The check value of CRC-32/ISO-HDLC, the one zlib and gzip compute.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(partition_of_id("p2-pur_0000_00"), Some(2));
        assert_eq!(partition_of_id("pur_0000_00"), None);
    }
}
