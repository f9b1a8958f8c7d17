//! Harness for bookbroker's integration tests: starts the real `sellersim` and
//! `bookbroker` binaries on loopback, talks HTTP/1.1 to them with a tiny blocking client,
//! and cleans up (every child is killed when its handle drops).
//!
//! The binaries must be built first (`cargo build --workspace --bins`; `make test` does).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("engine.log");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(bin("bookbroker"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--cores")
            .arg(cores.to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn bookbroker");
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
                    panic!("bookbroker exited early ({status}):\n{}", engine.log_text());
                }
            }
            if let Ok(mut c) = Client::try_connect(addr) {
                if c.request("GET", "/readyz", &[], b"")
                    .is_ok_and(|r| r.status == 200)
                {
                    return engine;
                }
            }
            assert!(
                Instant::now() < until,
                "bookbroker not ready in 20 s:\n{}",
                engine.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
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
