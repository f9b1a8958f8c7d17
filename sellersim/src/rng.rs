//! Small random number tools.
//!
//! The catalogue must be identical on every run, machine and library version, so it uses
//! its own SplitMix64 rather than a library generator whose stream may change between
//! releases. Per-request decisions (latency, faults) use a thread-local generator seeded
//! from the OS so that worker threads never contend on a shared one.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for simulation.
/// The same seed gives the same stream everywhere: the catalogue and the test suite's
/// random choices (`bookbroker-tests`) both rely on it.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// From a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }

    /// Uniform in `[0, 1)`.
    #[cfg(test)]
    pub(crate) fn unit(&mut self) -> f64 {
        unit_from(self.next_u64())
    }

    /// Uniform in `[0, n)`; `n` must be positive (0 gives 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[lo, hi]` (inclusive); `lo <= hi`.
    pub(crate) fn between(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + self.below(span) as i64
    }
}

/// The SplitMix64 output function: a good 64-bit mixer.
pub(crate) fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit_from(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// FNV-1a of bytes: a stable hash (std's hashers are randomly keyed).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Combines two values into a well-mixed one.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    finalize(a ^ finalize(b.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// A stable value in `[0, 1)` for a key (deterministic decisions, e.g. drift per
/// idempotency key so that a retried order meets the same price).
pub(crate) fn unit_of(seed: u64, key: &[u8]) -> f64 {
    unit_from(mix(seed, fnv1a(key)))
}

thread_local! {
    static LOCAL: Cell<u64> = Cell::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
}

/// Per-thread random `u64`.
pub(crate) fn fast_u64() -> u64 {
    LOCAL.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        finalize(next)
    })
}

/// Per-thread uniform value in `[0, 1)`.
pub(crate) fn fast_unit() -> f64 {
    unit_from(fast_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_stable() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let v = r.between(5, 9);
            assert!((5..=9).contains(&v));
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(r.between(3, 3), 3);
    }
}
