//! Recovery on open: what a crash at any point leaves behind becomes a consistent store again.
//!
//! - `tmp/` holds only files whose write did not finish: it is emptied.
//! - A segment whose range another covers is an input of a compaction that crashed before
//!   retiring it; a profile file without its events file (or a checksum without its file) is a
//!   flush that did not reach its commit point. Both are removed: the merged segment, or the WAL
//!   and the inputs, still hold their rows.
//! - A segment that fails its checksum is moved, both its files, to `quarantine/`; queries
//!   answer from the rest and carry a warning naming it.
//! - Every WAL generation no segment covers is replayed into a frozen memtable for the flusher;
//!   the others are deleted. Damage in a WAL file is refused, or set aside with `repair`.
//! - Idempotency keys within the window are reloaded from segments and replayed records.

use std::path::Path;
use std::sync::Arc;

use profwatch_model::timefmt::now_ns;

use super::files::{self, list};
use super::keys::SeenKeys;
use super::memtable::MemTable;
use super::segment::{self, SegmentMeta};
use super::writer::apply;
use super::{profile_segment, wal};
use crate::stack_ids::StackIds;
use crate::StoreError;

/// What open found on disk.
#[derive(Debug)]
pub struct Recovered {
    pub segments: Vec<Arc<SegmentMeta>>,
    /// A line per segment set aside for failing its checksum.
    pub quarantined: Vec<String>,
    /// The replayed WAL generations, oldest first, waiting for the flusher.
    pub frozen: Vec<Arc<MemTable>>,
    /// The generation of the next WAL file: above every generation on disk.
    pub next_gen: u64,
    /// Idempotency keys accepted within the window.
    pub seen: SeenKeys,
}

/// Recovers the store under `dir` (see the module docs).
pub fn recover(
    dir: &Path,
    wal_dir: &Path,
    seg_dir: &Path,
    tmp_dir: &Path,
    stack_ids: StackIds,
    repair: bool,
) -> Result<Recovered, StoreError> {
    for name in list(tmp_dir)? {
        let p = tmp_dir.join(name);
        std::fs::remove_file(&p).map_err(|e| StoreError::io("remove", &p, e))?;
    }
    let (segments, quarantined) = load_segments(seg_dir, &dir.join("quarantine"))?;
    let (frozen, max_gen) = replay_wal(wal_dir, &segments, stack_ids, repair)?;
    let seen = SeenKeys::recent(
        segments
            .iter()
            .flat_map(|s| s.keys.iter())
            .chain(frozen.iter().flat_map(|m| m.keys.iter())),
        now_ns(),
    );
    Ok(Recovered {
        segments,
        quarantined,
        frozen,
        next_gen: max_gen + 1,
        seen,
    })
}

/// Opens the segments: drops those whose range another covers (an interrupted compaction) and
/// profile files without their events file (an interrupted flush: the WAL or the inputs still
/// hold the rows); verifies each file's checksum and moves a segment that fails it, both its
/// files, to `quarantine` (answered as a warning with every query, never read). Returns the
/// good segments and a line per quarantined one.
fn load_segments(
    seg_dir: &Path,
    quarantine: &Path,
) -> Result<(Vec<Arc<SegmentMeta>>, Vec<String>), StoreError> {
    let mut ranges: Vec<(u64, u64, String)> = list(seg_dir)?
        .into_iter()
        .filter_map(|n| segment::parse_file_name(&n).map(|(lo, hi)| (lo, hi, n)))
        .collect();
    ranges.sort();
    let covered_by_other = |lo: u64, hi: u64| {
        ranges
            .iter()
            .any(|(l, h, _)| *l <= lo && hi <= *h && (*l, *h) != (lo, hi))
    };
    let mut segments = Vec::new();
    let mut quarantined = Vec::new();
    for (lo, hi, name) in &ranges {
        let path = seg_dir.join(name);
        let prof_path = seg_dir.join(profile_segment::file_name(*lo, *hi));
        let pair = [path.as_path(), prof_path.as_path()];
        if covered_by_other(*lo, *hi) {
            tracing::info!(path = %path.display(), "removing a compaction input left behind");
            files::remove_files(&pair)?;
            continue;
        }
        if let Err(e) = files::verify(&path).and_then(|()| files::verify(&prof_path)) {
            tracing::error!(error = %e, "a segment failed its checksum; it is set aside in quarantine/ and queries leave it out");
            files::quarantine(&pair, quarantine)?;
            quarantined.push(format!(
                "segment {name} is damaged ({e}) and was moved to quarantine/: answers leave out \
                 its data"
            ));
            continue;
        }
        let profile = if prof_path.exists() {
            Some(profile_segment::open(&prof_path)?)
        } else {
            None
        };
        segments.push(Arc::new(segment::open(&path, *lo, *hi, profile)?));
    }
    remove_orphans(seg_dir, &segments)?;
    Ok((segments, quarantined))
}

/// Removes profile files without their events segment and checksums without their file.
fn remove_orphans(seg_dir: &Path, segments: &[Arc<SegmentMeta>]) -> Result<(), StoreError> {
    for name in list(seg_dir)? {
        let orphan = match profile_segment::parse_file_name(&name) {
            Some((lo, hi)) => !segments.iter().any(|s| s.lo == lo && s.hi == hi),
            None => name
                .strip_suffix(files::CHECKSUM_SUFFIX)
                .is_some_and(|data| !seg_dir.join(data).exists()),
        };
        if orphan {
            let p = seg_dir.join(&name);
            tracing::info!(path = %p.display(), "removing a segment file whose flush did not finish");
            files::remove_files(&[p.as_path()])?;
        }
    }
    Ok(())
}

/// Replays the WAL generations no segment covers into frozen memtables and deletes the rest.
/// Returns the memtables and the highest generation on disk (in a file or a segment range).
fn replay_wal(
    wal_dir: &Path,
    segments: &[Arc<SegmentMeta>],
    stack_ids: StackIds,
    repair: bool,
) -> Result<(Vec<Arc<MemTable>>, u64), StoreError> {
    let seg_covers = |g: u64| segments.iter().any(|s| s.lo <= g && g <= s.hi);
    let damage = if repair {
        wal::Damage::SetAside
    } else {
        wal::Damage::Refuse
    };
    let mut frozen = Vec::new();
    let mut max_gen = segments.iter().map(|s| s.hi).max().unwrap_or(0);
    let mut replayed = 0usize;
    for name in list(wal_dir)? {
        let Some(gen) = wal::parse_file_name(&name) else {
            continue;
        };
        max_gen = max_gen.max(gen);
        let path = wal_dir.join(&name);
        if seg_covers(gen) {
            std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
            continue;
        }
        let mut mt = MemTable::new(gen, stack_ids);
        for rec in wal::replay(&path, damage)? {
            replayed += rec.entry.rows();
            // The record's own receive time is unknown; the replay time keeps the key for a
            // full window, which errs on the side of dropping a duplicate.
            // Collisions met again on replay were counted (and logged) when first met.
            apply(
                &mut mt,
                &rec.tenant,
                &rec.entry,
                rec.key.as_deref(),
                now_ns(),
            );
        }
        frozen.push(Arc::new(mt));
    }
    if replayed > 0 {
        tracing::info!(
            events = replayed,
            generations = frozen.len(),
            "recovered events from the WAL"
        );
    }
    Ok((frozen, max_gen))
}
