//! Generated series for the change-point detector: steps inside linear or exponential growth,
//! autocorrelated (AR(1)) noise, a daily cycle and spikes, each with timestamps.
//!
//! Invariants: everything is a pure function of the model and the seed; `changes` are the
//! first points after each step, strictly increasing, at least `min_gap` apart and from both
//! ends; values are positive.

use crate::rng::Rng;

/// First timestamp of a generated series (unix seconds, midnight UTC).
pub const START_SECS: f64 = 1_699_920_000.0;
const DAY_SECS: f64 = 86_400.0;

/// A slow change of the level that is not a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trend {
    Flat,
    /// The level grows by this fraction of its starting value per point (`1 + r·t`).
    Linear(f64),
    /// The level grows by this fraction of its current value per point (`(1 + r)^t`).
    Exponential(f64),
}

impl Trend {
    /// The trend's factor at point `t`.
    pub fn factor(self, t: usize) -> f64 {
        match self {
            Trend::Flat => 1.0,
            Trend::Linear(r) => 1.0 + r * t as f64,
            Trend::Exponential(r) => (1.0 + r).powf(t as f64),
        }
    }
}

/// The parts of a generated series; each is off at its zero value.
#[derive(Debug, Clone)]
pub struct SeriesModel {
    pub len: usize,
    /// Relative standard deviation of the noise (its marginal, stationary one).
    pub noise_sd: f64,
    /// AR(1) coefficient of the noise.
    pub ar: f64,
    /// Student-t(3)-like innovations instead of normal ones.
    pub heavy_tails: bool,
    pub trend: Trend,
    /// Relative amplitude of a daily cycle (peak in the afternoon UTC).
    pub daily_amplitude: f64,
    /// Points per day: sets the timestamps (one point every `86400 / points_per_day` s).
    pub points_per_day: usize,
    /// Probability that a point is a spike, and the spike's multiplier range.
    pub spike_rate: f64,
    pub spike_range: (f64, f64),
    /// Exactly this many steps (fewer only when they cannot be placed `min_gap` apart).
    pub steps: usize,
    /// Step sizes, drawn uniformly (relative, either sign).
    pub step_range: (f64, f64),
    pub min_gap: usize,
}

impl SeriesModel {
    /// White normal noise of 1%, hourly points, no trend, cycle, spikes or steps.
    pub fn quiet(len: usize) -> SeriesModel {
        SeriesModel {
            len,
            noise_sd: 0.01,
            ar: 0.0,
            heavy_tails: false,
            trend: Trend::Flat,
            daily_amplitude: 0.0,
            points_per_day: 24,
            spike_rate: 0.0,
            spike_range: (1.5, 3.0),
            steps: 0,
            step_range: (0.05, 0.15),
            min_gap: 30,
        }
    }

    pub fn generate(&self, rng: &mut Rng) -> TimedSeries {
        let changes = self.place_steps(rng);
        let mut level = 100.0;
        let innovation = (1.0 - self.ar * self.ar).max(0.0).sqrt();
        let mut noise = self.draw(rng);
        let mut values = Vec::with_capacity(self.len);
        let mut times = Vec::with_capacity(self.len);
        let spacing = DAY_SECS / self.points_per_day.max(1) as f64;
        for t in 0..self.len {
            if changes.contains(&t) {
                let size =
                    self.step_range.0 + rng.uniform() * (self.step_range.1 - self.step_range.0);
                level *= if rng.uniform() < 0.5 {
                    1.0 + size
                } else {
                    1.0 / (1.0 + size)
                };
            }
            if t > 0 {
                noise = self.ar * noise + innovation * self.draw(rng);
            }
            let time = START_SECS + spacing * t as f64;
            let mut v = level
                * self.trend.factor(t)
                * daily_factor(time, self.daily_amplitude)
                * (1.0 + self.noise_sd * noise);
            if rng.uniform() < self.spike_rate {
                v *= self.spike_range.0 + rng.uniform() * (self.spike_range.1 - self.spike_range.0);
            }
            values.push(v.max(1e-9));
            times.push(time);
        }
        TimedSeries {
            values,
            times,
            changes,
        }
    }

    /// A standard normal or a unit-variance t(3)-like draw.
    fn draw(&self, rng: &mut Rng) -> f64 {
        if !self.heavy_tails {
            return rng.normal();
        }
        let chi = (rng.normal().powi(2) + rng.normal().powi(2) + rng.normal().powi(2)) / 3.0;
        rng.normal() / chi.sqrt().max(0.2) / 3f64.sqrt()
    }

    fn place_steps(&self, rng: &mut Rng) -> Vec<usize> {
        let mut changes: Vec<usize> = Vec::new();
        let (lo, hi) = (self.min_gap, self.len.saturating_sub(self.min_gap));
        let mut tries = 0;
        while changes.len() < self.steps && tries < 10_000 && hi > lo {
            tries += 1;
            let c = lo + rng.below(hi - lo);
            if changes.iter().all(|&x| x.abs_diff(c) >= self.min_gap) {
                changes.push(c);
            }
        }
        changes.sort_unstable();
        changes
    }
}

/// The daily cycle's factor at unix time `secs`: two harmonics, low at night, high in the
/// afternoon, mean 1.
pub fn daily_factor(secs: f64, amplitude: f64) -> f64 {
    let phase = std::f64::consts::TAU * (secs.rem_euclid(DAY_SECS) / DAY_SECS);
    1.0 + amplitude * (0.8 * (phase - 2.4).sin() + 0.35 * (2.0 * phase + 0.5).sin())
}

/// A generated series with timestamps and the indices of its true steps.
#[derive(Debug, Clone)]
pub struct TimedSeries {
    pub values: Vec<f64>,
    /// Unix seconds.
    pub times: Vec<f64>,
    pub changes: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ar_noise_has_the_requested_sd_and_lag_one_correlation() {
        let model = SeriesModel {
            ar: 0.6,
            noise_sd: 0.02,
            ..SeriesModel::quiet(20_000)
        };
        let s = model.generate(&mut Rng::new(1));
        let x: Vec<f64> = s.values.iter().map(|v| v / 100.0 - 1.0).collect();
        let m = x.iter().sum::<f64>() / x.len() as f64;
        let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / x.len() as f64;
        let lag1 = x.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / x.len() as f64;
        assert!((var.sqrt() - 0.02).abs() < 0.002, "{}", var.sqrt());
        assert!((lag1 / var - 0.6).abs() < 0.03, "{}", lag1 / var);
    }

    #[test]
    fn steps_are_placed_apart_and_times_are_regular() {
        let model = SeriesModel {
            steps: 3,
            ..SeriesModel::quiet(300)
        };
        let s = model.generate(&mut Rng::new(2));
        assert_eq!(s.changes.len(), 3);
        assert!(s.changes.windows(2).all(|w| w[1] - w[0] >= 30));
        assert!(s.changes[0] >= 30 && s.changes[2] <= 270);
        assert_eq!(s.times[1] - s.times[0], 3600.0);
        assert!(s.values.iter().all(|v| *v > 0.0));
    }
}
