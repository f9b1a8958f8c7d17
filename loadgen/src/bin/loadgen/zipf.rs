//! Zipf popularity: item `k` (1-based rank) is drawn with probability proportional
//! to `1 / k^s`. A precomputed cumulative table and a binary search make one draw
//! cost about log2(n) comparisons, with no allocation.

use rand::Rng;

/// A Zipf(s) sampler over ranks `0..n` (rank 0 is the most popular).
#[derive(Debug, Clone)]
pub struct Zipf {
    /// `cdf[k]` = P(rank <= k), normalised so the last entry is exactly 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// Builds the table for `n` items with exponent `s` (0 = uniform).
    pub fn new(n: usize, s: f64) -> Result<Zipf, String> {
        if n == 0 {
            return Err("Zipf needs at least one item".into());
        }
        if !s.is_finite() || s < 0.0 {
            return Err(format!(
                "Zipf exponent must be a finite number >= 0, not {s}"
            ));
        }
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0f64;
        for k in 1..=n {
            sum += (k as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        if let Some(last) = cdf.last_mut() {
            // Rounding could leave the last entry a hair under 1; a draw of 0.99999…
            // must still land inside the table.
            *last = 1.0;
        }
        Ok(Zipf { cdf })
    }

    /// Number of items.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Draws a rank in `0..len()`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u: f64 = rng.gen();
        self.rank_for(u)
    }

    /// The rank whose cumulative interval holds `u` in `[0, 1)`.
    pub fn rank_for(&self, u: f64) -> usize {
        let k = self.cdf.partition_point(|&c| c <= u);
        k.min(self.cdf.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn histogram(z: &Zipf, draws: usize, seed: u64) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0usize; z.len()];
        for _ in 0..draws {
            counts[z.sample(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn s1_frequencies_follow_one_over_k() {
        let n = 1000;
        let z = Zipf::new(n, 1.0).unwrap();
        let draws = 400_000;
        let counts = histogram(&z, draws, 7);
        let h: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for k in [1usize, 2, 3, 5, 10] {
            let expected = draws as f64 / (k as f64 * h);
            let got = counts[k - 1] as f64;
            assert!(
                (got - expected).abs() < 0.05 * expected,
                "rank {k}: got {got}, expected {expected}"
            );
        }
        // Rank 1 is drawn about twice as often as rank 2 and ten times as often as rank 10.
        let r12 = counts[0] as f64 / counts[1] as f64;
        let r110 = counts[0] as f64 / counts[9] as f64;
        assert!((1.85..2.15).contains(&r12), "ratio 1:2 = {r12}");
        assert!((9.0..11.0).contains(&r110), "ratio 1:10 = {r110}");
        // The tail is reached too.
        assert!(counts[n / 2..].iter().sum::<usize>() > 0);
    }

    #[test]
    fn s0_is_uniform() {
        let z = Zipf::new(10, 0.0).unwrap();
        let counts = histogram(&z, 100_000, 3);
        for c in counts {
            assert!((9_000..11_000).contains(&c), "count {c}");
        }
    }

    #[test]
    fn larger_s_concentrates() {
        let z = Zipf::new(100, 2.0).unwrap();
        let counts = histogram(&z, 100_000, 5);
        // P(1) = 1/zeta(2) ~ 0.6079 for large n (0.6140 for n = 100).
        let p1 = counts[0] as f64 / 100_000.0;
        assert!((0.60..0.63).contains(&p1), "p1 = {p1}");
    }

    #[test]
    fn edges() {
        let z = Zipf::new(1, 1.0).unwrap();
        assert_eq!(z.rank_for(0.0), 0);
        assert_eq!(z.rank_for(0.999_999_999), 0);
        let z = Zipf::new(4, 1.0).unwrap();
        assert_eq!(z.rank_for(0.0), 0);
        assert_eq!(z.rank_for(1.0), 3);
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(3, -1.0).is_err());
        assert!(Zipf::new(3, f64::NAN).is_err());
    }
}
