//! Which two builds a snapshot compare looks at when the user names none.
//!
//! Invariant: the candidate is the newest build (by first-seen time) with at least the minimum
//! traffic; the baseline is the newest build seen before it that also has that traffic (a build
//! with too little traffic cannot serve as a baseline either). Ties on time break by name so
//! the choice is deterministic.

/// Traffic of one build in the window considered.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildTraffic {
    pub build: String,
    /// Unix nanoseconds of the build's first request.
    pub first_seen: i64,
    /// Weighted requests (or samples) of the endpoint or service in the window.
    pub requests: f64,
}

/// `(baseline, candidate)`, or `None` when fewer than two builds have enough traffic.
pub fn choose_builds(builds: &[BuildTraffic], min_requests: f64) -> Option<(String, String)> {
    let mut eligible: Vec<&BuildTraffic> = builds
        .iter()
        .filter(|b| b.requests.is_finite() && b.requests >= min_requests)
        .collect();
    eligible.sort_by(|a, b| (a.first_seen, &a.build).cmp(&(b.first_seen, &b.build)));
    let n = eligible.len();
    if n < 2 {
        return None;
    }
    Some((eligible[n - 2].build.clone(), eligible[n - 1].build.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(build: &str, first_seen: i64, requests: f64) -> BuildTraffic {
        BuildTraffic {
            build: build.to_owned(),
            first_seen,
            requests,
        }
    }

    #[test]
    fn newest_with_traffic_against_the_one_before() {
        let builds = [
            b("v1", 10, 5000.0),
            b("v3", 30, 50.0),
            b("v2", 20, 8000.0),
            b("v0", 0, 9000.0),
        ];
        assert_eq!(
            choose_builds(&builds, 1000.0),
            Some(("v1".to_owned(), "v2".to_owned()))
        );
        assert_eq!(choose_builds(&builds, 8500.0), None);
        assert_eq!(choose_builds(&[], 1.0), None);
        assert_eq!(
            choose_builds(&[b("a", 1, f64::NAN), b("b", 2, 5.0), b("c", 3, 5.0)], 1.0),
            Some(("b".to_owned(), "c".to_owned()))
        );
    }
}
