//! The sampler thread: reads every thread's ring, joins samples with the request ranges the
//! hook sent, and every export interval symbolises and ships one profile per label set.
//!
//! Invariants: this thread is the only reader of the rings (so `Ring::drain` is never called
//! concurrently) and the only user of the symboliser and the sink. A sample whose stretch is
//! still open (its range cannot have been sent yet) stays in the ring until the next read. A
//! sample whose request has not reported its labels is kept for one more interval, then shipped
//! without request labels and counted as `unresolved`. A retriable export failure is retried
//! twice (100 ms, 500 ms), then the interval's profiles are dropped and counted. Memory is bounded by the number of
//! distinct (request, stack) pairs in one interval plus the symbol cache and the process's
//! modules' unwind tables (`unwind`'s bounds).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use profwatch_model::profile::SampleLabels;

use super::perf::Record;
use super::session::Session;
use super::session::{Done, Range, IDLE};
use super::sink::ProfileSink;
use super::stacks;
use super::stats::StatCells;
use super::symbols::Symbols;
use super::unwind::Unwinder;

/// Requests from the [`super::Sampler`] handle.
#[derive(Debug)]
pub(crate) enum Ctl {
    /// Read every ring and ship everything now (unresolved samples included), then answer.
    Flush(SyncSender<()>),
}

/// What every profile of this process carries.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    pub(crate) service: String,
    pub(crate) build: String,
    pub(crate) dc: String,
    pub(crate) host: String,
}

/// Pauses before the retries of a retriable export failure (then the profiles are dropped).
const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(500)];

pub(crate) struct Worker {
    pub(crate) session: Arc<Session>,
    pub(crate) ranges_rx: Receiver<Range>,
    pub(crate) done_rx: Receiver<Done>,
    pub(crate) ctl_rx: Receiver<Ctl>,
    pub(crate) sink: Box<dyn ProfileSink>,
    pub(crate) meta: Meta,
    pub(crate) stats: Arc<StatCells>,
    pub(crate) read_interval: Duration,
    pub(crate) export_interval: Duration,
}

#[derive(Default)]
struct State {
    ranges: HashMap<u64, VecDeque<Range>>,
    /// (request tag, leaf-first addresses) → (samples, interval first seen).
    counts: HashMap<(u64, Vec<u64>), (u64, u64)>,
    /// Labels of finished requests, with the interval they arrived in.
    labels: HashMap<u64, (SampleLabels, u64)>,
    interval: u64,
    interval_start_ns: i64,
}

impl Worker {
    pub(crate) fn run(mut self) {
        let mut state = State {
            interval_start_ns: profwatch_model::timefmt::now_ns(),
            ..State::default()
        };
        let mut symbols = Symbols::new(self.session.pid);
        let mut unwinder = Unwinder::new(self.session.pid);
        let mut next_export = Instant::now() + self.export_interval;
        loop {
            match self.ctl_rx.recv_timeout(self.read_interval) {
                Ok(Ctl::Flush(ack)) => {
                    self.read(&mut state, &mut unwinder);
                    self.export(&mut state, &mut symbols, true);
                    next_export = Instant::now() + self.export_interval;
                    let _ = ack.try_send(());
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.read(&mut state, &mut unwinder);
                    if Instant::now() >= next_export {
                        self.export(&mut state, &mut symbols, false);
                        next_export += self.export_interval;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.read(&mut state, &mut unwinder);
                    self.export(&mut state, &mut symbols, true);
                    return;
                }
            }
        }
    }

    /// One pass over every ring; samples are unwound as they are read.
    fn read(&mut self, state: &mut State, unwinder: &mut Unwinder) {
        let rings = self.session.snapshot();
        // Head first, then `active`, then the ranges: see the hook's invariants.
        let marks: Vec<(u64, u64)> = rings
            .iter()
            .map(|r| {
                let head = r.ring.head();
                (head, r.active.load(Ordering::Acquire))
            })
            .collect();
        while let Ok(range) = self.ranges_rx.try_recv() {
            state.ranges.entry(range.ring).or_default().push_back(range);
        }
        let interval = state.interval;
        for (ring, (head, active)) in rings.iter().zip(marks) {
            let queue = state.ranges.entry(ring.id).or_default();
            let counts = &mut state.counts;
            let stats = &self.stats;
            ring.ring.drain(head, |record| match record {
                Record::Lost { count } => {
                    StatCells::add(&stats.lost, count);
                    true
                }
                Record::Sample {
                    offset, ips, user, ..
                } => {
                    while queue.front().is_some_and(|r| r.end <= offset) {
                        queue.pop_front();
                    }
                    let tag = match queue.front() {
                        Some(r) if r.start <= offset => r.tag,
                        _ if active != IDLE && offset >= active => return false,
                        _ => 0,
                    };
                    let ips = unwinder.callchain(ips, user);
                    if ips.is_empty() {
                        return true;
                    }
                    StatCells::add(
                        if tag == 0 {
                            &stats.unattributed
                        } else {
                            &stats.attributed
                        },
                        1,
                    );
                    counts.entry((tag, ips)).or_insert((0, interval)).0 += 1;
                    true
                }
            });
        }
        let unwound = unwinder.counts();
        let cells = &self.stats;
        cells.unwound.store(unwound.complete, Ordering::Relaxed);
        cells.truncated.store(unwound.truncated, Ordering::Relaxed);
        let info = unwinder.info_bytes() as u64;
        cells.unwind_info_bytes.store(info, Ordering::Relaxed);
        self.session.prune(|r| r.ring.is_drained());
        let live: HashSet<u64> = self.session.snapshot().iter().map(|r| r.id).collect();
        state.ranges.retain(|id, _| live.contains(id));
    }

    /// Ships the interval's profiles; with `all`, also samples still waiting for labels.
    fn export(&mut self, state: &mut State, symbols: &mut Symbols, all: bool) {
        let interval = state.interval;
        while let Ok(done) = self.done_rx.try_recv() {
            let mut labels = self.base_labels();
            labels.endpoint = done.endpoint.as_str().to_owned();
            labels.extra = done
                .labels
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            state.labels.insert(done.tag, (labels, interval));
        }
        let mut ready: Vec<(u64, Vec<u64>, u64)> = Vec::new();
        state.counts.retain(|(tag, ips), (n, seen)| {
            let waiting = *tag != 0 && !state.labels.contains_key(tag);
            if waiting && !all && *seen == interval {
                return true;
            }
            ready.push((*tag, ips.clone(), *n));
            false
        });
        let base = self.base_labels();
        symbols.resolve(
            ready
                .iter()
                .flat_map(|(_, ips, _)| stacks::lookup_addrs(ips)),
        );
        let mut grouped = stacks::Grouped::new();
        for (tag, ips, n) in ready {
            let labels = match state.labels.get(&tag) {
                Some((labels, _)) => labels.clone(),
                None => {
                    if tag != 0 {
                        StatCells::add(&self.stats.unresolved, n);
                    }
                    base.clone()
                }
            };
            *grouped
                .entry(labels)
                .or_default()
                .entry(stacks::frames(&ips, symbols))
                .or_default() += n;
        }
        let now = profwatch_model::timefmt::now_ns();
        let batches = stacks::batches(
            grouped,
            state.interval_start_ns,
            self.session.spec.frequency_hz,
        );
        state.labels.retain(|_, (_, seen)| *seen + 1 >= interval);
        state.interval += 1;
        state.interval_start_ns = now;
        if batches.is_empty() {
            return;
        }
        let mut result = self.sink.export(&batches, self.session.spec.frequency_hz);
        for pause in BACKOFF {
            match &result {
                Err(e) if e.is_retriable() => std::thread::sleep(pause),
                _ => break,
            }
            result = self.sink.export(&batches, self.session.spec.frequency_hz);
        }
        match result {
            Ok(()) => StatCells::add(&self.stats.profiles_exported, batches.len() as u64),
            Err(e) => {
                StatCells::add(&self.stats.export_failed, batches.len() as u64);
                tracing::warn!(
                    "profwatch sampler: dropping {} profiles: {e}",
                    batches.len()
                );
            }
        }
    }

    fn base_labels(&self) -> SampleLabels {
        SampleLabels {
            service: self.meta.service.clone(),
            endpoint: String::new(),
            build: self.meta.build.clone(),
            dc: self.meta.dc.clone(),
            host: self.meta.host.clone(),
            extra: Default::default(),
        }
    }
}
