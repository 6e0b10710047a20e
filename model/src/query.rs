//! The query API's requests and answers. Answers serialise to the JSON documented in
//! `docs/api.md`: every list is an array of objects with named fields.

use serde::Serialize;

use crate::event::Tenant;

/// What a breakdown is split by, besides the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    None,
    Build,
    Dc,
    Host,
}

impl GroupBy {
    /// Reads `build`, `dc`, `host` or an empty string.
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "" | "none" => Some(GroupBy::None),
            "build" => Some(GroupBy::Build),
            "dc" => Some(GroupBy::Dc),
            "host" => Some(GroupBy::Host),
            _ => None,
        }
    }

    /// The column name, or `None` for no grouping.
    pub fn column(self) -> Option<&'static str> {
        match self {
            GroupBy::None => None,
            GroupBy::Build => Some("build"),
            GroupBy::Dc => Some("dc"),
            GroupBy::Host => Some("host"),
        }
    }
}

/// A half-open time range `[from, to)` in unix nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: i64,
    pub to: i64,
}

/// Why a time range from a client cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// `from` is not before `to`.
    #[error("`from` must be before `to`")]
    Empty,
    /// `to - from` does not fit in 64-bit nanoseconds (about 292 years).
    #[error("the time range is too long: `to` - `from` must be at most 292 years")]
    TooLong,
    /// A default bound (`to` minus a default span) falls before the earliest representable time.
    #[error("`to` is too early to take a default `from` before it")]
    TooEarly,
}

impl TimeRange {
    /// A range whose length fits in an `i64`, so that every width and bucket computation on it
    /// is exact.
    pub fn checked(from: i64, to: i64) -> Result<TimeRange, RangeError> {
        if from >= to {
            return Err(RangeError::Empty);
        }
        to.checked_sub(from).ok_or(RangeError::TooLong)?;
        Ok(TimeRange { from, to })
    }

    /// `to - span_ns`, for a default `from`.
    pub fn before(to: i64, span_ns: i64) -> Result<i64, RangeError> {
        to.checked_sub(span_ns).ok_or(RangeError::TooEarly)
    }

    /// `to - from`; saturates for a range not made by [`TimeRange::checked`].
    pub fn span(&self) -> i64 {
        self.to.saturating_sub(self.from)
    }

    /// The part of this range inside `bounds` (the times a store can hold: its retention up to
    /// the furthest clock skew it accepts), so that an open-ended or absurd range scans and
    /// buckets only what can exist. A range wholly outside `bounds` is kept as it is: its
    /// answer is empty either way, and an empty range could not be queried.
    pub fn narrowed_to(self, bounds: TimeRange) -> TimeRange {
        let (from, to) = (self.from.max(bounds.from), self.to.min(bounds.to));
        if from < to {
            TimeRange { from, to }
        } else {
            self
        }
    }
}

/// `GET /api/v1/services`.
#[derive(Debug, Clone)]
pub struct ServicesQuery {
    pub tenant: Tenant,
    pub range: TimeRange,
}

/// `GET /api/v1/endpoints`.
#[derive(Debug, Clone)]
pub struct EndpointsQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
    pub group_by: GroupBy,
}

/// `GET /api/v1/timeseries`.
#[derive(Debug, Clone)]
pub struct TimeseriesQuery {
    pub tenant: Tenant,
    pub service: String,
    pub endpoint: String,
    pub range: TimeRange,
    /// Bucket width in nanoseconds; buckets start at multiples of it.
    pub step: i64,
    pub group_by: GroupBy,
}

/// One service seen in the range.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSummary {
    pub service: String,
    /// Weighted requests in the range.
    pub requests: f64,
}

/// Mean and percentiles of one metric per request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The figures of one group of requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostStats {
    /// Weighted number of requests.
    pub requests: f64,
    /// CPU time per request, nanoseconds.
    pub cpu_ns: Distribution,
    /// Weighted requests that carried an instruction count.
    pub instructions_requests: f64,
    /// Instructions per request over the requests that had a count; `null` when none did.
    pub instructions: Option<Distribution>,
}

/// One row of `GET /api/v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointStats {
    pub endpoint: String,
    /// The value of the `group_by` column, absent without grouping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(flatten)]
    pub stats: CostStats,
}

/// One point of `GET /api/v1/timeseries`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeseriesPoint {
    /// Bucket start, unix seconds.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(flatten)]
    pub stats: CostStats,
}

/// The weighted count and sums of a group of requests (a rollup row), without the sketches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CostSummary {
    pub requests: f64,
    pub cpu_sum: f64,
    pub instructions_requests: f64,
    pub instructions_sum: f64,
}

impl CostSummary {
    /// Adds one request, as [`CostAccumulator::add`] does.
    pub fn add(&mut self, cpu_ns: u64, instructions: Option<u64>, weight: f64) {
        self.requests += weight;
        self.cpu_sum += cpu_ns as f64 * weight;
        if let Some(i) = instructions {
            self.instructions_requests += weight;
            self.instructions_sum += i as f64 * weight;
        }
    }

    /// Adds another group's count and sums.
    pub fn merge(&mut self, other: &CostSummary) {
        self.requests += other.requests;
        self.cpu_sum += other.cpu_sum;
        self.instructions_requests += other.instructions_requests;
        self.instructions_sum += other.instructions_sum;
    }
}

/// Accumulates requests into [`CostStats`] with bounded memory (two [`Sketch`]es).
#[derive(Debug, Clone, Default)]
pub struct CostAccumulator {
    requests: f64,
    cpu_sum: f64,
    cpu: Sketch,
    instructions_requests: f64,
    instructions_sum: f64,
    instructions: Sketch,
}

use crate::sketch::Sketch;

impl CostAccumulator {
    /// Adds one request of `weight`.
    pub fn add(&mut self, cpu_ns: u64, instructions: Option<u64>, weight: f64) {
        self.requests += weight;
        self.cpu_sum += cpu_ns as f64 * weight;
        self.cpu.add(cpu_ns as f64, weight);
        if let Some(i) = instructions {
            self.instructions_requests += weight;
            self.instructions_sum += i as f64 * weight;
            self.instructions.add(i as f64, weight);
        }
    }

    /// Adds a pre-aggregated group of requests: its weighted count and sums, and the weight
    /// of each sketch bucket (see [`Sketch::add_to_bucket`]) of CPU time and of instructions.
    /// Equal to adding the requests one by one, up to floating-point order.
    pub fn add_summary(
        &mut self,
        s: &CostSummary,
        cpu: impl IntoIterator<Item = (Option<i32>, f64)>,
        instructions: impl IntoIterator<Item = (Option<i32>, f64)>,
    ) {
        self.requests += s.requests;
        self.cpu_sum += s.cpu_sum;
        self.instructions_requests += s.instructions_requests;
        self.instructions_sum += s.instructions_sum;
        for (i, w) in cpu {
            self.cpu.add_to_bucket(i, w);
        }
        for (i, w) in instructions {
            self.instructions.add_to_bucket(i, w);
        }
    }

    pub fn merge(&mut self, other: &CostAccumulator) {
        self.requests += other.requests;
        self.cpu_sum += other.cpu_sum;
        self.cpu.merge(&other.cpu);
        self.instructions_requests += other.instructions_requests;
        self.instructions_sum += other.instructions_sum;
        self.instructions.merge(&other.instructions);
    }

    pub fn is_empty(&self) -> bool {
        self.requests <= 0.0
    }

    pub fn finish(&self) -> CostStats {
        let dist = |sum: f64, n: f64, s: &Sketch| Distribution {
            mean: if n > 0.0 { sum / n } else { 0.0 },
            p50: s.quantile(0.5).unwrap_or(0.0),
            p90: s.quantile(0.9).unwrap_or(0.0),
            p99: s.quantile(0.99).unwrap_or(0.0),
        };
        CostStats {
            requests: self.requests,
            cpu_ns: dist(self.cpu_sum, self.requests, &self.cpu),
            instructions_requests: self.instructions_requests,
            instructions: (self.instructions_requests > 0.0).then(|| {
                dist(
                    self.instructions_sum,
                    self.instructions_requests,
                    &self.instructions,
                )
            }),
        }
    }
}

/// `Store::builds`: the builds of a service seen in a range.
#[derive(Debug, Clone)]
pub struct BuildsQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
}

/// One build of a service: when it was first and last seen, and its weighted requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildSummary {
    pub build: String,
    /// Unix ns of its first and last request in the range.
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: f64,
}

/// `Store::cost_samples`: the per-request costs of some builds of a service, for the analyzer.
#[derive(Debug, Clone)]
pub struct CostSamplesQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
    /// Only these builds (all when empty).
    pub builds: Vec<String>,
    /// Only this endpoint (all when `None`).
    pub endpoint: Option<String>,
}

/// One request's cost, compactly: host and dc are indices into [`CostSamples`]' dictionaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostRow {
    pub ts: i64,
    pub cpu_ns: u64,
    pub instructions: Option<u64>,
    pub weight: f64,
    pub host: u32,
    pub dc: u32,
}

/// The requests of one (endpoint, build).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CostSamples {
    pub endpoint: String,
    pub build: String,
    pub hosts: Vec<String>,
    pub dcs: Vec<String>,
    pub rows: Vec<CostRow>,
}

impl CostSamples {
    /// Adds a row, interning its host and dc.
    pub fn push(
        &mut self,
        ts: i64,
        cpu_ns: u64,
        instructions: Option<u64>,
        weight: f64,
        host: &str,
        dc: &str,
    ) {
        let intern = |dict: &mut Vec<String>, v: &str| match dict.iter().position(|x| x == v) {
            Some(i) => i as u32,
            None => {
                dict.push(v.to_owned());
                dict.len() as u32 - 1
            }
        };
        let host = intern(&mut self.hosts, host);
        let dc = intern(&mut self.dcs, dc);
        self.rows.push(CostRow {
            ts,
            cpu_ns,
            instructions,
            weight,
            host,
            dc,
        });
    }

    /// Adds every row of `other`, renumbering its hosts and dcs into this one's lists (once
    /// per name, not per row). A row whose host or dc is not in `other`'s lists gets the name "".
    pub fn append(&mut self, other: &CostSamples) {
        fn renumber(dict: &mut Vec<String>, names: &[String]) -> Vec<u32> {
            names
                .iter()
                .map(|n| match dict.iter().position(|x| x == n) {
                    Some(i) => i as u32,
                    None => {
                        dict.push(n.clone());
                        dict.len() as u32 - 1
                    }
                })
                .collect()
        }
        let hosts = renumber(&mut self.hosts, &other.hosts);
        let dcs = renumber(&mut self.dcs, &other.dcs);
        let unnamed = |dict: &mut Vec<String>| match dict.iter().position(String::is_empty) {
            Some(i) => i as u32,
            None => {
                dict.push(String::new());
                dict.len() as u32 - 1
            }
        };
        self.rows.reserve(other.rows.len());
        for r in &other.rows {
            let host = match hosts.get(r.host as usize) {
                Some(&h) => h,
                None => unnamed(&mut self.hosts),
            };
            let dc = match dcs.get(r.dc as usize) {
                Some(&d) => d,
                None => unnamed(&mut self.dcs),
            };
            self.rows.push(CostRow { host, dc, ..*r });
        }
    }
}

/// `Store::endpoint_series`: every endpoint's series of a service in one query.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
    /// Bucket width in nanoseconds.
    pub step: i64,
}

/// One endpoint's points (no grouping), sorted by time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointSeries {
    pub endpoint: String,
    pub points: Vec<TimeseriesPoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrowing_keeps_the_overlap_or_the_range_itself() {
        let held = TimeRange { from: 100, to: 200 };
        let r = |from, to| TimeRange { from, to };
        assert_eq!(r(i64::MIN / 2, i64::MAX / 2).narrowed_to(held), held);
        assert_eq!(r(150, 300).narrowed_to(held), r(150, 200));
        assert_eq!(r(120, 130).narrowed_to(held), r(120, 130));
        assert_eq!(r(0, 50).narrowed_to(held), r(0, 50), "wholly before");
        assert_eq!(r(200, 250).narrowed_to(held), r(200, 250), "wholly after");
    }

    #[test]
    fn append_renumbers_hosts_and_dcs_once() {
        let mut a = CostSamples::default();
        a.push(1, 10, None, 1.0, "h1", "fra");
        let mut b = CostSamples::default();
        b.push(2, 20, Some(5), 1.0, "h2", "iad");
        b.push(3, 30, None, 2.0, "h1", "fra");
        b.rows.push(CostRow {
            host: 9,
            dc: 9,
            ..b.rows[0]
        });
        a.append(&b);
        assert_eq!(a.hosts, ["h1", "h2", ""]);
        assert_eq!(a.dcs, ["fra", "iad", ""]);
        let ids: Vec<(i64, u32, u32)> = a.rows.iter().map(|r| (r.ts, r.host, r.dc)).collect();
        assert_eq!(ids, [(1, 0, 0), (2, 1, 1), (3, 0, 0), (2, 2, 2)]);
    }
}
