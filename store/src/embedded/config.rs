//! The embedded store's settings.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub dir: PathBuf,
    /// Rows older than this are dropped.
    pub retention: Duration,
    /// Rows in the active memtable before it is frozen and flushed to a segment.
    pub flush_rows: usize,
    /// The active memtable is also flushed when it is this old and not empty.
    pub flush_interval: Duration,
    /// Batches waiting for the writer before writes are refused with 503.
    pub queue_batches: usize,
    /// Frozen memtables waiting for the flusher before the writer stalls.
    pub max_frozen: usize,
    /// Upper bound on the rows of one compaction (and so on its memory).
    pub compact_rows: usize,
    /// Threads a query scans with.
    pub query_threads: usize,
    /// On open, copy damaged WAL bytes aside and keep every intact record after them, instead of
    /// refusing to open (`profwatch server --repair`).
    pub repair: bool,
    /// Segments get a per-minute rollup when written and summaries read it where they can (the
    /// default); `false` builds none and scans rows, for comparing both.
    pub rollups: bool,
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            retention: Duration::from_secs(30 * 86_400),
            flush_rows: 1 << 20,
            flush_interval: Duration::from_secs(60),
            queue_batches: 64,
            max_frozen: 2,
            compact_rows: 8 << 20,
            query_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            repair: false,
            rollups: true,
        }
    }
}
