//! Harness for bookbroker's integration tests: starts the real `sellersim` and
//! `bookbroker` binaries on loopback, talks HTTP/1.1 to them with a tiny blocking client,
//! and cleans up (every child is killed when its handle drops).
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `make test` does).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bookbroker_protocols::admin::{self, AdminOrder, AdminOrderStatus};
use bookbroker_protocols::http::Reply;
use bookbroker_protocols::payment::{self, Ledger, LedgerEntry, LedgerKind};
use bookbroker_protocols::{Currency, FxTable, Money};

pub mod cluster;
pub mod faultproxy;

/// The API key of customer `demo` in every test scenario.
pub const KEY: &str = "demo-key-123";

/// The folder holding the binaries: next to the test executable's `deps/` folder.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in <target>/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A scenario file of this crate.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A running sellersim.
pub struct Sim {
    child: Child,
    /// Where the emitted files live.
    pub dir: tempfile::TempDir,
    /// The emitted engine config.
    pub config: PathBuf,
    /// Every ISBN the sellers stock.
    pub isbns: Vec<String>,
    /// The payment provider's base URL (it also serves /admin/stats).
    pub payment: SocketAddr,
}

impl Sim {
    /// Starts sellersim on a scenario of this crate and waits for `sellersim ready`.
    pub fn start(scenario_name: &str) -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bookbroker.toml");
        let isbns = dir.path().join("isbns.txt");
        let mut child = Command::new(bin("sellersim"))
            .arg("--scenario")
            .arg(scenario(scenario_name))
            .arg("--emit-config")
            .arg(&config)
            .arg("--emit-isbns")
            .arg(&isbns)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sellersim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if line.trim() == "sellersim ready" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = child.kill();
            panic!("sellersim did not print `sellersim ready` within 20 s");
        }
        let text = std::fs::read_to_string(&config).expect("emitted config");
        let payment = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("url = \"http://"))
            .and_then(|rest| rest.trim_end_matches('"').parse().ok())
            .expect("payment url in emitted config");
        let isbns = std::fs::read_to_string(&isbns)
            .expect("emitted isbns")
            .lines()
            .map(str::to_owned)
            .collect();
        Sim {
            child,
            dir,
            config,
            isbns,
            payment,
        }
    }

    /// The emitted config text.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).expect("config")
    }

    /// The `[fx]` table of the emitted config (see [`fx_of_config`]).
    pub fn fx(&self) -> FxTable {
        fx_of_config(&self.config_text()).unwrap_or_else(|e| panic!("emitted config: {e}"))
    }

    /// Writes an edited copy of the emitted config and returns its path.
    pub fn config_with(&self, edit: impl FnOnce(String) -> String) -> PathBuf {
        let path = self.dir.path().join("edited.toml");
        std::fs::write(&path, edit(self.config_text())).expect("write config");
        path
    }

    /// `GET /admin/stats` of the payment provider.
    pub fn stats(&self) -> serde_json::Value {
        let resp = Client::connect(self.payment).get("/admin/stats", None);
        assert_eq!(resp.status, 200);
        resp.json()
    }

    /// A seller's first endpoint (`http://…`, `tcp://…`) from the emitted config.
    pub fn endpoint(&self, seller: &str) -> String {
        let text = self.config_text();
        let start = text
            .find(&format!("name = \"{seller}\""))
            .unwrap_or_else(|| panic!("seller {seller} not in config"));
        let rest = &text[start..];
        let line = rest
            .lines()
            .find(|l| l.trim_start().starts_with("endpoints"))
            .expect("endpoints");
        let first = line.split('"').nth(1).expect("an endpoint");
        first.to_string()
    }
}

/// One seller of a running sim, as the emitted config lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSeller {
    /// Its name.
    pub name: String,
    /// `json`, `xml` or `line`.
    pub protocol: String,
    /// Its first endpoint (`http://…`, `tcp://…`).
    pub endpoint: String,
}

impl SimSeller {
    /// The endpoint's socket address.
    pub fn addr(&self) -> SocketAddr {
        let rest = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, rest)| rest);
        rest.trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("endpoint {}: {e}", self.endpoint))
    }
}

/// One order as a seller recorded it, with the seller's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerOrder {
    /// The seller.
    pub seller: String,
    /// The order.
    pub order: AdminOrder,
}

impl SellerOrder {
    /// Whether it still stands (placed, not cancelled).
    pub fn is_placed(&self) -> bool {
        self.order.status == AdminOrderStatus::Placed
    }
}

impl Sim {
    /// Every seller in the emitted config, in order.
    pub fn sellers(&self) -> Vec<SimSeller> {
        let text = self.config_text();
        let mut sellers = Vec::new();
        for block in text.split("[[sellers]]").skip(1) {
            // A block ends where the next table starts.
            let mut name = None;
            let mut protocol = None;
            let mut endpoint = None;
            for line in block.lines() {
                let line = line.trim();
                if line.starts_with('[') {
                    break;
                }
                let quoted = || line.split('"').nth(1).map(str::to_string);
                if line.starts_with("name =") {
                    name = quoted();
                } else if line.starts_with("protocol =") {
                    protocol = quoted();
                } else if line.starts_with("endpoints =") {
                    endpoint = quoted();
                }
            }
            sellers.push(SimSeller {
                name: name.expect("seller name in emitted config"),
                protocol: protocol.expect("seller protocol in emitted config"),
                endpoint: endpoint.expect("seller endpoint in emitted config"),
            });
        }
        sellers
    }

    /// `GET /v1/ledger` of the payment provider: every authorization, capture, void,
    /// refund and decline, oldest first.
    pub fn ledger(&self) -> Ledger {
        let resp = Client::connect(self.payment).get("/v1/ledger", None);
        payment::decode_ledger(Reply {
            status: resp.status,
            retry_after: None,
            body: &resp.body,
        })
        .unwrap_or_else(|e| panic!("ledger: {e}: {}", resp.text()))
    }

    /// Every order one seller recorded, placed and cancelled, oldest first
    /// (`GET /admin/orders` on json and xml sellers, `ORDERS` on line sellers).
    pub fn orders_of(&self, seller: &SimSeller) -> Vec<AdminOrder> {
        let addr = seller.addr();
        if seller.endpoint.starts_with("https://") {
            panic!(
                "seller {}: the harness reads orders over plain HTTP only",
                seller.name
            );
        }
        if seller.protocol == "line" {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("connect {}: {e}", seller.name));
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("read timeout");
            let tag = "admin1";
            let mut out = Vec::new();
            admin::encode_line_request(tag, &mut out);
            stream.write_all(&out).expect("write ORDERS");
            let mut orders = Vec::new();
            for l in BufReader::new(stream).lines() {
                let l = l.unwrap_or_else(|e| panic!("ORDERS from {}: {e}", seller.name));
                match admin::decode_line(l.as_bytes()) {
                    Ok(admin::LineListing::Record(record)) => orders.push(record),
                    Ok(admin::LineListing::End) => return orders,
                    other => panic!("ORDERS from {}: unexpected {other:?}", seller.name),
                }
            }
            panic!("ORDERS from {}: no END", seller.name);
        }
        let resp = Client::connect(addr).get("/admin/orders", None);
        admin::decode_response(Reply {
            status: resp.status,
            retry_after: None,
            body: &resp.body,
        })
        .unwrap_or_else(|e| panic!("orders of {}: {e}: {}", seller.name, resp.text()))
        .orders
    }

    /// Every order of every seller.
    pub fn orders(&self) -> Vec<SellerOrder> {
        self.sellers()
            .iter()
            .flat_map(|s| {
                self.orders_of(s).into_iter().map(|order| SellerOrder {
                    seller: s.name.clone(),
                    order,
                })
            })
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// TCP socket states as `ss` names them, by the number Linux shows in `/proc/net/tcp`.
const TCP_STATES: [&str; 12] = [
    "UNKNOWN",
    "ESTAB",
    "SYN-SENT",
    "SYN-RECV",
    "FIN-WAIT-1",
    "FIN-WAIT-2",
    "TIME-WAIT",
    "UNCONN",
    "CLOSE-WAIT",
    "LAST-ACK",
    "LISTEN",
    "CLOSING",
];

/// Every TCP socket of this host (network namespace) whose *local* port is `port`, by
/// state (`LISTEN`, `ESTAB`, `TIME-WAIT`, ...; the names `ss -tan` prints), from
/// `/proc/net/tcp` and `/proc/net/tcp6`. The server side of a connection has the
/// server's port as its local port; the client side does not.
pub fn tcp_states_on_port(port: u16) -> BTreeMap<&'static str, usize> {
    let mut states = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for row in text.lines().skip(1) {
            // `sl local_address rem_address st ...`, addresses as `HEXIP:HEXPORT`.
            let mut fields = row.split_whitespace().skip(1);
            let (Some(local), Some(_remote), Some(state)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            let name = usize::from_str_radix(state, 16)
                .ok()
                .and_then(|i| TCP_STATES.get(i))
                .copied()
                .unwrap_or("UNKNOWN");
            *states.entry(name).or_default() += 1;
        }
    }
    states
}

/// How to start an engine, beyond its config and core count.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The data directory; `None` gives a fresh one that the [`Engine`] owns.
    pub data_dir: Option<PathBuf>,
    /// Extra environment variables for the process (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// The address to listen on; `None` picks a free loopback port. A restart passes the
    /// address of the engine it replaces, as a service manager would.
    pub listen: Option<SocketAddr>,
    /// `--runtime` (`auto`, `io_uring`, `epoll` or `glommio`). `None` passes the one
    /// named by the environment variable [`RUNTIME_VAR`] when it is set (so the whole
    /// suite can run on another backend), and otherwise none: the config's (`auto`).
    pub runtime: Option<String>,
    /// A command that runs the engine for us: the engine's path and arguments are
    /// appended to it, and it must end by exec'ing them (e.g. [`bin`]`("no-io-uring")`,
    /// or `sh -c '... exec "$@"' sh`). Empty runs the engine directly.
    pub wrapper: Vec<std::ffi::OsString>,
}

/// The environment variable that picks the executor backend of every engine the tests
/// start without choosing one (`BOOKBROKER_TEST_RUNTIME=epoll cargo test`).
pub const RUNTIME_VAR: &str = "BOOKBROKER_TEST_RUNTIME";

/// `text` without ANSI colour sequences (the engine's log colours its fields).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A running engine.
pub struct Engine {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr/stdout log.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Engine {
    /// Starts `bookbroker serve` on a free port and waits until `/readyz` is 200.
    pub fn start(config: &Path, cores: usize) -> Engine {
        Engine::start_opts(config, cores, &EngineOptions::default())
    }

    /// Like [`Engine::start`], on a data directory the caller owns, so it outlives this
    /// process (a restart on the same directory finds what the last run stored).
    pub fn start_with(config: &Path, cores: usize, data_dir: &Path) -> Engine {
        Engine::start_opts(
            config,
            cores,
            &EngineOptions {
                data_dir: Some(data_dir.to_path_buf()),
                ..EngineOptions::default()
            },
        )
    }

    /// Like [`Engine::start_with`], on `addr` (typically the address of an engine that
    /// was just stopped or killed: a restart in place).
    pub fn start_at(config: &Path, cores: usize, data_dir: &Path, addr: SocketAddr) -> Engine {
        Engine::start_opts(
            config,
            cores,
            &EngineOptions {
                data_dir: Some(data_dir.to_path_buf()),
                listen: Some(addr),
                ..EngineOptions::default()
            },
        )
    }

    /// Like [`Engine::start`], with a data directory, address and environment of the
    /// caller's choosing.
    pub fn start_opts(config: &Path, cores: usize, opts: &EngineOptions) -> Engine {
        Engine::try_start_opts(config, cores, opts).unwrap_or_else(|why| panic!("{why}"))
    }

    /// Like [`Engine::start_opts`], but says why the engine did not come up (it exited,
    /// with its log; or it was not ready within 20 s) instead of panicking.
    pub fn try_start_opts(
        config: &Path,
        cores: usize,
        opts: &EngineOptions,
    ) -> Result<Engine, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("engine.log");
        let addr: SocketAddr = opts
            .listen
            .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()).parse().expect("addr"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut command = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin("bookbroker"));
                c
            }
            None => Command::new(bin("bookbroker")),
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--cores")
            .arg(cores.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(out)
            .stderr(err);
        let runtime = opts
            .runtime
            .clone()
            .or_else(|| std::env::var(RUNTIME_VAR).ok().filter(|r| !r.is_empty()));
        if let Some(runtime) = runtime {
            command.arg("--runtime").arg(runtime);
        }
        for (name, value) in &opts.env {
            command.env(name, value);
        }
        let child = command.spawn().expect("spawn bookbroker");
        let mut engine = Engine {
            child: Some(child),
            addr,
            log,
            _dir: dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = engine.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "bookbroker on {addr} exited early ({status}); sockets on port {}: \
                         {:?}\n{}",
                        addr.port(),
                        tcp_states_on_port(addr.port()),
                        engine.log_text()
                    ));
                }
            }
            if let Ok(mut c) = Client::try_connect(addr) {
                if c.request("GET", "/readyz", &[], b"")
                    .is_ok_and(|r| r.status == 200)
                {
                    return Ok(engine);
                }
            }
            if Instant::now() >= until {
                return Err(format!(
                    "bookbroker on {addr} not ready in 20 s:\n{}",
                    engine.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log so far, without colours.
    pub fn log_plain(&self) -> String {
        strip_ansi(&self.log_text())
    }

    /// The executor backend the engine chose (from the line it logs before its cores
    /// start).
    pub fn backend(&self) -> Option<String> {
        let log = self.log_plain();
        let line = log.lines().find(|l| l.contains("executor backend:"))?;
        let rest = line.split("runtime=").nth(1)?;
        Some(
            rest.trim_start_matches('"')
                .split(['"', ' '])
                .next()?
                .to_string(),
        )
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How many file descriptors the process has open now (`/proc/<pid>/fd`): sockets,
    /// files, eventfds, rings. Panics when the process is gone.
    pub fn open_fds(&self) -> usize {
        let pid = self.pid().expect("the engine is running");
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
            .count()
    }

    /// Resident memory of the process in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.pid().expect("the engine is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// A new client connection.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// `GET path` with the demo key.
    pub fn get(&self, path: &str) -> Resp {
        self.client().get(path, Some(KEY))
    }

    /// Sends SIGTERM and waits (up to `within`) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = i32::try_from(child.id()).ok()?;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.wait_exit(within)
    }

    /// Waits (up to `within`) for the process to exit by itself, and its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The value of an unlabelled metric on `/metrics` (panics when it is missing).
    pub fn metric(&self, name: &str) -> f64 {
        let text = self.client().get("/metrics", None).text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `kill -9`: SIGKILL, then waits for the process to be gone (so its files and
    /// locks are released before a restart on the same data directory). Its sockets may
    /// outlive it by some milliseconds, until the kernel tears down its io_uring; a
    /// restart on the same address has to cope with that, as after a real crash.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // `Child::kill` sends SIGKILL on Unix.
        let _ = child.kill();
        child.wait().ok()
    }

    /// `POST /v1/purchases` as customer `demo` on a new connection (panics on a
    /// connection error).
    pub fn purchase(&self, idempotency_key: &str, body: &str) -> Resp {
        self.client()
            .post_purchase(KEY, Some(idempotency_key), body.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("POST /v1/purchases: {e}"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts an RFC 9457 problem with this status.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let v = self.json();
        assert_eq!(v["status"], status);
        for k in ["type", "title", "detail"] {
            assert!(v[k].is_string(), "problem without {k}: {v}");
        }
    }
}

/// A blocking HTTP/1.1 client over one keep-alive connection.
pub struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects (panics on failure).
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).expect("connect")
    }

    /// Connects.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// `GET path`, with `Authorization: Bearer key` when given.
    pub fn get(&mut self, path: &str, key: Option<&str>) -> Resp {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.request("GET", path, &headers, b"")
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Changes how long a read may block (the default is 10 s).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    /// Waits up to `within` on an idle connection and tells whether the server closed it
    /// meanwhile, as a pooling client notices a keep-alive connection's end without
    /// writing to it. (Writing to it instead would draw a reset, which leaves the server
    /// side no TIME_WAIT entry.) Data arriving unasked counts as not closed.
    pub fn closed_within(&mut self, within: Duration) -> std::io::Result<bool> {
        let stream = self.reader.get_ref();
        let previous = stream.read_timeout()?;
        stream.set_read_timeout(Some(within))?;
        let seen = self.reader.fill_buf().map(|b| b.is_empty());
        self.reader.get_ref().set_read_timeout(previous)?;
        match seen {
            Ok(closed) => Ok(closed),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/purchases` with `Authorization: Bearer api_key`, `Content-Type:
    /// application/json`, the `Idempotency-Key` when given, and any `extra` headers.
    pub fn post_purchase(
        &mut self,
        api_key: &str,
        idempotency_key: Option<&str>,
        body: &[u8],
        extra: &[(&str, &str)],
    ) -> std::io::Result<Resp> {
        let auth = format!("Bearer {api_key}");
        let mut headers = vec![
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        if let Some(key) = idempotency_key {
            headers.push(("Idempotency-Key", key));
        }
        headers.extend_from_slice(extra);
        self.request("POST", "/v1/purchases", &headers, body)
    }

    /// Sends raw bytes and reads nothing.
    pub fn raw_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Sends raw bytes and reads one answer (or the error, e.g. a closed connection).
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<Resp> {
        self.reader.get_mut().write_all(bytes)?;
        self.read_response()
    }

    /// One request on this connection.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    fn read_response(&mut self) -> std::io::Result<Resp> {
        let closed = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(closed());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(closed());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(Resp {
            status,
            headers,
            body,
        })
    }
}

/// The sellers' statuses of a quote answer, by name.
pub fn statuses(quote: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    quote["sellers"]
        .as_array()
        .expect("sellers array")
        .iter()
        .map(|s| {
            (
                s["seller"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The API key of customer `bob` in the purchase scenarios (a second customer, to check
/// that one customer never sees another's purchases).
pub const BOB_KEY: &str = "bob-key-456";

/// A purchase request body (design section 2), by ISBN, condition `any`.
pub fn purchase_body(
    isbn: &str,
    max_price: i64,
    currency: &str,
    payment_token: &str,
    shipping_token: &str,
) -> String {
    serde_json::json!({
        "isbn": isbn,
        "max_price": max_price,
        "currency": currency,
        "condition": "any",
        "payment_token": payment_token,
        "shipping_token": shipping_token,
    })
    .to_string()
}

/// Whether an answer to `POST /v1/purchases` is final: anything but `202` (pending),
/// `409` (still running) and `503` (shed).
pub fn is_final(status: u16) -> bool {
    !matches!(status, 202 | 409 | 503)
}

/// Posts a purchase and repeats it (same key, same body, same headers) until the answer
/// is final, as a client whose wait ran out would; panics after `within`.
pub fn purchase_until_final(
    addr: SocketAddr,
    api_key: &str,
    idempotency_key: &str,
    body: &str,
    extra: &[(&str, &str)],
    within: Duration,
) -> Resp {
    let until = Instant::now() + within;
    let mut last = None;
    let mut refused_since: Option<Instant> = None;
    while Instant::now() < until {
        // Longer than the engine's default synchronous wait (10 s), so its 202 arrives.
        let answer = Client::try_connect(addr).and_then(|mut c| {
            c.set_read_timeout(Duration::from_secs(15))?;
            c.post_purchase(api_key, Some(idempotency_key), body.as_bytes(), extra)
        });
        let refused = match answer {
            Ok(r) if is_final(r.status) => return r,
            Ok(r) => {
                last = Some(format!("{} {}", r.status, r.text()));
                false
            }
            Err(e) => {
                last = Some(e.to_string());
                e.kind() == std::io::ErrorKind::ConnectionRefused
            }
        };
        // An engine that refuses connections for seconds is gone: say so at once.
        if refused {
            let since = *refused_since.get_or_insert_with(Instant::now);
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "purchase {idempotency_key}: the engine at {addr} refuses connections"
            );
        } else {
            refused_since = None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("purchase {idempotency_key} not final within {within:?}; last answer: {last:?}");
}

/// `GET path` until the purchase it shows is no longer `pending`; panics after
/// `within`.
pub fn poll_until_not_pending(
    addr: SocketAddr,
    api_key: &str,
    path: &str,
    within: Duration,
) -> Resp {
    let until = Instant::now() + within;
    loop {
        let r = Client::connect(addr).get(path, Some(api_key));
        let pending = r.status == 202
            || serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|v| v["status"] == "pending");
        if !pending {
            return r;
        }
        assert!(
            Instant::now() < until,
            "{path} still pending after {within:?}: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small deterministic random generator (splitmix64), so a failing run can be
/// repeated from its printed seed.
#[derive(Debug, Clone)]
pub struct Rng(bookbroker_sellersim::SplitMix64);

impl Rng {
    /// From a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(bookbroker_sellersim::SplitMix64::new(seed))
    }

    /// From env var `var` when set (a decimal seed), else from the clock; returns the
    /// seed too, to print.
    pub fn from_env_or_clock(var: &str) -> (Rng, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        (Rng::new(seed), seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// What the payment provider recorded about one authorization.
#[derive(Debug, Clone, Default)]
pub struct AuthRecord {
    /// `auth_N`.
    pub id: String,
    /// Amount held (minor units).
    pub amount: i64,
    /// Its currency.
    pub currency: String,
    /// The idempotency key the engine authorized with.
    pub idempotency_key: String,
    /// Its captures (the provider allows one; more would be a double charge).
    pub captures: Vec<LedgerEntry>,
    /// Whether it was voided.
    pub voided: bool,
    /// Refunds of its captures.
    pub refunds: usize,
}

/// The ledger grouped by authorization, in id order.
pub fn authorizations(ledger: &Ledger) -> BTreeMap<String, AuthRecord> {
    let mut auths: BTreeMap<String, AuthRecord> = BTreeMap::new();
    for e in &ledger.entries {
        if e.kind == LedgerKind::Decline {
            continue;
        }
        let record = auths
            .entry(e.authorization_id.clone())
            .or_insert_with(|| AuthRecord {
                id: e.authorization_id.clone(),
                ..AuthRecord::default()
            });
        match e.kind {
            LedgerKind::Authorization => {
                record.amount = e.amount;
                record.currency = e.currency.clone();
                record.idempotency_key = e.idempotency_key.clone();
            }
            LedgerKind::Capture => record.captures.push(e.clone()),
            LedgerKind::Void => record.voided = true,
            LedgerKind::Refund => record.refunds += 1,
            LedgerKind::Decline => {}
        }
    }
    auths
}

/// Checks the books: what customers were told against what the payment provider and the
/// sellers recorded. `answers` are the final purchase bodies customers received (one per
/// purchase). Returns every problem found (empty when the books agree):
/// - every authorization is either captured once or voided, never both, never neither;
/// - captures and `purchased` answers match one to one (same amount and currency);
/// - orders still standing (placed, not cancelled) and `purchased` answers match one to
///   one by (seller, seller_order_id): nobody pays for a book they do not get, and no
///   seller ships a book nobody paid for.
pub fn reconcile(
    answers: &[serde_json::Value],
    ledger: &Ledger,
    orders: &[SellerOrder],
) -> Vec<String> {
    let mut problems = Vec::new();
    for a in authorizations(ledger).values() {
        match (a.captures.len(), a.voided) {
            (1, false) | (0, true) => {}
            (0, false) => problems.push(format!("{} neither captured nor voided: {a:?}", a.id)),
            _ => problems.push(format!(
                "{} captured {} times, voided {}: {a:?}",
                a.id,
                a.captures.len(),
                a.voided
            )),
        }
    }
    let purchased: Vec<&serde_json::Value> = answers
        .iter()
        .filter(|v| v["status"] == "purchased")
        .collect();
    // A capture that was refunded charged nobody in the end.
    let mut captured: BTreeMap<(i64, String), usize> = BTreeMap::new();
    for a in authorizations(ledger).values().filter(|a| a.refunds == 0) {
        for e in &a.captures {
            *captured.entry((e.amount, e.currency.clone())).or_default() += 1;
        }
    }
    let mut told: BTreeMap<(i64, String), usize> = BTreeMap::new();
    for p in &purchased {
        let total = p["total"].as_i64().unwrap_or(-1);
        let currency = p["currency"].as_str().unwrap_or_default().to_string();
        *told.entry((total, currency)).or_default() += 1;
    }
    if captured != told {
        problems.push(format!(
            "captures (amount, currency) -> count {captured:?} differ from purchased totals {told:?}"
        ));
    }
    let mut standing: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in orders.iter().filter(|o| o.is_placed()) {
        *standing
            .entry((o.seller.clone(), o.order.order_id.clone()))
            .or_default() += 1;
    }
    let mut sold: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &purchased {
        let seller = p["seller"].as_str().unwrap_or_default().to_string();
        let order = p["seller_order_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *sold.entry((seller, order)).or_default() += 1;
    }
    for (order, n) in &standing {
        match sold.get(order) {
            Some(1) => {}
            Some(m) => problems.push(format!("order {order:?} reported to {m} customers")),
            None => problems.push(format!(
                "order {order:?} stands ({n}x) but no customer was told it was purchased"
            )),
        }
    }
    for order in sold.keys() {
        if !standing.contains_key(order) {
            problems.push(format!(
                "purchase reported with order {order:?}, which the seller does not have standing"
            ));
        }
    }
    problems
}

/// The `[fx]` table of an engine config (as `sellersim --emit-config` writes it): `base`
/// and `rates`, held exactly as [`FxTable`] holds them, so that amounts convert with the
/// engine's own rule (through the base, rounded once, half to even). Rates written as
/// TOML floats are read back as the shortest decimal text of the float, as the engine
/// reads them; integer rates are taken as they are.
pub fn fx_of_config(config_text: &str) -> Result<FxTable, String> {
    let config: toml::Table = config_text.parse().map_err(|e| format!("not TOML: {e}"))?;
    let fx = config
        .get("fx")
        .and_then(toml::Value::as_table)
        .ok_or("no [fx] table")?;
    let base = fx
        .get("base")
        .and_then(toml::Value::as_str)
        .ok_or("no fx.base")?;
    let base = Currency::parse(base).map_err(|e| format!("fx.base: {e}"))?;
    let mut rates: Vec<(Currency, String)> = Vec::new();
    if let Some(table) = fx.get("rates") {
        let table = table.as_table().ok_or("fx.rates is not a table")?;
        for (code, rate) in table {
            let currency = Currency::parse(code).map_err(|e| format!("fx.rates.{code}: {e}"))?;
            let text = match rate {
                toml::Value::Float(f) => FxTable::rate_text_from_f64(*f),
                toml::Value::Integer(i) => i.to_string(),
                other => return Err(format!("fx.rates.{code} is not a number: {other}")),
            };
            rates.push((currency, text));
        }
    }
    let pairs: Vec<(Currency, &str)> = rates.iter().map(|(c, t)| (*c, t.as_str())).collect();
    FxTable::new(base, &pairs).map_err(|e| format!("fx: {e}"))
}

/// How far (in the customer's minor units) a `purchased` total may be from the seller's
/// booked total converted as a whole, when the two currencies differ: the engine converts
/// price and shipping separately, each rounded, and adds them.
pub const CONVERSION_SLACK_MINOR: i64 = 2;

/// The strict bank check: everything [`reconcile`] checks, and that the amounts
/// themselves are right. `answers` are the final purchase bodies customers received (one
/// per purchase), `ledger` the payment provider's, `orders` every order of every seller,
/// `fx` the `[fx]` table of the engine config the engine ran with (see [`fx_of_config`] or
/// [`Sim::fx`]), and `max_price_of` gives the `max_price` the customer sent for the
/// purchase an answer belongs to (`None`: unknown, that check is skipped for it).
///
/// Returns every problem found (empty when the books agree). Beyond [`reconcile`]:
/// - every authorization holds a positive amount;
/// - every capture is of a positive amount (`> 0`), of an authorization the ledger
///   holds, in that authorization's currency, and at most its amount (the engine
///   authorizes the customer's `max_price`, so no capture may exceed it);
/// - every `purchased` answer has a positive integer `total` and a known `currency`, and
///   `total <= max_price_of(answer)` when that is known;
/// - every `purchased` answer names an order its seller recorded (by `seller` and
///   `seller_order_id`), and its `total` is what the seller *booked* for that order
///   (`total_minor` in the seller's currency, not what the confirmation said) converted
///   into the answer's `currency` with `fx`: exactly when the two currencies are the
///   same, within [`CONVERSION_SLACK_MINOR`] minor units otherwise. (A seller that books
///   in the customer's currency but confirms in another one, sellersim's
///   `other_currency` lie, makes the engine convert there and back, which may be one
///   minor unit off; this check then reports it, so give such sellers a currency other
///   than the customers'.)
pub fn reconcile_strict(
    answers: &[serde_json::Value],
    ledger: &Ledger,
    orders: &[SellerOrder],
    fx: &FxTable,
    max_price_of: impl Fn(&serde_json::Value) -> Option<i64>,
) -> Vec<String> {
    let mut problems = reconcile(answers, ledger, orders);
    let authorized: std::collections::BTreeSet<&str> = ledger
        .entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Authorization)
        .map(|e| e.id.as_str())
        .collect();
    for a in authorizations(ledger).values() {
        if authorized.contains(a.id.as_str()) && a.amount <= 0 {
            problems.push(format!("{} authorizes a non-positive amount: {a:?}", a.id));
        }
        for c in &a.captures {
            if c.amount <= 0 {
                problems.push(format!(
                    "capture {} of {} is not positive: {c:?}",
                    c.id, a.id
                ));
            }
            if !authorized.contains(a.id.as_str()) {
                problems.push(format!(
                    "capture {} of {}, which the ledger never authorized",
                    c.id, a.id
                ));
                continue;
            }
            if c.currency != a.currency {
                problems.push(format!(
                    "capture {} in {} of {} authorized in {}",
                    c.id, c.currency, a.id, a.currency
                ));
            }
            if c.amount > a.amount {
                problems.push(format!(
                    "capture {} of {} {} exceeds its authorization {} of {} {}",
                    c.id, c.amount, c.currency, a.id, a.amount, a.currency
                ));
            }
        }
    }
    for answer in answers.iter().filter(|v| v["status"] == "purchased") {
        problems.extend(check_purchased(answer, orders, fx, max_price_of(answer)));
    }
    problems
}

/// The amount checks of one `purchased` answer (see [`reconcile_strict`]).
fn check_purchased(
    answer: &serde_json::Value,
    orders: &[SellerOrder],
    fx: &FxTable,
    max_price: Option<i64>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let id = answer["id"].as_str().unwrap_or("?");
    let Some(total) = answer["total"].as_i64() else {
        return vec![format!("purchase {id}: total is not an integer: {answer}")];
    };
    let Some(currency) = answer["currency"]
        .as_str()
        .and_then(|c| Currency::parse(c).ok())
    else {
        return vec![format!("purchase {id}: unknown currency: {answer}")];
    };
    if total <= 0 {
        problems.push(format!("purchase {id}: total {total} is not positive"));
    }
    if let Some(max) = max_price {
        if total > max {
            problems.push(format!(
                "purchase {id}: total {total} {currency} exceeds max_price {max}"
            ));
        }
    }
    let seller = answer["seller"].as_str().unwrap_or_default();
    let order_id = answer["seller_order_id"].as_str().unwrap_or_default();
    let Some(order) = orders
        .iter()
        .find(|o| o.seller == seller && o.order.order_id == order_id)
    else {
        problems.push(format!(
            "purchase {id}: seller {seller:?} has no order {order_id:?}"
        ));
        return problems;
    };
    let booked = match Currency::parse(&order.order.currency) {
        Ok(c) => Money::new(order.order.total_minor, c),
        Err(e) => {
            problems.push(format!("order {order_id:?} of {seller:?}: {e}"));
            return problems;
        }
    };
    match fx.convert(booked, currency) {
        Ok(expected) => {
            let slack = if booked.currency == currency {
                0
            } else {
                CONVERSION_SLACK_MINOR
            };
            if (expected.minor - total).abs() > slack {
                problems.push(format!(
                    "purchase {id}: total {total} {currency}, but {seller:?} booked {booked} for \
                     order {order_id:?}, which is {expected} (slack {slack})"
                ));
            }
        }
        Err(e) => problems.push(format!(
            "purchase {id}: cannot convert {booked} booked by {seller:?} into {currency}: {e}"
        )),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CONFIG: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n\n[fx]\nbase = \"USD\"\n\n[fx.rates]\nEUR = 1.08\nGBP = 1.27\nJPY = 0.0067\n\n[[sellers]]\nname = \"s\"\n";

    fn entry(kind: LedgerKind, id: &str, auth: &str, amount: i64, key: &str) -> LedgerEntry {
        LedgerEntry {
            kind,
            id: id.into(),
            authorization_id: auth.into(),
            amount,
            currency: "USD".into(),
            idempotency_key: key.into(),
        }
    }

    fn order(seller: &str, id: &str, total_minor: i64, currency: &str) -> SellerOrder {
        SellerOrder {
            seller: seller.into(),
            order: AdminOrder {
                order_id: id.into(),
                offer_id: "o".into(),
                isbn: "9780131103627".into(),
                total_minor,
                currency: currency.into(),
                status: AdminOrderStatus::Placed,
                idempotency_key: "k".into(),
            },
        }
    }

    fn purchased(seller: &str, order_id: &str, total: i64) -> serde_json::Value {
        json!({"id": format!("pur_{order_id}"), "status": "purchased", "seller": seller,
               "seller_order_id": order_id, "total": total, "currency": "USD"})
    }

    #[test]
    fn fx_is_read_from_the_emitted_config() {
        let fx = fx_of_config(CONFIG).unwrap();
        assert_eq!(fx.base(), Currency::USD);
        assert_eq!(
            fx.convert(Money::new(1751, Currency::EUR), Currency::USD)
                .unwrap(),
            Money::new(1891, Currency::USD)
        );
        assert!(fx.knows(Currency::JPY) && !fx.knows(Currency::parse("CHF").unwrap()));
        let inline = fx_of_config("[fx]\nbase = \"EUR\"\nrates = { USD = 1 }\n").unwrap();
        assert_eq!(
            inline
                .convert(Money::new(100, Currency::USD), Currency::EUR)
                .unwrap(),
            Money::new(100, Currency::EUR)
        );
        assert!(fx_of_config("[server]\n").is_err());
        assert!(fx_of_config("[fx]\nbase = \"usd\"\n").is_err());
        assert!(fx_of_config("[fx]\nbase = \"USD\"\nrates = { EUR = \"x\" }\n").is_err());
    }

    #[test]
    fn strict_check_accepts_agreeing_books() {
        let fx = fx_of_config(CONFIG).unwrap();
        let ledger = Ledger {
            entries: vec![
                entry(LedgerKind::Authorization, "auth_1", "auth_1", 2000, "a1"),
                entry(LedgerKind::Capture, "ch_1", "auth_1", 1892, "c1"),
                entry(LedgerKind::Authorization, "auth_2", "auth_2", 3000, "a2"),
                entry(LedgerKind::Capture, "ch_2", "auth_2", 2500, "c2"),
            ],
        };
        let orders = vec![
            order("xml-eur", "x-1", 1751, "EUR"),
            order("json-usd", "so-1", 2500, "USD"),
        ];
        // 1892 is within the slack of the converted 1891 (price and shipping rounded apart).
        let answers = vec![
            purchased("xml-eur", "x-1", 1892),
            purchased("json-usd", "so-1", 2500),
        ];
        let max = |_: &serde_json::Value| Some(3000);
        assert_eq!(
            reconcile_strict(&answers, &ledger, &orders, &fx, max),
            Vec::<String>::new()
        );
    }

    #[test]
    fn strict_check_finds_wrong_amounts() {
        let fx = fx_of_config(CONFIG).unwrap();
        let ledger = Ledger {
            entries: vec![
                entry(LedgerKind::Authorization, "auth_1", "auth_1", 2000, "a1"),
                entry(LedgerKind::Capture, "ch_1", "auth_1", 2100, "c1"),
                entry(LedgerKind::Authorization, "auth_2", "auth_2", 3000, "a2"),
                entry(LedgerKind::Capture, "ch_2", "auth_2", 2499, "c2"),
                entry(LedgerKind::Authorization, "auth_3", "auth_3", 3000, "a3"),
                entry(LedgerKind::Capture, "ch_3", "auth_3", 1895, "c3"),
                entry(LedgerKind::Authorization, "auth_4", "auth_4", 3000, "a4"),
                entry(LedgerKind::Capture, "ch_4", "auth_4", -5, "c4"),
                entry(LedgerKind::Capture, "ch_5", "auth_9", 100, "c5"),
            ],
        };
        let orders = vec![
            order("json-usd", "so-1", 2100, "USD"),
            order("json-usd", "so-2", 2500, "USD"),
            order("xml-eur", "x-1", 1751, "EUR"),
            order("line-gbp", "LO1", 500, "GBP"),
        ];
        let answers = vec![
            purchased("json-usd", "so-1", 2100),
            // The seller booked 25.00 but the customer was told (and charged) 24.99.
            purchased("json-usd", "so-2", 2499),
            // 17.51 EUR is 18.91 USD; 18.95 is beyond the slack.
            purchased("xml-eur", "x-1", 1895),
            purchased("line-gbp", "LO1", -5),
        ];
        let max = |a: &serde_json::Value| (a["seller_order_id"] == "so-1").then_some(2000);
        let problems = reconcile_strict(&answers, &ledger, &orders, &fx, max);
        let has = |needle: &str| problems.iter().any(|p| p.contains(needle));
        assert!(
            has("capture ch_1 of 2100 USD exceeds its authorization auth_1"),
            "{problems:#?}"
        );
        assert!(
            has("purchase pur_so-1: total 2100 USD exceeds max_price 2000"),
            "{problems:#?}"
        );
        assert!(
            has("purchase pur_so-2: total 2499 USD, but \"json-usd\" booked 25.00 USD"),
            "{problems:#?}"
        );
        assert!(has("purchase pur_x-1: total 1895 USD"), "{problems:#?}");
        assert!(
            has("capture ch_4 of auth_4 is not positive"),
            "{problems:#?}"
        );
        assert!(
            has("purchase pur_LO1: total -5 is not positive"),
            "{problems:#?}"
        );
        assert!(
            has("capture ch_5 of auth_9, which the ledger never authorized"),
            "{problems:#?}"
        );
        assert!(!has("auth_9 authorizes"), "{problems:#?}");
        let missing = reconcile_strict(
            &[purchased("json-usd", "so-9", 100)],
            &Ledger {
                entries: Vec::new(),
            },
            &orders,
            &fx,
            |_| None,
        );
        assert!(
            missing.iter().any(|p| p.contains("has no order \"so-9\"")),
            "{missing:#?}"
        );
    }
}
