//! One step of the ramp: hold a rate, stop, drain, and judge the step against the SLO.
//!
//! A step holds its rate if, and only if, all of these hold ([`Slo`]):
//! - no event lost (ClickHouse holds every event the feeds wrote once the sidecars drained),
//!   none duplicated, none dropped by a sidecar;
//! - the p99 of the collectors' ingest request latency over the step is at most `p99`
//!   (estimated from the histogram by linear interpolation within the bucket, as Prometheus'
//!   `histogram_quantile` does; the bucket bound is reported beside it);
//! - when the feeds stop, the events sent but not yet in ClickHouse amount to at most `lag`
//!   seconds of the offered rate, and at least 90% of the events sent during the step are
//!   already in ClickHouse (a rate that the sidecars' spools only buffer fails these; the
//!   pipeline normally holds about a second of events, the sidecars' batch wait, so steps
//!   must last 15 s or more for the 90% to mean anything);
//! - the feeds really offered at least 95% of the target rate (they write through the
//!   sidecars' sockets, which push back when the sidecars fall behind).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::feed::Feeds;
use super::{prom, Rig};
use crate::sys::round;

/// How long a step's drain may take before the events missing count as lost.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// A drain that makes no progress for this long is over.
const DRAIN_STALL: Duration = Duration::from_secs(30);
/// The share of the target rate the feeds must reach.
const OFFERED_SHARE: f64 = 0.95;
/// The share of a step's events that must be in ClickHouse when its feeds stop.
pub const STORED_SHARE: f64 = 0.90;

/// The service level a step must keep.
#[derive(Debug, Clone)]
pub struct Slo {
    pub p99: Duration,
    pub lag: Duration,
}

/// What one step measured.
#[derive(Debug, Clone)]
pub struct Step {
    pub rate_per_host: u64,
    /// Events/s asked of all hosts together.
    pub target: u64,
    pub held_secs: f64,
    pub sent: u64,
    /// Events in ClickHouse when the feeds stopped (of this step's).
    pub stored_by_stop: u64,
    /// Events in ClickHouse after the drain.
    pub stored: u64,
    pub drain_secs: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub dropped: f64,
    /// Interpolated p50 / p99 and the bound of the p99's bucket, seconds.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub p99_bucket: Option<f64>,
    /// Every part of the SLO the step broke; empty when it held.
    pub broken: Vec<String>,
}

impl Step {
    /// Events stored per second while the step ran.
    pub fn stored_rate(&self) -> f64 {
        self.stored_by_stop as f64 / self.held_secs.max(1e-9)
    }

    pub fn offered(&self) -> f64 {
        self.sent as f64 / self.held_secs.max(1e-9)
    }

    /// Seconds of the offered rate still missing from ClickHouse when the feeds stopped.
    pub fn lag_secs(&self) -> f64 {
        self.sent.saturating_sub(self.stored_by_stop) as f64 / self.offered().max(1e-9)
    }

    pub fn summary(&self) -> String {
        let ms = |s: Option<f64>| s.map_or("?".to_owned(), |s| format!("{:.0}", s * 1e3));
        format!(
            "target {}/s: offered {:.0}/s for {:.0} s, stored by the stop {:.0}/s, lag {:.1} s, drained in {:.1} s; p50 ~{} ms, p99 ~{} ms (bucket <= {} ms); lost {}, duplicated {}, dropped {} -> {}",
            self.target,
            self.offered(),
            self.held_secs,
            self.stored_rate(),
            self.lag_secs(),
            self.drain_secs,
            ms(self.p50),
            ms(self.p99),
            ms(self.p99_bucket),
            self.lost,
            self.duplicated,
            self.dropped,
            if self.broken.is_empty() {
                "held".to_owned()
            } else {
                format!("BROKEN: {}", self.broken.join("; "))
            }
        )
    }

    pub fn json(&self) -> Value {
        let ms = |s: Option<f64>| s.map(|s| round(s * 1e3, 1));
        json!({
            "rate_per_host": self.rate_per_host,
            "target_per_sec": self.target,
            "held_secs": round(self.held_secs, 1),
            "events_sent": self.sent,
            "offered_per_sec": round(self.offered(), 0),
            "stored_by_stop": self.stored_by_stop,
            "lag_secs": round(self.lag_secs(), 2),
            "drain_secs": round(self.drain_secs, 1),
            "events_stored": self.stored,
            "events_lost": self.lost,
            "events_duplicated": self.duplicated,
            "sidecar_events_dropped": self.dropped,
            "ingest_p50_ms": ms(self.p50),
            "ingest_p99_ms": ms(self.p99),
            "ingest_p99_bucket_ms": ms(self.p99_bucket),
            "held": self.broken.is_empty(),
            "broken": self.broken,
        })
    }

    fn judge(&mut self, slo: &Slo) {
        let mut broken = Vec::new();
        if self.offered() < OFFERED_SHARE * self.target as f64 {
            broken.push(format!(
                "the feeds offered only {:.0}/s of {}/s (held back by the sidecars' sockets or short of CPU)",
                self.offered(),
                self.target
            ));
        }
        for (n, what) in [
            (self.lost, "lost"),
            (self.duplicated, "duplicated"),
            (self.dropped.round() as u64, "dropped by sidecars"),
        ] {
            if n > 0 {
                broken.push(format!("{n} events {what}"));
            }
        }
        match self.p99 {
            Some(p) if p <= slo.p99.as_secs_f64() => {}
            Some(p) => broken.push(format!(
                "p99 ingest latency ~{:.0} ms > {:?}",
                p * 1e3,
                slo.p99
            )),
            None => broken.push("no ingest latency recorded".to_owned()),
        }
        if (self.stored_by_stop as f64) < STORED_SHARE * self.sent as f64 {
            broken.push(format!(
                "only {:.0}% of the step's events stored while it ran",
                100.0 * self.stored_by_stop as f64 / self.sent.max(1) as f64
            ));
        }
        if self.lag_secs() > slo.lag.as_secs_f64() {
            broken.push(format!(
                "lag {:.1} s > {:?} at the end of the step",
                self.lag_secs(),
                slo.lag
            ));
        }
        self.broken = broken;
    }
}

/// Feeds `rate` events/s per host for `duration`, failing if a sidecar dies meanwhile.
fn feed_for(rig: &mut Rig, seed: u64, rate: u64, duration: Duration) -> anyhow::Result<f64> {
    let feeds = Feeds::start(&rig.sockets(), rate, seed, &rig.sent);
    let started = Instant::now();
    let (mut last_report, mut last_disk) = (Instant::now(), Instant::now());
    let mut alive = Ok(());
    while started.elapsed() < duration && alive.is_ok() {
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "    {:>4.0} s: {} events sent in all",
                started.elapsed().as_secs_f64(),
                rig.sent.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        alive = rig.check_sidecars();
        if alive.is_ok() && last_disk.elapsed() >= Duration::from_secs(2) {
            last_disk = Instant::now();
            alive = rig.check_disk();
        }
    }
    let stopped = feeds.stop();
    let held = started.elapsed().as_secs_f64();
    alive?;
    stopped?;
    Ok(held)
}

/// Waits until ClickHouse holds `base + sent` events, the drain stalls or the limit passes;
/// returns the count (minus `base`) and how long it took.
fn drain(rig: &Rig, base: u64, sent: u64) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let (mut last, mut last_change) = (0, Instant::now());
    loop {
        let n = rig.stored()?.saturating_sub(base);
        if n != last {
            (last, last_change) = (n, Instant::now());
        }
        if n >= sent || started.elapsed() > DRAIN_LIMIT || last_change.elapsed() > DRAIN_STALL {
            return Ok((n, started.elapsed().as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Holds `rate` events/s per host for `duration`, then drains and judges the step.
pub fn hold(
    rig: &mut Rig,
    index: u64,
    rate: u64,
    duration: Duration,
    slo: &Slo,
) -> anyhow::Result<Step> {
    let target = rate * rig.sidecars.len() as u64;
    eprintln!("step {}: {target} events/s for {duration:?}...", index + 1);
    let base = rig.stored()?;
    let sent_before = rig.sent.load(std::sync::atomic::Ordering::Relaxed);
    let (buckets_before, drops_before) = (rig.latency_buckets()?, rig.sidecar_drops()?);
    let held_secs = feed_for(rig, index + 1, rate, duration)?;
    let sent = rig.sent.load(std::sync::atomic::Ordering::Relaxed) - sent_before;
    let stored_by_stop = rig.stored()?.saturating_sub(base);
    let (stored, drain_secs) = drain(rig, base, sent)?;
    let buckets = prom::bucket_diff(&rig.latency_buckets()?, &buckets_before);
    let mut step = Step {
        rate_per_host: rate,
        target,
        held_secs,
        sent,
        stored_by_stop,
        stored,
        drain_secs,
        lost: sent.saturating_sub(stored),
        duplicated: stored.saturating_sub(sent),
        dropped: rig.sidecar_drops()? - drops_before,
        p50: prom::interpolated_quantile(&buckets, 0.50),
        p99: prom::interpolated_quantile(&buckets, 0.99),
        p99_bucket: prom::bucket_quantile(&buckets, 0.99),
        broken: Vec::new(),
    };
    step.judge(slo);
    Ok(step)
}
