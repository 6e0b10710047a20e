//! The analysis pass: for every service, compare the newest build with enough traffic against
//! the one before it, endpoint by endpoint; record regressions (with the functions that explain
//! them), resolve the ones the newest build no longer shows or whose effect went away. Then look
//! for change points in every endpoint's series, each confirmed by a compare of the windows on
//! either side, and in the series of each service's top functions. Memory per worker is
//! compared and watched the same way. Findings of one cause form an
//! incident, alerted once.
//!
//! | file | step |
//! |---|---|
//! | [`compare`](self::compare) | the statistics' input from the store, compares, culprits |
//! | `pass` | one pass: builds compared, records kept and alerted, stale records resolved |
//! | `windows` | change points in each endpoint's series, confirmed and recorded; those gone closed |
//! | `functions` | change points in the series of each service's top functions, FDR-controlled, shifts filtered out |
//! | `memory` | builds and change points of each service's private memory per worker (records of kind `memory`) |
//! | `record` | a regression record from a comparison |
//!
//! Invariants:
//! - A finding is one record, found again by its fields ([`RegressionRecord::same_finding`]),
//!   so passes and restarts update it instead of adding duplicates (one collector at a time
//!   runs the pass: the `analysis` lease). Its id is random (`record::new_id`): none can be
//!   guessed.
//! - A human's acknowledgement survives later passes; `first_seen` never moves.
//! - A record resolves itself as "went away" when its effect is gone for `went_away_passes`
//!   passes in a row while its candidate is still the newest build (a change point's: while
//!   its endpoint's latest window is no dearer than the window before the change), and as
//!   "fixed in build X" when a newer build X no longer shows it against its baseline.
//! - Records of one cause (a build, or change points at one moment) share an incident
//!   ([`profwatch_analyzer::incident`]). One alert goes out per incident when its first records
//!   are found (listing the pass's records of it), and one per pass that resolves records of it;
//!   a human's resolve alerts that record alone.

mod compare;
mod functions;
mod memory;
mod pass;
mod record;
mod windows;

use std::sync::Arc;
use std::time::Duration;

use profwatch_analyzer::alert::{AlertStatus, Dispatcher};
use profwatch_analyzer::{ChangepointConfig, CompareConfig, Comparison};
use profwatch_model::query::TimeRange;
use profwatch_model::regression::{RegressionRecord, RegressionState, Resolution};
use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;
use serde::Serialize;

use profwatch_store::{Store, StoreError};

/// Settings of analysis.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    /// How far back a pass looks for builds and requests.
    pub window: Duration,
    /// The statistics (alpha, minimum effect, minimum requests...).
    pub compare: CompareConfig,
    /// Functions named per regression.
    pub culprits: usize,
    /// Bucket width of the per-endpoint series that change points are sought in.
    pub bucket: Duration,
    /// The change-point detector's settings.
    pub changepoints: ChangepointConfig,
    /// Buckets with fewer requests are left out of the series (too noisy to place a change).
    pub min_bucket_requests: f64,
    /// Passes in a row without the effect, its build still the newest, after which a record
    /// closes itself as "went away".
    pub went_away_passes: u32,
    /// The memory compare's unit: each process's mean private bytes over this long.
    pub memory_step: Duration,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            window: Duration::from_secs(24 * 3600),
            compare: CompareConfig::default(),
            culprits: 5,
            bucket: Duration::from_secs(600),
            // 199 permutations resolve p down to 0.005, enough for the detector's alpha of 0.01,
            // at a fifth of the CSV command's cost (999): a pass tests every endpoint.
            changepoints: ChangepointConfig {
                permutations: 199,
                ..ChangepointConfig::default()
            },
            min_bucket_requests: 20.0,
            // One pass without the effect can be a quiet interval; two in a row (10 minutes at
            // the default interval) is the effect gone while its build serves.
            went_away_passes: 2,
            // A minute holds six readings at the sidecar's default interval (10 s).
            memory_step: Duration::from_secs(60),
        }
    }
}

/// Why analysis failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("analysis: {0}")]
    Analyzer(#[from] profwatch_analyzer::AnalyzerError),
    #[error("analysis task failed: {0}")]
    Task(String),
}

/// One service's compare in a pass.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceCompare {
    pub service: String,
    pub baseline: String,
    pub candidate: String,
    pub endpoints: Vec<Comparison>,
}

/// What a pass did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PassReport {
    pub services: Vec<ServiceCompare>,
    /// Services skipped for want of two builds with enough traffic.
    pub skipped_services: Vec<String>,
    pub new_regressions: usize,
    pub updated_regressions: usize,
    /// Of the resolved: records whose effect went away while their build still served, and
    /// records a later build fixed.
    pub went_away: usize,
    pub fixed: usize,
    pub resolved_regressions: usize,
    /// Incidents alerted for the first time this pass (each one alert listing its regressions).
    pub new_incidents: usize,
    /// Endpoints whose change-point detection failed this pass, with why (`service endpoint`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_endpoints: Vec<String>,
}

/// Finds regressions and keeps their records up to date: runs analysis passes, compares builds
/// on demand, and records a human's acknowledgement or resolution.
#[derive(Debug, Clone)]
pub struct RegressionTracker {
    store: Arc<dyn Store>,
    cfg: AnalysisConfig,
    alerts: Option<Dispatcher>,
}

impl RegressionTracker {
    pub fn new(
        store: Arc<dyn Store>,
        cfg: AnalysisConfig,
        alerts: Option<Dispatcher>,
    ) -> RegressionTracker {
        RegressionTracker { store, cfg, alerts }
    }

    fn window(&self) -> TimeRange {
        let now = now_ns();
        TimeRange {
            from: now - self.cfg.window.as_nanos().min(i64::MAX as u128) as i64,
            to: now + 60_000_000_000,
        }
    }

    /// Takes or renews a store lease (see [`Store::try_lease`]).
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, AnalysisError> {
        Ok(self.store.try_lease(name, holder, ttl).await?)
    }

    /// Sets a record's state by hand (ack or resolve); sends the resolved alert when resolving.
    pub async fn set_state(
        &self,
        tenant: &Tenant,
        id: &str,
        state: RegressionState,
    ) -> Result<Option<RegressionRecord>, AnalysisError> {
        let records = self.store.regressions(tenant).await?;
        let Some(mut r) = records.into_iter().find(|r| r.id == id) else {
            return Ok(None);
        };
        if r.state == state {
            return Ok(Some(r));
        }
        r.state = state;
        r.updated = now_ns();
        r.resolution = (state == RegressionState::Resolved).then_some(Resolution::ByHand);
        self.store.put_regression(&r).await?;
        if state == RegressionState::Resolved {
            if let Some(a) = &self.alerts {
                a.send(AlertStatus::Resolved, &r);
            }
        }
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests;
