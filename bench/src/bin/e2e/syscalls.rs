//! System calls and io_uring submissions of one process over a measured window, counted
//! by `perf stat` on the kernel's tracepoints. Optional: without perf, or where tracefs
//! is not readable, the columns stay empty and the benchmark goes on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The tracepoints counted, and the column each one adds to.
const EVENTS: [(&str, Kind); 12] = [
    ("raw_syscalls:sys_enter", Kind::All),
    ("syscalls:sys_enter_io_uring_enter", Kind::RingEnter),
    ("io_uring:io_uring_submit_req", Kind::RingOp),
    ("syscalls:sys_enter_sendto", Kind::SocketIo),
    ("syscalls:sys_enter_recvfrom", Kind::SocketIo),
    ("syscalls:sys_enter_sendmsg", Kind::SocketIo),
    ("syscalls:sys_enter_recvmsg", Kind::SocketIo),
    ("syscalls:sys_enter_read", Kind::SocketIo),
    ("syscalls:sys_enter_write", Kind::SocketIo),
    ("syscalls:sys_enter_writev", Kind::SocketIo),
    ("syscalls:sys_enter_epoll_wait", Kind::Wait),
    ("syscalls:sys_enter_epoll_pwait", Kind::Wait),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    All,
    RingEnter,
    RingOp,
    SocketIo,
    Wait,
}

/// Counts over one window.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Syscalls {
    /// Every system call.
    pub(crate) all: u64,
    /// `io_uring_enter`.
    pub(crate) ring_enter: u64,
    /// Operations submitted to io_uring rings.
    pub(crate) ring_ops: u64,
    /// Plain socket reads and writes (`sendto`, `recvfrom`, `read`, `write`, …).
    pub(crate) socket_io: u64,
    /// `epoll_wait` and `epoll_pwait`.
    pub(crate) waits: u64,
}

/// A running `perf stat` attached to a process.
pub(crate) struct Counting {
    child: Child,
    out: PathBuf,
}

/// Starts counting the system calls of `pid`; `None` if perf cannot.
pub(crate) fn start(pid: u32, out_dir: &Path, name: &str) -> Option<Counting> {
    // perf needs tracefs for tracepoints; mounting it is harmless where it is already.
    if !Path::new("/sys/kernel/tracing/events/raw_syscalls").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .stderr(Stdio::null())
            .status();
    }
    let events: Vec<&str> = EVENTS.iter().map(|(e, _)| *e).collect();
    let out = out_dir.join(format!("{name}.perf"));
    let child = Command::new("perf")
        .args(["stat", "-x", ",", "-o"])
        .arg(&out)
        .args(["-e", &events.join(",")])
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Counting { child, out })
}

impl Counting {
    /// Stops perf and reads its counts; `None` if it failed.
    pub(crate) fn stop(mut self) -> Option<Syscalls> {
        // perf prints its counts when interrupted.
        let pid = libc::pid_t::try_from(self.child.id()).ok()?;
        // SAFETY: kill(2) with a child's pid we own; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.child.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok()?;
        let mut s = Syscalls::default();
        let mut seen = false;
        for line in text.lines() {
            let mut cols = line.split(',');
            let (Some(count), Some(_unit), Some(event)) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            let Ok(count) = count.trim().parse::<u64>() else {
                continue;
            };
            let Some((_, kind)) = EVENTS.iter().find(|(e, _)| *e == event.trim()) else {
                continue;
            };
            seen = true;
            let slot = match kind {
                Kind::All => &mut s.all,
                Kind::RingEnter => &mut s.ring_enter,
                Kind::RingOp => &mut s.ring_ops,
                Kind::SocketIo => &mut s.socket_io,
                Kind::Wait => &mut s.waits,
            };
            *slot += count;
        }
        seen.then_some(s)
    }
}
