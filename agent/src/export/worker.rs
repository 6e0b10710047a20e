//! The export thread: drains the queue into batches and hands them to the exporter.
//!
//! Invariants: this is the only consumer of the queue and the only caller of the exporter.
//! The queue is drained every 20 ms (never by blocking on it, so senders never wake this
//! thread). A batch is shipped when it reaches `max_batch`, when `flush_interval` passes, on
//! a flush request and when every sender is gone (then the thread ends). Events the collector would
//! refuse are dropped and counted before shipping, so one bad event never sinks a batch.

use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use profwatch_model::{timefmt::now_ns, Labels, Limits, RequestEvent};

use super::Exporter;
use crate::endpoint::EndpointName;
use crate::labels::LabelSet;
use crate::stats::StatCells;

/// One measured request, as it travels through the queue (no per-event allocation).
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) ts: i64,
    pub(crate) endpoint: EndpointName,
    pub(crate) status: u16,
    pub(crate) cpu_ns: u64,
    pub(crate) instructions: Option<u64>,
    pub(crate) wall_ns: u64,
    pub(crate) weight: f64,
    pub(crate) labels: LabelSet,
}

/// A queue slot. The record is held inline: boxing it would allocate per event.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Event(Record),
    /// Ship everything queued before this message, then answer.
    Flush(SyncSender<()>),
}

/// What every event of this process carries.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    pub(crate) service: String,
    pub(crate) build: String,
    pub(crate) dc: String,
    pub(crate) host: String,
}

pub(crate) struct Worker {
    pub(crate) rx: Receiver<Msg>,
    pub(crate) exporter: Box<dyn Exporter>,
    pub(crate) meta: Metadata,
    pub(crate) stats: Arc<StatCells>,
    pub(crate) max_batch: usize,
    pub(crate) flush_interval: Duration,
}

/// How often the queue is drained: the queue must hold this long's worth of events.
const TICK: Duration = Duration::from_millis(20);

/// Attempts per batch, and the pause before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(500)];

impl Worker {
    pub(crate) fn run(mut self) {
        let mut batch: Vec<RequestEvent> = Vec::with_capacity(self.max_batch);
        let mut deadline = Instant::now() + self.flush_interval;
        let mut failing = false;
        let tick = self.flush_interval.min(TICK);
        loop {
            // Polling instead of blocking in `recv` keeps the receiver from ever parking, so
            // a sender's `try_send` never has to wake it (a futex syscall per event).
            std::thread::sleep(tick);
            loop {
                match self.rx.try_recv() {
                    Ok(Msg::Event(record)) => {
                        batch.push(self.event(record));
                        if batch.len() >= self.max_batch {
                            self.ship(&mut batch, &mut failing);
                        }
                    }
                    Ok(Msg::Flush(ack)) => {
                        self.ship(&mut batch, &mut failing);
                        // The flusher may have given up waiting; nothing to do then.
                        let _ = ack.send(());
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.ship(&mut batch, &mut failing);
                        return;
                    }
                }
            }
            if Instant::now() >= deadline {
                self.ship(&mut batch, &mut failing);
                deadline = Instant::now() + self.flush_interval;
            }
        }
    }

    fn event(&self, r: Record) -> RequestEvent {
        StatCells::add(&self.stats.labels_dropped, u64::from(r.labels.dropped()));
        let labels: Labels = r
            .labels
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        RequestEvent {
            ts: r.ts,
            service: self.meta.service.clone(),
            endpoint: r.endpoint.as_str().to_owned(),
            build: self.meta.build.clone(),
            dc: self.meta.dc.clone(),
            host: self.meta.host.clone(),
            status: r.status.min(999),
            cpu_ns: r.cpu_ns,
            instructions: r.instructions,
            wall_ns: r.wall_ns,
            weight: r.weight,
            labels,
        }
    }

    fn ship(&mut self, batch: &mut Vec<RequestEvent>, failing: &mut bool) {
        let limits = Limits::default();
        let now = now_ns();
        let before = batch.len();
        batch.retain(|e| e.validate(&limits, now).is_ok());
        StatCells::add(&self.stats.invalid, (before - batch.len()) as u64);
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let mut attempt = 0;
        loop {
            match self.exporter.export(batch) {
                Ok(()) => {
                    StatCells::add(&self.stats.exported, n);
                    if std::mem::take(failing) {
                        tracing::info!("profwatch: exporting events again");
                    }
                    break;
                }
                Err(e) if e.is_retriable() && attempt < BACKOFF.len() => {
                    std::thread::sleep(BACKOFF[attempt]);
                    attempt += 1;
                }
                Err(e) => {
                    StatCells::add(&self.stats.export_failed, n);
                    if !std::mem::replace(failing, true) {
                        tracing::warn!("profwatch: dropping {n} events: {e}");
                    }
                    break;
                }
            }
        }
        batch.clear();
    }
}
