//! Time for the scheduler: a nanosecond monotonic clock and a precise periodic timer.
//!
//! tokio's timer wheel has a resolution of one millisecond, so releasing requests from
//! `tokio::time::interval` would let every request wait up to a millisecond past its
//! intended time, and that wait would be charged to the server as latency. A Linux
//! `timerfd` (an hrtimer behind a file descriptor, polled by tokio's reactor like a
//! socket) fires within microseconds of the intended time instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Nanoseconds on `CLOCK_MONOTONIC` (the clock `std::time::Instant` also reads).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on
    // Linux, so the call cannot fail (and a failure would leave `ts` at zero).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// A periodic timer on `CLOCK_MONOTONIC`, first firing at an absolute time.
pub struct Ticker {
    fd: AsyncFd<OwnedFd>,
}

impl Ticker {
    /// Fires at `first_ns` (absolute, as returned by [`now_ns`]) and then every
    /// `interval_ns`. Must be called inside a tokio runtime with I/O enabled.
    pub fn new(first_ns: u64, interval_ns: u64) -> io::Result<Ticker> {
        // SAFETY: plain syscall with constant flags; the result is checked.
        let raw: RawFd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let spec = libc::itimerspec {
            it_interval: timespec(interval_ns.max(1)),
            // An all-zero it_value would disarm the timer.
            it_value: timespec(first_ns.max(1)),
        };
        // SAFETY: `fd` is a valid timerfd, `spec` is a valid itimerspec, and the old
        // value pointer may be null.
        let rc = unsafe {
            libc::timerfd_settime(
                fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which alone owns it until it
        // is dropped, so the descriptor stays open and refers to this timer throughout.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Ticker { fd })
    }

    /// Waits for the next expiry and returns how many expiries happened since the last
    /// call (more than one when the caller fell behind).
    ///
    /// The expiry count must be read: a timerfd stays readable until it is, and tokio's
    /// edge-triggered registration would then never report the next expiry.
    pub async fn tick(&self) -> io::Result<u64> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [0u8; 8];
            let read = guard.try_io(|fd| {
                // SAFETY: `buf` is 8 writable bytes, the size a timerfd read needs, and
                // the descriptor stays open for the duration of the call.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(Ok(())) => {
                    // Drained: the timerfd stays unreadable until the next expiry.
                    // Without this, tokio would still think it readable and the
                    // next call would spend a read() only to learn otherwise, one
                    // wasted syscall per tick. (A newer expiry's event is not lost:
                    // tokio clears only the readiness this guard saw.)
                    guard.clear_ready();
                    return Ok(u64::from_ne_bytes(buf));
                }
                Ok(Err(e)) => return Err(e),
                // Spurious readiness: `try_io` cleared it; wait for the next expiry.
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert!(a > 0);
    }

    #[test]
    fn ticker_fires_on_time() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let start = now_ns() + 2_000_000;
            let t = Ticker::new(start, 500_000).unwrap();
            for _ in 0..5 {
                t.tick().await.unwrap();
            }
            let now = now_ns();
            // Five expiries, at start + 0..4 * 0.5 ms: not before the fifth.
            assert!(
                now >= start + 2_000_000,
                "too early by {} ns",
                start + 2_000_000 - now
            );
            assert!(now < start + 200_000_000);
        });
    }
}
