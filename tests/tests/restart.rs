//! Restarting in place: a service manager (systemd, Kubernetes) restarts a stopped or
//! crashed engine on the same address at once. Under keep-alive load the connections the
//! old engine closed linger in TIME_WAIT on the server's port for a minute, and after a
//! `kill -9` its listeners outlive it by some milliseconds; neither may keep the new
//! engine from listening there. A port another live process listens on must still be
//! refused with a clear message.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bookbroker_tests::{bin, tcp_states_on_port, Client, Engine, EngineOptions, Sim, KEY};

/// Busy keep-alive connections: a quote every few milliseconds each.
const BUSY_CONNECTIONS: usize = 8;

/// Idle keep-alive connections (a client's pool of spare connections): one quote, then
/// open and silent until the server closes them.
const IDLE_CONNECTIONS: usize = 4;

/// How soon a restarted engine must serve: it should start as fast as a first start.
const RESTART_WITHIN: Duration = Duration::from_secs(5);

/// Keep-alive clients sending quotes, each on its own connection, until stopped. A
/// client closes its connection at once when the server closes it or it breaks (as a
/// load balancer or a browser would), then reconnects after a short pause.
///
/// The server's side of a connection it closed ends in TIME_WAIT once the client
/// closes too; a reset ends it without one. After a `kill -9` the kernel may close a
/// busy connection only after the client sent its next request, which then draws a
/// reset: the idle connections are the ones sure to leave TIME_WAIT entries.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, isbns: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let threads = (0..BUSY_CONNECTIONS + IDLE_CONNECTIONS)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let answered = Arc::clone(&answered);
                let path = format!("/v1/quotes?isbn={}", isbns[i % isbns.len()]);
                // Busy connections pause briefly between quotes, idle ones as long as
                // the connection stays open (checking for the stop now and then).
                let (pause, busy) = if i < BUSY_CONNECTIONS {
                    (Duration::from_millis(10), true)
                } else {
                    (Duration::from_millis(100), false)
                };
                std::thread::spawn(move || {
                    let auth = format!("Bearer {KEY}");
                    let mut conn: Option<Client> = None;
                    while !stop.load(Ordering::SeqCst) {
                        let Some(client) = conn.as_mut() else {
                            conn = Client::try_connect(addr).ok().and_then(|mut c| {
                                match c.request("GET", &path, &[("Authorization", &auth)], b"") {
                                    Ok(r) if r.status == 200 => {
                                        answered.fetch_add(1, Ordering::SeqCst);
                                        Some(c)
                                    }
                                    Ok(r) => panic!("quote answered {}: {}", r.status, r.text()),
                                    Err(_) => None,
                                }
                            });
                            if conn.is_none() {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            continue;
                        };
                        // Wait on the open connection, noticing at once when the server
                        // closes it.
                        if !client.closed_within(pause).is_ok_and(|closed| !closed) {
                            conn = None;
                            continue;
                        }
                        if !busy {
                            continue;
                        }
                        match client.request("GET", &path, &[("Authorization", &auth)], b"") {
                            Ok(r) if r.status == 200 => {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => panic!("quote answered {}: {}", r.status, r.text()),
                            Err(_) => conn = None,
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answered,
            threads,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Waits until `n` more answers than `from` arrived; false after `within`.
    fn wait_for(&self, from: usize, n: usize, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.answered() >= from + n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread");
        }
    }
}

/// Runs an engine under keep-alive load, stops it with `stop`, and restarts it at once on
/// the same address and data directory; the new engine must serve the same clients
/// within [`RESTART_WITHIN`].
///
/// The restart does not wait for anything: the old engine's listeners may still be
/// being released (see `ADDRESS_RELEASE_WAIT` in the engine), and the connections it
/// closed are in TIME_WAIT, or get there as the clients close them, while the new engine
/// checks the port. That the port then holds TIME_WAIT entries is checked once the new
/// engine serves (they last a minute), so the test cannot pass without them.
fn restart_in_place_under_load(stop: impl FnOnce(&mut Engine)) {
    let sim = Sim::start("three_protocols.toml");
    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::start_with(&sim.config, 2, data.path());
    let addr = engine.addr;
    let load = Load::start(addr, &sim.isbns);
    assert!(
        load.wait_for(0, 200, Duration::from_secs(10)),
        "the load got only {} answers:\n{}",
        load.answered(),
        engine.log_text()
    );

    stop(&mut engine);
    let at_stop = tcp_states_on_port(addr.port());
    let started = Instant::now();
    let opts = EngineOptions {
        data_dir: Some(data.path().to_path_buf()),
        listen: Some(addr),
        ..EngineOptions::default()
    };
    let restarted = Engine::try_start_opts(&sim.config, 2, &opts);
    let took = started.elapsed();
    let after = tcp_states_on_port(addr.port());
    eprintln!(
        "port {}: {at_stop:?} when the old engine was gone, {after:?} once the restart was \
         over ({took:?})",
        addr.port()
    );
    let engine = restarted.unwrap_or_else(|why| {
        panic!("the restart on {addr} failed after {took:?}; the port showed {at_stop:?}, then {after:?}:\n{why}")
    });
    assert!(
        after.get("TIME-WAIT").copied().unwrap_or(0) > 0,
        "no TIME_WAIT entry on the server's port {}: the test did not test the restart \
         next to them ({at_stop:?}, then {after:?})",
        addr.port()
    );
    assert!(took < RESTART_WITHIN, "the restart on {addr} took {took:?}");
    let before = load.answered();
    assert!(
        load.wait_for(before, 100, RESTART_WITHIN),
        "the clients got only {} answers from the restarted engine:\n{}",
        load.answered() - before,
        engine.log_text()
    );
    load.stop();
}

#[test]
fn restarts_on_the_same_address_right_after_kill_9_under_keep_alive_load() {
    restart_in_place_under_load(|engine| {
        engine.kill9();
    });
}

#[test]
fn restarts_on_the_same_address_right_after_sigterm_under_keep_alive_load() {
    restart_in_place_under_load(|engine| {
        let status = engine
            .terminate(Duration::from_secs(10))
            .expect("exited within 10 s of SIGTERM");
        assert!(status.success(), "{status}");
    });
}

/// Runs `bookbroker serve` on `addr` and expects it to give up on its own within 10 s;
/// returns its stderr.
fn serve_expecting_refusal(sim: &Sim, addr: SocketAddr) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("bookbroker"))
        .args(["serve", "--cores", "2", "--listen", &addr.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&sim.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second engine on {addr} is still running after 10 s: it shares the port");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{status}: {err}");
    err
}

#[test]
fn a_second_engine_on_the_address_of_a_live_one_is_refused_clearly() {
    // The live engine's listeners use SO_REUSEPORT under the same user, which the kernel
    // would let a second engine join; and under load the port also has established and
    // TIME_WAIT connections, which must not confuse the check either way.
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 2);
    let addr = engine.addr;
    let load = Load::start(addr, &sim.isbns);
    assert!(load.wait_for(0, 100, Duration::from_secs(10)));

    let err = serve_expecting_refusal(&sim, addr);
    assert!(
        err.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{err}"
    );
    assert!(err.contains("stop the other process"), "{err}");

    // The live engine kept its port and its clients.
    let before = load.answered();
    assert!(load.wait_for(before, 50, Duration::from_secs(5)));
    load.stop();
    assert_eq!(engine.get("/readyz").status, 200);
}
