//! Which requests are measured, and the weight that makes the sample stand for all of them.
//!
//! Invariant: a sampled request carries `weight = 1 / rate` (`n` for one in `n`, `1 / p` for a
//! probability `p`), so weighted sums estimate totals over every request.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many requests are measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Sampling {
    /// Every request (weight 1).
    #[default]
    All,
    /// One request in `n`, deterministically (weight `n`); `n >= 1`.
    OneIn(u32),
    /// Each request independently with probability `p` in `(0, 1]` (weight `1 / p`).
    Probability(f64),
}

impl Sampling {
    /// Parses `all`, `1`, `1/N` (one in N) or a probability such as `0.05`.
    pub fn parse(s: &str) -> Option<Sampling> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Some(Sampling::All);
        }
        if let Some(n) = s.strip_prefix("1/") {
            return match n.trim().parse::<u32>().ok()? {
                0 => None,
                1 => Some(Sampling::All),
                n => Some(Sampling::OneIn(n)),
            };
        }
        let p: f64 = s.parse().ok()?;
        if p == 1.0 {
            Some(Sampling::All)
        } else if p > 0.0 && p < 1.0 {
            Some(Sampling::Probability(p))
        } else {
            None
        }
    }

    /// The weight a sampled request carries, or `None` for an invalid setting.
    pub fn weight(&self) -> Option<f64> {
        match *self {
            Sampling::All => Some(1.0),
            Sampling::OneIn(n) if n >= 1 => Some(f64::from(n)),
            Sampling::Probability(p) if p > 0.0 && p <= 1.0 => Some(1.0 / p),
            _ => None,
        }
    }
}

/// A [`Sampling`] with its state.
#[derive(Debug)]
pub(crate) struct RequestSampler {
    sampling: Sampling,
    weight: f64,
    seen: AtomicU64,
    /// `p` scaled to `u64::MAX`, for [`Sampling::Probability`].
    threshold: u64,
}

impl RequestSampler {
    pub(crate) fn new(sampling: Sampling, weight: f64) -> RequestSampler {
        let threshold = match sampling {
            Sampling::Probability(p) => (p * u64::MAX as f64) as u64,
            _ => u64::MAX,
        };
        RequestSampler {
            sampling,
            weight,
            seen: AtomicU64::new(0),
            threshold,
        }
    }

    /// Decides for one request: `Some(weight)` when it is measured.
    #[inline]
    pub(crate) fn sample(&self) -> Option<f64> {
        let take = match self.sampling {
            Sampling::All => true,
            Sampling::OneIn(n) => self
                .seen
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(u64::from(n)),
            Sampling::Probability(_) => random_u64() <= self.threshold,
        };
        take.then_some(self.weight)
    }
}

/// A per-thread xorshift64* generator: sampling needs speed, not quality.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            let addr = state as *const Cell<u64> as u64;
            let nanos = profwatch_model::timefmt::now_ns() as u64;
            x = (addr ^ nanos) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_weighs() {
        assert_eq!(Sampling::parse("1/10"), Some(Sampling::OneIn(10)));
        assert_eq!(Sampling::parse("0.25"), Some(Sampling::Probability(0.25)));
        assert_eq!(Sampling::parse("all"), Some(Sampling::All));
        assert_eq!(Sampling::parse("1"), Some(Sampling::All));
        assert_eq!(Sampling::parse("1/0"), None);
        assert_eq!(Sampling::parse("1.5"), None);
        assert_eq!(Sampling::OneIn(10).weight(), Some(10.0));
        assert_eq!(Sampling::Probability(0.25).weight(), Some(4.0));
    }

    #[test]
    fn one_in_n_takes_exactly_one_in_n() {
        let s = RequestSampler::new(Sampling::OneIn(4), 4.0);
        let taken = (0..400).filter_map(|_| s.sample()).count();
        assert_eq!(taken, 100);
    }

    #[test]
    fn probability_is_roughly_p() {
        let s = RequestSampler::new(Sampling::Probability(0.1), 10.0);
        let taken = (0..100_000).filter_map(|_| s.sample()).count();
        assert!((8_000..12_000).contains(&taken), "{taken}");
    }
}
