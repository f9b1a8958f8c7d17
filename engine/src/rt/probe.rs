//! What the host allows: io_uring (asked of the kernel itself), the locked-memory limit,
//! the kernel version.

use std::fmt;

/// Why io_uring cannot be used here, in words for the log and for errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoUringRefusal {
    why: String,
}

impl IoUringRefusal {
    /// A refusal explained by `why`.
    pub fn new(why: String) -> IoUringRefusal {
        IoUringRefusal { why }
    }
}

impl fmt::Display for IoUringRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

/// `struct io_uring_params` is 120 bytes; the kernel reads `flags` (the third `u32`) and
/// fills in the rest, `features` (the sixth `u32`) among it.
const PARAMS_WORDS: usize = 30;
const FLAGS_WORD: usize = 2;
const FEATURES_WORD: usize = 5;

/// `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12): `io_uring_enter` honours a minimum wait, the
/// `min_wait_usec` of `struct io_uring_getevents_arg`, which older kernels refuse.
pub const FEAT_MIN_TIMEOUT: u32 = 1 << 15;

/// Whether this process may use io_uring with setup `flags`: `None` when it may, else
/// why not. Asks the kernel the way a runtime would: `io_uring_setup` (a ring of two
/// entries) and an empty `io_uring_enter`, then closes the ring. A seccomp profile
/// (Docker's default answers `EPERM`), `kernel.io_uring_disabled`, an old kernel or
/// flags it does not know all show up here as the error they would give the runtime.
pub fn io_uring_refusal(flags: u32) -> Option<IoUringRefusal> {
    io_uring_features(flags).err()
}

/// The `IORING_FEAT_*` bits of a ring set up with `flags`, or why this process may not
/// use io_uring with them; the probe is [`io_uring_refusal`]'s.
pub fn io_uring_features(flags: u32) -> Result<u32, IoUringRefusal> {
    let mut params = [0u32; PARAMS_WORDS];
    if let Some(f) = params.get_mut(FLAGS_WORD) {
        *f = flags;
    }
    // SAFETY: io_uring_setup reads and writes exactly one `struct io_uring_params` (120
    // bytes) at the pointer, which `params` provides; it has no other effect than
    // returning a new file descriptor, which we close below. No crate exposes the probe
    // without also building a whole ring, so the syscall is made directly, here in the
    // seam and nowhere else.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 2u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(explain(std::io::Error::last_os_error(), "io_uring_setup"));
    }
    let features = params.get(FEATURES_WORD).copied().unwrap_or(0);
    let fd = fd as libc::c_int;
    // SAFETY: an io_uring_enter with nothing to submit and nothing to wait for only
    // checks that the call is allowed and the descriptor is a ring; the null signal-mask
    // pointer with size 0 is documented as "no mask".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            fd,
            0u32,
            0u32,
            0u32,
            std::ptr::null::<libc::c_void>(),
            0usize,
        )
    };
    let enter_err = (rc < 0).then(std::io::Error::last_os_error);
    // SAFETY: `fd` is the ring descriptor io_uring_setup returned to us and nothing else
    // holds it.
    unsafe { libc::close(fd) };
    match enter_err {
        Some(e) => Err(explain(e, "io_uring_enter")),
        None => Ok(features),
    }
}

fn explain(err: std::io::Error, call: &str) -> IoUringRefusal {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let errno = err.raw_os_error().unwrap_or(0);
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        _ => "",
    };
    let code = if name.is_empty() {
        err.to_string()
    } else {
        name.to_string()
    };
    let cause = match (errno, disabled) {
        (libc::EPERM, 2) => "kernel.io_uring_disabled = 2".to_string(),
        (libc::EPERM, 1) => {
            "kernel.io_uring_disabled = 1 and this process is not in kernel.io_uring_group"
                .to_string()
        }
        (libc::EPERM, _) => "seccomp? Docker's default profile refuses io_uring".to_string(),
        (libc::ENOSYS, _) => "a kernel without io_uring, or a seccomp profile".to_string(),
        (libc::EINVAL, _) => "a kernel too old for the ring flags needed".to_string(),
        (libc::ENOMEM, _) => format!(
            "the locked-memory limit here is {} (`ulimit -l`): raise it with `ulimit -l \
             unlimited`, LimitMEMLOCK=infinity in a systemd unit, or --ulimit memlock=-1 for \
             Docker",
            memlock_limit().map_or("unlimited".to_string(), |n| format!("{} KiB", n / 1024))
        ),
        _ => String::new(),
    };
    let why = if cause.is_empty() {
        format!("io_uring refused by the kernel: {call}: {code}")
    } else {
        format!("io_uring refused by the kernel: {call}: {code} ({cause})")
    };
    IoUringRefusal { why }
}

/// The soft locked-memory limit in bytes; `None` when unlimited (or unknown, which
/// then cannot be held against anything).
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and has no other effect.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(lim.rlim_cur)
}

/// The running kernel's (major, minor) version.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_flags_are_refused_with_einval() {
        // Bit 31 is no io_uring setup flag on any kernel.
        let r = io_uring_refusal(1 << 31);
        if let Some(r) = r {
            assert!(r.to_string().contains("io_uring refused"), "{r}");
        }
        assert!(kernel_version().is_some());
    }
}
