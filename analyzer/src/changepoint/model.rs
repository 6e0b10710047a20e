//! The search for the step model of a series: steps and drift, each fitted given the other.
//!
//! Steps are sought by the rank test ([`segment`]) on the series as it is (ranks are not swayed
//! by spikes) minus the current drift; the drift is fitted ([`drift`]) to the despiked series
//! given the current steps. From two starts (the steps of the series as it is, and the steps of
//! the series minus a drift fitted without steps) the two are refitted in turn; every step set
//! visited is pruned by `min_change` and scored by BIC (each step costing [`STEP_PENALTY`]
//! parameters, the drift its coefficients), and the best-scored one is the model. Every step
//! in it passed the test on the series minus the drift of some round (not necessarily the
//! final drift: re-seeking the steps with the final drift taken out can lose a step that a
//! slightly different drift hides); BIC decides between the rounds.
//!
//! Invariant: the result is a pure function of the series, `φ` and the config.

use super::drift::{self, Curve, DriftFit};
use super::{prune, segment, ChangepointConfig, Scale};

/// Most rounds of re-seeking steps after a drift is fitted.
const MAX_ROUNDS: usize = 4;
/// Parameters a step costs in the BIC that chooses between step models (its level, and its
/// place chosen among all splits).
const STEP_PENALTY: f64 = 3.0;

/// A series ready for the search.
#[derive(Debug)]
pub(super) struct Series<'a> {
    /// Net of the seasonal profile, on the working scale.
    pub raw: &'a [f64],
    /// `raw` despiked.
    pub clean: &'a [f64],
    pub phi: f64,
    pub cfg: &'a ChangepointConfig,
    pub scale: Scale,
}

/// Changes found: index and p-value.
type Steps = Vec<(usize, f64)>;

impl Series<'_> {
    /// The steps and the drift (see the module docs).
    pub fn search(&self) -> (Steps, Option<DriftFit>) {
        let plain = self.steps(None);
        let mut visited = self.settle(plain.clone());
        if let Some(f) = self.drift(&[], Curve::Flexible) {
            visited.extend(self.settle(self.steps(Some(&f.curve))));
        }
        let n = self.raw.len() as f64;
        let mut scored: Vec<(f64, Steps, Option<DriftFit>)> = Vec::new();
        for found in visited {
            let found = self.pruned(found);
            if scored.iter().any(|s| starts(&s.1) == starts(&found)) {
                continue;
            }
            let (bic, fit) =
                drift::fit_scored(self.clean, &starts(&found), self.phi, Curve::Chosen);
            scored.push((bic + STEP_PENALTY * n.ln() * found.len() as f64, found, fit));
        }
        scored
            .into_iter()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, found, fit)| (found, fit))
            .unwrap_or_default()
    }

    /// The steps the test finds in the series minus `curve`.
    fn steps(&self, curve: Option<&[f64]>) -> Steps {
        match curve {
            Some(g) => {
                let net: Vec<f64> = self.raw.iter().zip(g).map(|(v, c)| v - c).collect();
                segment::segment(&net, self.phi, self.cfg)
            }
            None => segment::segment(self.raw, self.phi, self.cfg),
        }
    }

    /// The drift given `found`.
    fn drift(&self, found: &[(usize, f64)], curve: Curve) -> Option<DriftFit> {
        drift::fit(self.clean, &starts(found), self.phi, curve)
    }

    /// The step sets visited from `found` by re-seeking the steps in the series minus the
    /// drift fitted given the current ones, until no drift is chosen, a set repeats, or
    /// [`MAX_ROUNDS`].
    fn settle(&self, found: Steps) -> Vec<Steps> {
        let mut visited = vec![found];
        for _ in 0..MAX_ROUNDS {
            let Some(current) = visited.last() else {
                break;
            };
            let Some(f) = self.drift(current, Curve::Flexible) else {
                break;
            };
            let next = self.steps(Some(&f.curve));
            if visited.iter().any(|v| starts(v) == starts(&next)) {
                break;
            }
            visited.push(next);
        }
        visited
    }

    /// The steps that [`prune`] keeps, given the drift fitted with all of them.
    fn pruned(&self, found: Steps) -> Steps {
        let curve = self
            .drift(&found, Curve::Chosen)
            .map_or_else(|| vec![0.0; self.raw.len()], |f| f.curve);
        let net: Vec<f64> = self.clean.iter().zip(&curve).map(|(v, g)| v - g).collect();
        prune(&net, &curve, found, self.cfg.min_change, self.scale)
            .into_iter()
            .map(|k| (k.0, k.1))
            .collect()
    }
}

/// The first point of every segment.
pub(super) fn starts(found: &[(usize, f64)]) -> Vec<usize> {
    std::iter::once(0)
        .chain(found.iter().map(|f| f.0))
        .collect()
}
