//! Synthetic data whose truth is known, for the unit tests and the evaluation program.
//!
//! Requests: log-normal cost per request, a multiplicative effect per host (hosts run one build
//! each, the harder case for a compare), a daily cycle, rare spikes, dcs with different cost
//! levels and a traffic mix per arm. Series: steps, spikes, slow trends and heavy-tailed noise
//! ([`SeriesSpec`]), and with timestamps, growth, AR(1) noise and a daily cycle ([`series`]).
//! Stack profiles: [`profile`].
//! Invariant: everything is a pure function of the parameters and the seed.

pub mod profile;
pub mod series;

use crate::compare::{EndpointSamples, Metric, Sample};
use crate::rng::Rng;

const DAY_NS: i64 = 86_400 * 1_000_000_000;
const START_NS: i64 = 1_700_000_000 * 1_000_000_000;

/// One dc of a generated snapshot.
#[derive(Debug, Clone)]
pub struct DcSpec {
    pub name: String,
    /// Multiplicative cost level of the dc (hardware, data).
    pub cost_factor: f64,
    /// Hosts serving each arm in this dc (disjoint between the arms).
    pub hosts_per_arm: usize,
    /// Share of the baseline's and of the candidate's traffic.
    pub share_baseline: f64,
    pub share_candidate: f64,
}

/// A generated snapshot compare: both arms serve concurrently for `window_ns`.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub requests_per_arm: usize,
    pub dcs: Vec<DcSpec>,
    /// Median cost of a request (e.g. instructions).
    pub base: f64,
    /// Standard deviation of log cost between requests.
    pub sigma_log: f64,
    /// Standard deviation of the log host effect.
    pub host_sigma: f64,
    /// Relative amplitude of the daily cycle.
    pub daily_amplitude: f64,
    pub window_ns: i64,
    /// Probability that a request is a spike, and the spike's cost multiplier.
    pub spike_rate: f64,
    pub spike_factor: f64,
    /// The candidate's true cost ratio (1.0 = A/A).
    pub effect: f64,
}

impl Scenario {
    /// Three dcs of different cost, 10 hosts per arm each, instruction-like noise
    /// (sigma_log 0.3, host effect 1%), a 5% daily cycle over a whole day, 0.5% spikes of 10x.
    pub fn typical(requests_per_arm: usize, effect: f64) -> Scenario {
        let dc = |name: &str, cost_factor, share| DcSpec {
            name: name.to_owned(),
            cost_factor,
            hosts_per_arm: 10,
            share_baseline: share,
            share_candidate: share,
        };
        Scenario {
            requests_per_arm,
            dcs: vec![
                dc("fra", 1.0, 0.5),
                dc("iad", 1.15, 0.3),
                dc("sin", 0.9, 0.2),
            ],
            base: 2.0e6,
            sigma_log: 0.3,
            host_sigma: 0.01,
            daily_amplitude: 0.05,
            window_ns: DAY_NS,
            spike_rate: 0.005,
            spike_factor: 10.0,
            effect,
        }
    }

    /// The same scenario with the candidate's dc mix reversed (a traffic-mix shift).
    pub fn with_mix_shift(mut self) -> Scenario {
        let shares: Vec<f64> = self.dcs.iter().rev().map(|d| d.share_baseline).collect();
        for (d, s) in self.dcs.iter_mut().zip(shares) {
            d.share_candidate = s;
        }
        self
    }

    /// `(baseline, candidate)` samples; their `dc` indexes [`Scenario::dc_names`].
    pub fn generate(&self, rng: &mut Rng) -> (Vec<Sample>, Vec<Sample>) {
        let a = self.arm(rng, 1.0, |d| d.share_baseline);
        let b = self.arm(rng, self.effect, |d| d.share_candidate);
        (a, b)
    }

    /// The dc names the samples' `dc` fields index.
    pub fn dc_names(&self) -> Vec<String> {
        self.dcs.iter().map(|d| d.name.clone()).collect()
    }

    /// A compare's input: the generated samples of `endpoint`.
    pub fn endpoint(&self, rng: &mut Rng, endpoint: &str) -> EndpointSamples {
        let (baseline, candidate) = self.generate(rng);
        EndpointSamples {
            endpoint: endpoint.to_owned(),
            metric: Metric::Instructions,
            dcs: self.dc_names(),
            baseline,
            candidate,
        }
    }

    fn arm(&self, rng: &mut Rng, effect: f64, share: fn(&DcSpec) -> f64) -> Vec<Sample> {
        let total_share: f64 = self.dcs.iter().map(share).sum();
        let mut out = Vec::with_capacity(self.requests_per_arm);
        let mut next_host = 0u32;
        for (dc, d) in self.dcs.iter().enumerate() {
            let n = (self.requests_per_arm as f64 * share(d) / total_share).round() as usize;
            let hosts: Vec<(u32, f64, f64)> = (0..d.hosts_per_arm)
                .map(|_| {
                    let factor = (self.host_sigma * rng.normal()).exp();
                    let traffic = (0.5 * rng.normal()).exp();
                    next_host += 1;
                    (next_host, factor, traffic)
                })
                .collect();
            let traffic_total: f64 = hosts.iter().map(|h| h.2).sum();
            let mut cumulative = Vec::with_capacity(hosts.len());
            let mut acc = 0.0;
            for h in &hosts {
                acc += h.2 / traffic_total;
                cumulative.push(acc);
            }
            for _ in 0..n {
                let u = rng.uniform();
                let hi = cumulative.partition_point(|&c| c < u).min(hosts.len() - 1);
                let (host, host_factor, _) = &hosts[hi];
                let t = rng.uniform();
                let ts = START_NS + (t * self.window_ns as f64) as i64;
                let phase = std::f64::consts::TAU * (ts - START_NS) as f64 / DAY_NS as f64;
                let cycle = 1.0 + self.daily_amplitude * phase.sin();
                let spike = if rng.uniform() < self.spike_rate {
                    self.spike_factor
                } else {
                    1.0
                };
                let noise = (self.sigma_log * rng.normal()).exp();
                out.push(Sample {
                    value: self.base * d.cost_factor * host_factor * cycle * spike * noise * effect,
                    weight: 1.0,
                    host: *host,
                    dc: dc as u32,
                    ts,
                });
            }
        }
        out
    }
}

/// A generated series and the indices of its true changes.
#[derive(Debug, Clone)]
pub struct Series {
    pub values: Vec<f64>,
    pub changes: Vec<usize>,
}

/// Parameters of generated series (CI benchmark histories).
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    pub len: usize,
    /// At most this many steps, at least `min_gap` points apart and from the ends.
    pub max_steps: usize,
    pub min_gap: usize,
    /// Step sizes are drawn uniformly from this range (relative, either sign).
    pub step_range: (f64, f64),
    /// Noise: relative standard deviation, with Student-t(3)-like heavy tails.
    pub noise: f64,
    /// Probability a point is a spike and the spike's multiplier range.
    pub spike_rate: f64,
    pub spike_range: (f64, f64),
    /// Largest total drift of a slow linear trend across the series (relative).
    pub max_trend: f64,
}

impl Default for SeriesSpec {
    fn default() -> Self {
        SeriesSpec {
            len: 120,
            max_steps: 3,
            min_gap: 12,
            step_range: (0.05, 0.20),
            noise: 0.015,
            spike_rate: 0.03,
            spike_range: (1.2, 2.0),
            max_trend: 0.02,
        }
    }
}

impl SeriesSpec {
    pub fn generate(&self, rng: &mut Rng) -> Series {
        let steps = rng.below(self.max_steps + 1);
        let mut changes: Vec<usize> = Vec::new();
        let mut tries = 0;
        while changes.len() < steps && tries < 1000 {
            tries += 1;
            let lo = self.min_gap;
            let hi = self.len.saturating_sub(self.min_gap);
            if hi <= lo {
                break;
            }
            let c = lo + rng.below(hi - lo);
            if changes.iter().all(|&x| x.abs_diff(c) >= self.min_gap) {
                changes.push(c);
            }
        }
        changes.sort_unstable();
        let trend = self.max_trend * (2.0 * rng.uniform() - 1.0);
        let mut level = 100.0;
        let mut values = Vec::with_capacity(self.len);
        for i in 0..self.len {
            if changes.contains(&i) {
                let size =
                    self.step_range.0 + rng.uniform() * (self.step_range.1 - self.step_range.0);
                level *= if rng.uniform() < 0.5 {
                    1.0 + size
                } else {
                    1.0 / (1.0 + size)
                };
            }
            let drift = 1.0 + trend * i as f64 / self.len as f64;
            let heavy = rng.normal()
                / (((rng.normal().powi(2) + rng.normal().powi(2) + rng.normal().powi(2)) / 3.0)
                    .sqrt())
                .max(0.2);
            let mut v = level * drift * (1.0 + self.noise * heavy / 3f64.sqrt());
            if rng.uniform() < self.spike_rate {
                v *= self.spike_range.0 + rng.uniform() * (self.spike_range.1 - self.spike_range.0);
            }
            values.push(v.max(1e-9));
        }
        Series { values, changes }
    }
}
