//! A weighted quantile sketch with bounded relative error.
//!
//! Values are mapped to logarithmic buckets: bucket `i` holds `(γ^(i-1), γ^i]` with
//! `γ = (1+α)/(1-α)` and is represented by `2γ^i/(γ+1)`, so any quantile is within `α` (0.5%)
//! of a true sample value. The ClickHouse store applies the same mapping in SQL
//! ([`SQL_BUCKET_EXPR`]) so both stores answer alike. Buckets are kept in a dense vector over
//! the range seen, which stays small because one endpoint's costs span few decades.

/// Relative accuracy of every quantile.
pub const RELATIVE_ACCURACY: f64 = 0.005;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// The bucket representative as a ClickHouse expression of `{x}`; the same mapping as
/// [`bucket_value`]. `{x}` must be replaced by a column name.
pub const SQL_BUCKET_EXPR: &str =
    "if({x} <= 0, 0, 2 * pow(1.01005025125628, ceil(log({x}) / log(1.01005025125628))) / 2.01005025125628)";

/// Bucket index of a positive value: `ceil(ln(x) / ln(γ))`. `ln` is computed from the float's
/// exponent and a table of `log2` over the top mantissa bits with linear interpolation (error
/// below 1e-7 in `log2`), several times faster than `f64::ln` on the query hot path; a value within
/// that error of a bucket boundary may land in the neighbouring bucket, which moves a quantile by
/// at most one bucket width (still within twice the relative accuracy).
pub fn bucket_index(x: f64) -> i32 {
    (fast_log2(x) * log2_to_bucket()).ceil() as i32
}

const TABLE_BITS: u32 = 10;

fn log2_table() -> &'static [f64; (1 << TABLE_BITS) + 1] {
    static TABLE: std::sync::OnceLock<[f64; (1 << TABLE_BITS) + 1]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0.0; (1 << TABLE_BITS) + 1];
        for (i, v) in t.iter_mut().enumerate() {
            *v = (1.0 + i as f64 / f64::from(1u32 << TABLE_BITS)).log2();
        }
        t
    })
}

fn log2_to_bucket() -> f64 {
    std::f64::consts::LN_2 / gamma().ln()
}

/// `log2(x)` for a positive, finite, normal `x`; exact at powers of two.
fn fast_log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64;
    if exp == 0 || exp == 0x7ff {
        return x.log2();
    }
    let mantissa = bits & ((1u64 << 52) - 1);
    let idx = (mantissa >> (52 - TABLE_BITS)) as usize;
    let frac =
        (mantissa & ((1u64 << (52 - TABLE_BITS)) - 1)) as f64 / (1u64 << (52 - TABLE_BITS)) as f64;
    let t = log2_table();
    (exp - 1023) as f64 + t[idx] + (t[idx + 1] - t[idx]) * frac
}

/// The value that represents bucket `i`.
pub fn bucket_value(i: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(i) / (g + 1.0)
}

/// A weighted quantile sketch.
#[derive(Debug, Clone, Default)]
pub struct Sketch {
    offset: i32,
    buckets: Vec<f64>,
    zero: f64,
    total: f64,
}

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` with `weight` (> 0).
    pub fn add(&mut self, value: f64, weight: f64) {
        self.total += weight;
        if value <= 0.0 || !value.is_finite() {
            self.zero += weight;
            return;
        }
        let i = bucket_index(value);
        self.add_bucket(i, weight);
    }

    fn add_bucket(&mut self, i: i32, weight: f64) {
        if self.buckets.is_empty() {
            self.offset = i;
            self.buckets.push(0.0);
        } else if i < self.offset {
            let grow = (self.offset - i) as usize;
            self.buckets.splice(0..0, std::iter::repeat_n(0.0, grow));
            self.offset = i;
        } else if (i - self.offset) as usize >= self.buckets.len() {
            self.buckets.resize((i - self.offset) as usize + 1, 0.0);
        }
        self.buckets[(i - self.offset) as usize] += weight;
    }

    /// Adds `weight` to bucket `i` (see [`bucket_index`]), as [`Sketch::add`] of a value of
    /// that bucket does; `None` is the bucket of values that are not positive.
    pub fn add_to_bucket(&mut self, i: Option<i32>, weight: f64) {
        self.total += weight;
        match i {
            Some(i) => self.add_bucket(i, weight),
            None => self.zero += weight,
        }
    }

    /// The bucket [`Sketch::add`] puts `value` in (`None`: not positive or not finite).
    pub fn bucket_of(value: f64) -> Option<i32> {
        (value > 0.0 && value.is_finite()).then(|| bucket_index(value))
    }

    /// Merges `other` into `self`.
    pub fn merge(&mut self, other: &Sketch) {
        self.total += other.total;
        self.zero += other.zero;
        for (k, w) in other.buckets.iter().enumerate() {
            if *w > 0.0 {
                self.add_bucket(other.offset + k as i32, *w);
            }
        }
    }

    /// Every non-empty bucket with its weight, the bucket of values that are not positive
    /// (`None`) first, then by index.
    pub fn buckets(&self) -> impl Iterator<Item = (Option<i32>, f64)> + '_ {
        (self.zero > 0.0)
            .then_some((None, self.zero))
            .into_iter()
            .chain(
                self.buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| **w > 0.0)
                    .map(|(k, w)| (Some(self.offset + k as i32), *w)),
            )
    }

    /// Total weight added.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// The smallest bucket value whose cumulative weight reaches `q` of the total; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let target = q.clamp(0.0, 1.0) * self.total;
        let mut seen = self.zero;
        if seen >= target && self.zero > 0.0 {
            return Some(0.0);
        }
        for (k, w) in self.buckets.iter().enumerate() {
            seen += w;
            if seen >= target && *w > 0.0 {
                return Some(bucket_value(self.offset + k as i32));
            }
        }
        self.buckets
            .iter()
            .rposition(|w| *w > 0.0)
            .map(|k| bucket_value(self.offset + k as i32))
            .or(Some(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_relative_accuracy() {
        let mut s = Sketch::new();
        for v in 1..=10_000u32 {
            s.add(f64::from(v) * 1000.0, 1.0);
        }
        for (q, truth) in [(0.5, 5_000_000.0), (0.9, 9_000_000.0), (0.99, 9_900_000.0)] {
            let got = s.quantile(q).expect("non-empty");
            assert!(
                (got / truth - 1.0).abs() <= RELATIVE_ACCURACY * 1.01,
                "q{q}: {got} vs {truth}"
            );
        }
    }

    #[test]
    fn weights_count() {
        let mut s = Sketch::new();
        s.add(100.0, 1.0);
        s.add(1000.0, 9.0);
        let p50 = s.quantile(0.5).expect("non-empty");
        assert!((p50 / 1000.0 - 1.0).abs() < 0.01);
        let mut other = Sketch::new();
        other.add(10.0, 100.0);
        s.merge(&other);
        assert!((s.quantile(0.5).expect("non-empty") / 10.0 - 1.0).abs() < 0.01);
        assert_eq!(s.total(), 110.0);
    }

    #[test]
    fn the_fast_index_agrees_with_ln_away_from_boundaries() {
        let mut disagree = 0;
        let mut x = 1.0f64;
        while x < 1e15 {
            let exact = (x.ln() / gamma().ln()).ceil() as i32;
            let fast = bucket_index(x);
            assert!((exact - fast).abs() <= 1, "{x}: {exact} vs {fast}");
            if exact != fast {
                disagree += 1;
            }
            x *= 1.000_37;
        }
        assert!(disagree < 50, "{disagree} values changed bucket");
    }

    #[test]
    fn sql_expression_uses_the_same_gamma() {
        let g = format!("{:.14}", gamma());
        assert!(SQL_BUCKET_EXPR.contains(&g), "{g}");
    }
}
