//! A fault-injecting TCP proxy for the integration tests: it sits on loopback between
//! the engine and one partner (a seller or the payment provider), passes bytes through,
//! and, when told to, breaks the conversation the way networks and partners break it.
//!
//! Std threads only: one accepting thread, and two per proxied connection (client to
//! partner, partner to client). A fault is taken when a connection is accepted; changing
//! it ([`FaultProxy::set`]) closes every connection the proxy holds, so the next
//! exchange starts on a connection with the new fault. A [`Trigger`] narrows a fault to
//! the exchange whose request contains a byte pattern (an order, an authorization) and
//! everything after it on that connection; a TLS connection can only use
//! [`Trigger::Always`], since the proxy sees ciphertext.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the proxy breaks an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through.
    None,
    /// Hold each chunk of the answer this long before passing it on.
    Latency(Duration),
    /// Pass half of the answer's first chunk, then reset the connection (RST).
    ResetMidAnswer,
    /// Pass the answer on one byte per 100 ms.
    SlowDrip,
    /// Do not pass the request on; close our sending side towards the client (FIN) and
    /// keep reading, so the client sees the end of the stream and no answer.
    HalfClose,
    /// Accept and read everything; never answer, never close.
    Blackhole,
    /// Do not pass the request on; answer with a line of garbage bytes.
    Garbage,
}

impl Fault {
    /// Every fault that breaks something, for a test matrix.
    pub const ALL: [Fault; 6] = [
        Fault::Latency(Duration::from_millis(1200)),
        Fault::ResetMidAnswer,
        Fault::SlowDrip,
        Fault::HalfClose,
        Fault::Blackhole,
        Fault::Garbage,
    ];

    /// A short name, for messages and tables.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Latency(_) => "latency",
            Fault::ResetMidAnswer => "reset mid-answer",
            Fault::SlowDrip => "slow drip",
            Fault::HalfClose => "half-close",
            Fault::Blackhole => "blackhole",
            Fault::Garbage => "garbage",
        }
    }
}

/// Which exchanges a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Every exchange.
    Always,
    /// The exchange whose request (one read from the client) contains these bytes, and
    /// everything after it on that connection.
    On(Vec<u8>),
}

/// A running proxy; dropping it stops it and closes its connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    target: SocketAddr,
    fault: Mutex<(Fault, Trigger)>,
    /// Both ends of every live connection, by id, to close them on a change of fault.
    conns: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            fault: Mutex::new((Fault::None, Trigger::Always)),
            conns: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accepting);
                thread::spawn(move || proxy(client, &shared));
            }
        });
        FaultProxy { addr, shared }
    }

    /// Where the proxy listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to connections from now on, as `trigger` says, after closing
    /// every connection the proxy holds.
    pub fn set(&self, fault: Fault, trigger: Trigger) {
        *self.shared.fault.lock().expect("fault lock") = (fault, trigger);
        self.close_all();
    }

    /// Back to passing everything through (closing every connection held).
    pub fn clear(&self) {
        self.set(Fault::None, Trigger::Always);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().expect("conns lock").len()
    }

    fn close_all(&self) {
        let conns = std::mem::take(&mut *self.shared.conns.lock().expect("conns lock"));
        for (_, client, upstream) in conns {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.close_all();
    }
}

/// Serves one client connection until either side is done.
fn proxy(client: TcpStream, shared: &Arc<Shared>) {
    let (fault, trigger) = shared.fault.lock().expect("fault lock").clone();
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    shared.conns.lock().expect("conns lock").push((id, c, u));
    let triggered = Arc::new(AtomicBool::new(trigger == Trigger::Always));

    let requests = {
        let (Ok(client), Ok(upstream)) = (client.try_clone(), upstream.try_clone()) else {
            return;
        };
        let triggered = Arc::clone(&triggered);
        thread::spawn(move || client_to_partner(client, upstream, fault, &trigger, &triggered))
    };
    partner_to_client(&client, &upstream, fault, &triggered, shared, id);
    forget(shared, id);
    // Closing our ends; in a reset the client's end was set to linger 0 first.
    drop(client);
    drop(upstream);
    let _ = requests.join();
}

fn forget(shared: &Shared, id: u64) {
    shared
        .conns
        .lock()
        .expect("conns lock")
        .retain(|(i, _, _)| *i != id);
}

fn client_to_partner(
    mut client: TcpStream,
    mut upstream: TcpStream,
    fault: Fault,
    trigger: &Trigger,
    triggered: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut garbage_seed = 0x9E37_79B9_7F4A_7C15u64;
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = upstream.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if let Trigger::On(pattern) = trigger {
            if !pattern.is_empty() && chunk.windows(pattern.len()).any(|w| w == &pattern[..]) {
                triggered.store(true, Ordering::SeqCst);
            }
        }
        if !triggered.load(Ordering::SeqCst) {
            if upstream.write_all(chunk).is_err() {
                return;
            }
            continue;
        }
        match fault {
            Fault::Blackhole => {}
            Fault::Garbage => {
                let mut line = Vec::with_capacity(49);
                for _ in 0..48 {
                    garbage_seed = garbage_seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    // Printable, never a line feed: one line the client cannot read.
                    line.push(b'!' + ((garbage_seed >> 33) % 94) as u8);
                }
                line.push(b'\n');
                if client.write_all(&line).is_err() {
                    return;
                }
            }
            Fault::HalfClose => {
                let _ = client.shutdown(Shutdown::Write);
                let _ = upstream.shutdown(Shutdown::Both);
            }
            Fault::None | Fault::Latency(_) | Fault::ResetMidAnswer | Fault::SlowDrip => {
                if upstream.write_all(chunk).is_err() {
                    return;
                }
            }
        }
    }
}

fn partner_to_client(
    client: &TcpStream,
    upstream: &TcpStream,
    fault: Fault,
    triggered: &AtomicBool,
    shared: &Shared,
    id: u64,
) {
    let mut client = client;
    let mut upstream = upstream;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match upstream.read(&mut buf) {
            Ok(0) | Err(_) => {
                // A half-closed or blackholed client keeps its connection: only the
                // proxy's own `set` or drop ends it.
                if triggered.load(Ordering::SeqCst)
                    && matches!(fault, Fault::HalfClose | Fault::Blackhole)
                {
                    wait_until_closed(client);
                } else {
                    let _ = client.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if !triggered.load(Ordering::SeqCst) {
            if client.write_all(chunk).is_err() {
                return;
            }
            continue;
        }
        match fault {
            Fault::None | Fault::Garbage | Fault::HalfClose => {
                if !matches!(fault, Fault::HalfClose) && client.write_all(chunk).is_err() {
                    return;
                }
            }
            Fault::Blackhole => {}
            Fault::Latency(d) => {
                thread::sleep(d);
                if client.write_all(chunk).is_err() {
                    return;
                }
            }
            Fault::SlowDrip => {
                for byte in chunk {
                    if client.write_all(std::slice::from_ref(byte)).is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
            Fault::ResetMidAnswer => {
                let _ = client.write_all(&chunk[..n / 2]);
                reset(client);
                forget(shared, id);
                let _ = upstream.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Waits until the client's connection is shut down (by [`FaultProxy::set`] or drop):
/// peeking blocks until then, without taking bytes the other thread reads.
fn wait_until_closed(client: &TcpStream) {
    let mut byte = [0u8; 1];
    while let Ok(n) = client.peek(&mut byte) {
        if n == 0 {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Makes the connection end with a reset: linger 0, then wake the reading thread so
/// every descriptor of the socket is closed.
fn reset(client: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    let _ = client.shutdown(Shutdown::Read);
}
