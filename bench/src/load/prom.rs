//! Reading the processes under load: Prometheus text from `/metrics`, and peak RSS from `/proc`.

use std::collections::BTreeMap;

/// `(le, cumulative count)` of every bucket of a Prometheus histogram in `text`.
pub fn histogram(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let n: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect()
}

/// The upper bound (seconds) of the bucket holding quantile `q`, `None` without data or when
/// it is past the last finite bucket.
pub fn bucket_quantile(buckets: &BTreeMap<String, f64>, q: f64) -> Option<f64> {
    let bounds = sorted_bounds(buckets);
    let total = bounds.last()?.1;
    if total <= 0.0 {
        return None;
    }
    bounds
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(b, _)| *b)
        .filter(|b| b.is_finite())
}

/// Quantile `q` estimated by linear interpolation within the bucket that holds it, as
/// Prometheus' `histogram_quantile` does; past the last finite bucket, that bucket's bound (an
/// underestimate). `None` without data.
pub fn interpolated_quantile(buckets: &BTreeMap<String, f64>, q: f64) -> Option<f64> {
    let bounds = sorted_bounds(buckets);
    let total = bounds.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = bounds.iter().position(|(_, n)| *n >= rank)?;
    let (lower, below) = if i == 0 { (0.0, 0.0) } else { bounds[i - 1] };
    let (upper, at) = bounds[i];
    if upper.is_infinite() {
        return Some(lower);
    }
    let share = if at > below {
        (rank - below) / (at - below)
    } else {
        1.0
    };
    Some(lower + (upper - lower) * share)
}

/// `(bound, cumulative count)` sorted by bound; `+Inf` last.
fn sorted_bounds(buckets: &BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    let mut bounds: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(le, n)| (le.parse().unwrap_or(f64::INFINITY), *n))
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    bounds
}

/// `after - before`, bucket by bucket: the histogram of what happened in between.
pub fn bucket_diff(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(le, n)| (le.clone(), n - before.get(le).copied().unwrap_or(0.0)))
        .collect()
}

/// The sum of every sample of the metric `name` (all label sets).
pub fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Peak resident set (VmHWM) of a process, MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_cumulative_buckets() {
        let text = "# TYPE x histogram\n\
            x_bucket{le=\"0.001\"} 10\n\
            x_bucket{le=\"0.002\"} 90\n\
            x_bucket{le=\"0.004\"} 99\n\
            x_bucket{le=\"0.008\"} 100\n\
            x_bucket{le=\"+Inf\"} 100\n";
        let b: BTreeMap<String, f64> = histogram(text, "x_bucket").into_iter().collect();
        assert_eq!(bucket_quantile(&b, 0.5), Some(0.002));
        assert_eq!(bucket_quantile(&b, 0.99), Some(0.004));
        assert_eq!(bucket_quantile(&BTreeMap::new(), 0.99), None);
        // 50 of 100 fall in (0.001, 0.002]: 10 below it, 80 up to its bound.
        let p50 = interpolated_quantile(&b, 0.5).unwrap_or(f64::NAN);
        assert!((p50 - 0.0015).abs() < 1e-12, "{p50}");
        assert_eq!(interpolated_quantile(&BTreeMap::new(), 0.5), None);
    }
}
