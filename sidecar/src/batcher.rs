//! The batcher: gathers validated events into batches of at most `max_events`, closes a batch
//! when it is full or its first event has waited `max_wait`, compresses it and hands it to the
//! spool. Profiles (relayed from apps, or sampled by the sidecar) are already aggregated per
//! label set and interval: each becomes one spool record of its own, as it arrives; so does
//! each pass of memory samples.
//!
//! Invariants: events are spooled in the order they were received; a batch or profile is in
//! memory only until its spool write returns (a `kill -9` loses at most the open batch and what
//! the channel holds, never a spooled one); the receiver closing flushes everything held.

use std::sync::Arc;
use std::time::Duration;

use profwatch_model::memory::{MemoryBatch, MemorySample};
use profwatch_model::profile::ProfileBatch;
use profwatch_model::{wire, RequestEvent};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::metrics::{DropReason, Metrics};
use super::spool::{RecordKind, Spool, Unit};
use profwatch_agent::sampler::{folded, query};

/// zstd level for batch bodies: fast, and still ~10x on event batches.
const ZSTD_LEVEL: i32 = 1;

/// What the listeners and the profiler hand to the batcher.
#[derive(Debug)]
pub enum Input {
    /// Validated, enriched events.
    Events(Vec<RequestEvent>),
    /// One label set's stacks sampled at `frequency_hz`, validated.
    Profile {
        profile: ProfileBatch,
        frequency_hz: u32,
    },
    /// One pass of memory samples, validated.
    Memory(Vec<MemorySample>),
}

/// Batches events into the spool.
#[derive(Debug)]
pub struct Batcher {
    pub max_events: usize,
    pub max_wait: Duration,
    pub spool: Arc<Spool>,
    pub metrics: Arc<Metrics>,
}

impl Batcher {
    /// Runs until `rx` is closed and drained, then flushes what it holds.
    pub async fn run(self, mut rx: mpsc::Receiver<Input>) {
        let mut pending: Vec<RequestEvent> = Vec::with_capacity(self.max_events);
        let mut deadline: Option<Instant> = None;
        loop {
            let received = match deadline {
                Some(at) => tokio::select! {
                    chunk = rx.recv() => chunk,
                    () = tokio::time::sleep_until(at) => {
                        self.flush(std::mem::take(&mut pending)).await;
                        deadline = None;
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let chunk = match received {
                None => break,
                Some(Input::Events(chunk)) => chunk,
                Some(Input::Profile {
                    profile,
                    frequency_hz,
                }) => {
                    self.spool_profile(profile, frequency_hz).await;
                    continue;
                }
                Some(Input::Memory(samples)) => {
                    self.spool_memory(samples).await;
                    continue;
                }
            };
            if chunk.is_empty() {
                continue;
            }
            if pending.is_empty() {
                deadline = Some(Instant::now() + self.max_wait);
            }
            pending.extend(chunk);
            while pending.len() >= self.max_events {
                let rest = pending.split_off(self.max_events);
                let full = std::mem::replace(&mut pending, rest);
                self.flush(full).await;
                deadline = (!pending.is_empty()).then(|| Instant::now() + self.max_wait);
            }
        }
        while !pending.is_empty() {
            let take = pending.len().min(self.max_events);
            let rest = pending.split_off(take);
            let batch = std::mem::replace(&mut pending, rest);
            self.flush(batch).await;
        }
    }

    async fn flush(&self, events: Vec<RequestEvent>) {
        if events.is_empty() {
            return;
        }
        let spool = self.spool.clone();
        let metrics = self.metrics.clone();
        let n = events.len();
        let done = tokio::task::spawn_blocking(move || {
            let body = encode(events)?;
            spool
                .append(
                    RecordKind::Events,
                    u32::try_from(n).unwrap_or(u32::MAX),
                    &body,
                )
                .map_err(|e| e.to_string())
        })
        .await;
        let error = match done {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(e) => format!("spool task failed: {e}"),
        };
        tracing::error!(events = n, "cannot spool a batch; dropped: {error}");
        metrics.dropped(DropReason::SpoolError, n as u64);
        metrics.set_last_error(error);
    }

    async fn spool_profile(&self, profile: ProfileBatch, frequency_hz: u32) {
        let spool = self.spool.clone();
        let done = tokio::task::spawn_blocking(move || {
            let (query, body) = encode_profile(&profile, frequency_hz)?;
            let samples: u64 = profile.samples.iter().map(|s| s.samples).sum();
            spool
                .append(
                    RecordKind::Profile { query },
                    u32::try_from(samples).unwrap_or(u32::MAX),
                    &body,
                )
                .map_err(|e| e.to_string())
        })
        .await;
        let error = match done {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(e) => format!("spool task failed: {e}"),
        };
        tracing::error!("cannot spool a profile; dropped: {error}");
        self.metrics.profiles_dropped(DropReason::SpoolError, 1);
        self.metrics.set_last_error(error);
    }
}

impl Batcher {
    async fn spool_memory(&self, samples: Vec<MemorySample>) {
        if samples.is_empty() {
            return;
        }
        let n = samples.len();
        let spool = self.spool.clone();
        let done = tokio::task::spawn_blocking(move || {
            let body = encode_memory(samples)?;
            spool
                .append(
                    RecordKind::Memory,
                    u32::try_from(n).unwrap_or(u32::MAX),
                    &body,
                )
                .map_err(|e| e.to_string())
        })
        .await;
        let error = match done {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(e) => format!("spool task failed: {e}"),
        };
        tracing::error!(samples = n, "cannot spool memory samples; dropped: {error}");
        self.metrics
            .dropped_in(DropReason::SpoolError, Unit::MemorySamples, n as u64);
        self.metrics.set_last_error(error);
    }
}

/// Memory samples as the collector's `POST /api/v1/memory` takes them: a JSON
/// [`MemoryBatch`], zstd-compressed.
pub fn encode_memory(samples: Vec<MemorySample>) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(&MemoryBatch { samples }).map_err(|e| format!("json: {e}"))?;
    zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(|e| format!("zstd: {e}"))
}

/// A profile as the collector's `POST /api/v1/profiles?{query}` takes it: the query string
/// (labels, `format=folded`, `sample_rate`, `ts`) and the folded stacks, zstd-compressed.
pub fn encode_profile(
    profile: &ProfileBatch,
    frequency_hz: u32,
) -> Result<(String, Vec<u8>), String> {
    let body = zstd::bulk::compress(folded(profile).as_bytes(), ZSTD_LEVEL)
        .map_err(|e| format!("zstd: {e}"))?;
    Ok((query(profile, frequency_hz), body))
}

/// The body sent to the collector: a protobuf `EventBatch`, zstd-compressed. Takes the events
/// by value so their strings move into the wire structs instead of being copied.
pub fn encode(events: Vec<RequestEvent>) -> Result<Vec<u8>, String> {
    let batch = wire::EventBatch {
        events: events
            .into_iter()
            .map(|e| wire::WireEvent {
                ts_unix_nano: e.ts,
                service: e.service,
                endpoint: e.endpoint,
                build: e.build,
                dc: e.dc,
                host: e.host,
                status: u32::from(e.status),
                cpu_ns: e.cpu_ns,
                instructions: e.instructions,
                wall_ns: e.wall_ns,
                weight: e.weight,
                labels: e.labels,
            })
            .collect(),
    };
    zstd::bulk::compress(&prost::Message::encode_to_vec(&batch), ZSTD_LEVEL)
        .map_err(|e| format!("zstd: {e}"))
}
