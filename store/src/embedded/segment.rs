//! Segment files: immutable Parquet files, `seg-<lo>-<hi>.parquet`, holding the rows of WAL
//! generations `lo..=hi`.
//!
//! Columns: `ts`, `series`, `status`, `cpu_ns`, `instructions` (optional), `wall_ns`, `weight`.
//! The series dictionary (JSON, zstd-compressed: `files.rs`) and the time bounds are in the
//! file's key-value metadata, so a query learns from the footer alone whether a file can hold
//! rows it wants. Files are written under `tmp/`, fsynced, and renamed into place, so a file in
//! `segments/` is always complete.
//! A segment whose range lies inside another's is a leftover of a compaction that crashed before
//! deleting its inputs, and is removed on open.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parquet::basic::Encoding;
use parquet::data_type::{DoubleType, Int32Type, Int64Type};
use parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::ReaderProperties;
use parquet::file::reader::RowGroupReader;
use parquet::file::serialized_reader::SerializedRowGroupReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;

use super::files::{
    guarded, parse_range_file_name, pq, put_in_place, range_file_name, read_i32, read_i64,
    remove_files, sync_dir, time_bounds, writer_settings, Footer, KEY_MAX_TS, KEY_MIN_TS,
};
use super::keys::IdemKey;
use super::memtable::{Rows, SeriesKey};
use super::profile_segment::ProfileMeta;
use super::rollup::{Builder, EndpointRollup, RowSink, SegmentRollup, MAX_SHARE};
use crate::StoreError;

const SCHEMA: &str = "message profwatch_segment {
  required int64 ts;
  required int32 series;
  required int32 status;
  required int64 cpu_ns;
  optional int64 instructions;
  required int64 wall_ns;
  required double weight;
}";
/// Rows per row group (small in unit tests, so that their segments have several).
const ROW_GROUP: usize = if cfg!(test) { 4096 } else { 256 * 1024 };
const KEY_IDEMPOTENCY: &str = "profwatch.idempotency_keys";

/// What a segment carries besides its event rows.
#[derive(Debug, Default)]
pub struct Attached {
    /// The profile segment of the same range.
    pub profile: Option<ProfileMeta>,
    pub keys: Vec<IdemKey>,
    /// Build the rollup now, from the rows in memory (else the first query that can use it
    /// builds it); off when summaries read rows (`EmbeddedConfig::rollups`).
    pub rollup: bool,
}

/// Column indices in [`SCHEMA`].
pub mod col {
    pub const TS: usize = 0;
    pub const SERIES: usize = 1;
    pub const STATUS: usize = 2;
    pub const CPU_NS: usize = 3;
    pub const INSTRUCTIONS: usize = 4;
    pub const WALL_NS: usize = 5;
    pub const WEIGHT: usize = 6;
}

/// What is known about a segment without reading its rows. When the last reference to a
/// segment marked obsolete goes away, its file is deleted, so queries that still hold it can
/// finish reading.
#[derive(Debug)]
pub struct SegmentMeta {
    pub path: PathBuf,
    pub lo: u64,
    pub hi: u64,
    pub rows: u64,
    pub bytes: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub series: Vec<Arc<SeriesKey>>,
    /// The profile segment of the same range, if any samples were flushed with it.
    pub profile: Option<ProfileMeta>,
    /// Idempotency keys of the batches in this segment.
    pub keys: Vec<IdemKey>,
    /// The file's Parquet metadata without our key-value entries (the series dictionary alone
    /// takes megabytes), parsed by the first scan so that later scans skip the footer.
    parquet: OnceLock<Arc<ParquetMetaData>>,
    /// Per-series totals, by series index, once a query has computed them.
    totals: OnceLock<Arc<Vec<SeriesTotals>>>,
    /// The rollup (see `rollup.rs`): `Some(None)` when it was not worth keeping.
    rollup: OnceLock<Option<Arc<SegmentRollup>>>,
    /// The rollup per endpoint (see `rollup.rs`), built by the first query that can use it:
    /// `Some(None)` when it was not worth keeping.
    endpoint_rollup: OnceLock<Option<Arc<EndpointRollup>>>,
    obsolete: AtomicBool,
}

/// What a query that only counts requests needs of one series of a segment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeriesTotals {
    pub rows: u64,
    pub weight: f64,
    /// First and last `ts` (meaningless when `rows` is 0).
    pub first: i64,
    pub last: i64,
}

impl SeriesTotals {
    pub fn add(&mut self, ts: i64, weight: f64) {
        if self.rows == 0 {
            (self.first, self.last) = (ts, ts);
        } else {
            self.first = self.first.min(ts);
            self.last = self.last.max(ts);
        }
        self.rows += 1;
        self.weight += weight;
    }

    pub fn merge(&mut self, other: &SeriesTotals) {
        if other.rows == 0 {
            return;
        }
        if self.rows == 0 {
            *self = *other;
            return;
        }
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.rows += other.rows;
        self.weight += other.weight;
    }
}

impl SegmentMeta {
    /// The per-series totals, if a query computed them.
    pub fn totals(&self) -> Option<Arc<Vec<SeriesTotals>>> {
        self.totals.get().cloned()
    }

    /// Keeps per-series totals (the first ones kept win; the rows never change).
    pub fn keep_totals(&self, totals: Vec<SeriesTotals>) -> Arc<Vec<SeriesTotals>> {
        self.totals.get_or_init(|| Arc::new(totals)).clone()
    }

    /// The rollup, once computed: `Some(None)` when it is not worth keeping.
    pub fn rollup(&self) -> Option<Option<Arc<SegmentRollup>>> {
        self.rollup.get().cloned()
    }

    /// Keeps the rollup built from this segment's rows, if it is worth keeping (the first one
    /// kept wins; the rows never change).
    pub fn keep_rollup(&self, rollup: SegmentRollup) -> Option<Arc<SegmentRollup>> {
        self.rollup
            .get_or_init(|| rollup.worth_keeping(self.rows).map(Arc::new))
            .clone()
    }

    /// The rollup per endpoint, once computed: `Some(None)` when it is not worth keeping.
    pub fn endpoint_rollup(&self) -> Option<Option<Arc<EndpointRollup>>> {
        self.endpoint_rollup.get().cloned()
    }

    /// Keeps the rollup per endpoint built from this segment's rows, if it is worth keeping
    /// (the first one kept wins).
    pub fn keep_endpoint_rollup(
        &self,
        of_series: Vec<u32>,
        cells: SegmentRollup,
    ) -> Option<Arc<EndpointRollup>> {
        self.endpoint_rollup
            .get_or_init(|| {
                cells.worth_keeping(self.rows).map(|cells| {
                    Arc::new(EndpointRollup {
                        of_series,
                        cells: Arc::new(cells),
                    })
                })
            })
            .clone()
    }

    /// Rows of both kinds (events and stack samples).
    pub fn total_rows(&self) -> u64 {
        self.rows + self.profile.as_ref().map_or(0, |p| p.rows)
    }

    /// The newest row of either kind (events or stack samples), for retention: a segment is
    /// past retention only when everything in it is.
    pub fn newest_ts(&self) -> i64 {
        let events = (self.rows > 0).then_some(self.max_ts);
        let samples = self
            .profile
            .as_ref()
            .filter(|p| p.rows > 0)
            .map(|p| p.max_ts);
        events.max(samples).unwrap_or(i64::MIN)
    }

    /// Deletes the file once no query holds this segment any more.
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::SeqCst);
    }
}

impl Drop for SegmentMeta {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::SeqCst) {
            let paths: Vec<&Path> = std::iter::once(&self.path)
                .chain(self.profile.as_ref().map(|p| &p.path))
                .map(PathBuf::as_path)
                .collect();
            if let Err(e) = remove_files(&paths) {
                tracing::warn!(error = %e, "could not delete an obsolete segment");
            }
        }
    }
}

pub fn file_name(lo: u64, hi: u64) -> String {
    range_file_name("seg", lo, hi)
}

pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    parse_range_file_name("seg", name)
}

/// Writes sorted rows as segment `lo..=hi` into `dir`, via `tmp_dir`, durably.
pub fn write(
    dir: &Path,
    tmp_dir: &Path,
    lo: u64,
    hi: u64,
    series: &[Arc<SeriesKey>],
    rows: &Rows,
    attached: Attached,
) -> Result<SegmentMeta, StoreError> {
    let build_rollup = attached.rollup;
    let name = file_name(lo, hi);
    let tmp = tmp_dir.join(&name);
    let path = dir.join(&name);
    let (min_ts, max_ts) = time_bounds(&rows.ts);
    let (builder, mut footer) = writer_settings(&name, &tmp, series, min_ts, max_ts)?;
    footer.push(KeyValue::new(
        KEY_IDEMPOTENCY.to_owned(),
        serde_json::to_string(&attached.keys).unwrap_or_else(|_| "[]".into()),
    ));
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(|e| pq(&tmp, e))?);
    let builder = builder
        // Rows are sorted by (series, ts): time deltas are small; costs are near-unique.
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED);
    // Costs: their high bytes vary little and their low bytes are noise; split into byte
    // streams, zstd packs the high ones (on the bench's data 3.5-3.7 bytes per column and event
    // plain, 3.0-3.3 split: bench/README.md).
    let builder = ["cpu_ns", "instructions", "wall_ns"]
        .into_iter()
        .fold(builder, |b, c| {
            b.set_column_dictionary_enabled(ColumnPath::from(c), false)
                .set_column_encoding(ColumnPath::from(c), Encoding::BYTE_STREAM_SPLIT)
        });
    let props = Arc::new(builder.set_key_value_metadata(Some(footer)).build());
    let file = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(|e| pq(&tmp, e))?;
    let mut start = 0;
    while start < rows.len() || (start == 0 && rows.is_empty()) {
        let end = (start + ROW_GROUP).min(rows.len());
        write_row_group(&mut writer, rows, start, end).map_err(|e| pq(&tmp, e))?;
        if rows.is_empty() {
            break;
        }
        start = end;
    }
    let bytes = put_in_place(writer, &tmp, &path)?;
    sync_dir(dir)?;
    Ok(SegmentMeta {
        path,
        lo,
        hi,
        rows: rows.len() as u64,
        bytes,
        min_ts,
        max_ts,
        series: series.to_vec(),
        profile: attached.profile,
        keys: attached.keys,
        parquet: OnceLock::new(),
        totals: OnceLock::from(Arc::new(series_totals(rows, series.len()))),
        rollup: if build_rollup {
            OnceLock::from(
                rollup_of(rows)
                    .worth_keeping(rows.len() as u64)
                    .map(Arc::new),
            )
        } else {
            OnceLock::new()
        },
        endpoint_rollup: OnceLock::new(),
        obsolete: AtomicBool::new(false),
    })
}

fn rollup_of(rows: &Rows) -> SegmentRollup {
    let mut b = Builder::with_limit(rows.len() as u64 / MAX_SHARE);
    b.push_rows(rows);
    b.finish()
}

fn series_totals(rows: &Rows, series: usize) -> Vec<SeriesTotals> {
    let mut out = vec![SeriesTotals::default(); series];
    for i in 0..rows.len() {
        if let Some(t) = out.get_mut(rows.series[i] as usize) {
            t.add(rows.ts[i], rows.weight[i]);
        }
    }
    out
}

fn write_row_group(
    writer: &mut SerializedFileWriter<File>,
    rows: &Rows,
    start: usize,
    end: usize,
) -> parquet::errors::Result<()> {
    let r = start..end;
    let ts = &rows.ts[r.clone()];
    let series: Vec<i32> = rows.series[r.clone()].iter().map(|v| *v as i32).collect();
    let status: Vec<i32> = rows.status[r.clone()]
        .iter()
        .map(|v| i32::from(*v))
        .collect();
    let cpu: Vec<i64> = rows.cpu_ns[r.clone()].iter().map(|v| *v as i64).collect();
    let mut instr = Vec::with_capacity(end - start);
    let mut instr_def = Vec::with_capacity(end - start);
    for v in &rows.instructions[r.clone()] {
        match v {
            Some(v) => {
                instr.push(*v as i64);
                instr_def.push(1i16);
            }
            None => instr_def.push(0),
        }
    }
    let wall: Vec<i64> = rows.wall_ns[r.clone()].iter().map(|v| *v as i64).collect();
    let weight = &rows.weight[r];

    let mut rg = writer.next_row_group()?;
    let mut i = 0;
    while let Some(mut c) = rg.next_column()? {
        match i {
            col::TS => {
                c.typed::<Int64Type>().write_batch(ts, None, None)?;
            }
            col::SERIES => {
                c.typed::<Int32Type>().write_batch(&series, None, None)?;
            }
            col::STATUS => {
                c.typed::<Int32Type>().write_batch(&status, None, None)?;
            }
            col::CPU_NS => {
                c.typed::<Int64Type>().write_batch(&cpu, None, None)?;
            }
            col::INSTRUCTIONS => {
                c.typed::<Int64Type>()
                    .write_batch(&instr, Some(&instr_def), None)?;
            }
            col::WALL_NS => {
                c.typed::<Int64Type>().write_batch(&wall, None, None)?;
            }
            _ => {
                c.typed::<DoubleType>().write_batch(weight, None, None)?;
            }
        }
        c.close()?;
        i += 1;
    }
    rg.close()?;
    Ok(())
}

/// Reads a segment's footer.
pub fn open(
    path: &Path,
    lo: u64,
    hi: u64,
    profile: Option<ProfileMeta>,
) -> Result<SegmentMeta, StoreError> {
    let f = Footer::read(path)?;
    Ok(SegmentMeta {
        path: path.to_owned(),
        lo,
        hi,
        rows: f.rows,
        bytes: f.bytes,
        min_ts: f.parse(KEY_MIN_TS)?,
        max_ts: f.parse(KEY_MAX_TS)?,
        series: f.series()?,
        profile,
        keys: match f.kv.get(KEY_IDEMPOTENCY) {
            Some(v) => serde_json::from_str(v).map_err(|_| f.bad(KEY_IDEMPOTENCY))?,
            None => Vec::new(),
        },
        parquet: OnceLock::new(),
        totals: OnceLock::new(),
        rollup: OnceLock::new(),
        endpoint_rollup: OnceLock::new(),
        obsolete: AtomicBool::new(false),
    })
}

/// The columns a scan wants; unread columns stay empty in the [`Rows`] it yields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Projection {
    pub status: bool,
    pub wall_ns: bool,
    /// Leave out `cpu_ns` and `instructions` (a query that counts requests).
    pub no_costs: bool,
}

/// Which row groups a scan may skip: those whose statistics show no wanted series (a segment's
/// rows are sorted by series, and series by key, so one endpoint's rows sit in a few groups) or
/// no time in the range. The default skips nothing.
#[derive(Debug, Clone, Default)]
pub struct Skip {
    /// `wanted_below[i]`: wanted series with an index below `i`.
    wanted_below: Option<Vec<u32>>,
    range: Option<(i64, i64)>,
}

impl Skip {
    /// Keeps row groups that may hold a series `wanted` says yes to, at a time in
    /// `from..to`.
    pub fn new(wanted: impl IntoIterator<Item = bool>, from: i64, to: i64) -> Skip {
        let mut below = vec![0u32];
        let mut n = 0u32;
        for w in wanted {
            n += u32::from(w);
            below.push(n);
        }
        Skip {
            wanted_below: Some(below),
            range: Some((from, to)),
        }
    }

    fn skips(&self, rg: &parquet::file::metadata::RowGroupMetaData) -> bool {
        use parquet::file::statistics::Statistics;
        let bounds = |c: usize| match rg.column(c).statistics() {
            Some(Statistics::Int32(s)) => {
                Some((i64::from(*s.min_opt()?), i64::from(*s.max_opt()?)))
            }
            Some(Statistics::Int64(s)) => Some((*s.min_opt()?, *s.max_opt()?)),
            _ => None,
        };
        if let (Some((from, to)), Some((lo, hi))) = (self.range, bounds(col::TS)) {
            if hi < from || lo >= to {
                return true;
            }
        }
        if let (Some(below), Some((lo, hi))) = (&self.wanted_below, bounds(col::SERIES)) {
            let at = |i: i64| below[(i.max(0) as usize).min(below.len() - 1)];
            if lo >= 0 && hi >= lo && at(hi + 1) == at(lo) {
                return true;
            }
        }
        false
    }
}

/// Row groups in a segment of `rows` rows.
pub fn row_groups(rows: u64) -> usize {
    (rows as usize).div_ceil(ROW_GROUP).max(1)
}

/// Reads a segment row group by row group, calling `f` with each group's rows.
pub fn scan(
    seg: &SegmentMeta,
    projection: Projection,
    f: impl FnMut(&Rows),
) -> Result<(), StoreError> {
    scan_part(seg, projection, &Skip::default(), 0, 1, f)
}

/// Like [`scan`], for part `part` of `parts` contiguous runs of row groups only, so that
/// several threads can share one segment (the parts in order hold the rows in file order), and
/// leaving out the row groups `skip` rules out.
pub fn scan_part(
    seg: &SegmentMeta,
    projection: Projection,
    skip: &Skip,
    part: usize,
    parts: usize,
    f: impl FnMut(&Rows),
) -> Result<(), StoreError> {
    guarded(&seg.path, || {
        scan_part_unguarded(seg, projection, skip, part, parts, f)
    })
}

fn scan_part_unguarded(
    seg: &SegmentMeta,
    projection: Projection,
    skip: &Skip,
    part: usize,
    parts: usize,
    mut f: impl FnMut(&Rows),
) -> Result<(), StoreError> {
    let path = &seg.path;
    let file = Arc::new(File::open(path).map_err(|e| StoreError::io("open", path, e))?);
    let meta = match seg.parquet.get() {
        Some(m) => m.clone(),
        None => {
            let m = ParquetMetaDataReader::new()
                .parse_and_finish(file.as_ref())
                .map_err(|e| pq(path, e))?;
            let fm = m.file_metadata();
            let trimmed = Arc::new(ParquetMetaData::new(
                FileMetaData::new(
                    fm.version(),
                    fm.num_rows(),
                    fm.created_by().map(str::to_owned),
                    None,
                    fm.schema_descr_ptr(),
                    fm.column_orders().cloned(),
                ),
                m.row_groups().to_vec(),
            ));
            seg.parquet.get_or_init(|| trimmed).clone()
        }
    };
    let props = Arc::new(ReaderProperties::builder().build());
    let groups = meta.num_row_groups();
    let parts = parts.max(1);
    let mut rows = Rows::default();
    let mut scratch = Scratch::default();
    for g in groups * part / parts..groups * (part + 1) / parts {
        if skip.skips(meta.row_group(g)) {
            continue;
        }
        let rg = SerializedRowGroupReader::new(
            file.clone(),
            meta.row_group(g),
            meta.page_index_for_row_group(g),
            props.clone(),
        )
        .map_err(|e| pq(path, e))?;
        let n = rg.metadata().num_rows().max(0) as usize;
        read_rows(&rg, n, projection, &mut rows, &mut scratch).map_err(|e| pq(path, e))?;
        f(&rows);
    }
    Ok(())
}

/// Buffers a scan reuses from one row group to the next (allocating them per group costs page
/// faults on every group).
#[derive(Default)]
struct Scratch {
    i64s: Vec<i64>,
    i32s: Vec<i32>,
    def: Vec<i16>,
}

fn read_instructions(
    rg: &dyn RowGroupReader,
    n: usize,
    values: &mut Vec<i64>,
    def: &mut Vec<i16>,
    out: &mut Vec<Option<u64>>,
) -> parquet::errors::Result<()> {
    values.clear();
    def.clear();
    let mut r = parquet::column::reader::get_typed_column_reader::<Int64Type>(
        rg.get_column_reader(col::INSTRUCTIONS)?,
    );
    let mut levels = 0;
    while levels < n {
        let (records, _, _) = r.read_records(n - levels, Some(def), None, values)?;
        if records == 0 {
            break;
        }
        levels = def.len();
    }
    let mut v = values.iter();
    out.extend(def.iter().map(|d| {
        if *d > 0 {
            v.next().map(|x| *x as u64)
        } else {
            None
        }
    }));
    Ok(())
}

fn read_rows(
    rg: &dyn RowGroupReader,
    n: usize,
    p: Projection,
    rows: &mut Rows,
    scratch: &mut Scratch,
) -> parquet::errors::Result<()> {
    let Scratch { i64s, i32s, def } = scratch;
    i64s.clear();
    i32s.clear();
    def.clear();

    read_i64(rg, col::TS, n, &mut rows.ts)?;
    read_i32(rg, col::SERIES, n, i32s)?;
    rows.series.clear();
    rows.series.extend(i32s.iter().map(|v| *v as u32));
    rows.status.clear();
    if p.status {
        read_i32(rg, col::STATUS, n, i32s)?;
        rows.status.extend(i32s.iter().map(|v| *v as u16));
    }
    rows.cpu_ns.clear();
    rows.instructions.clear();
    if !p.no_costs {
        read_i64(rg, col::CPU_NS, n, i64s)?;
        rows.cpu_ns.extend(i64s.iter().map(|v| *v as u64));
    }
    rows.wall_ns.clear();
    if p.wall_ns {
        read_i64(rg, col::WALL_NS, n, i64s)?;
        rows.wall_ns.extend(i64s.iter().map(|v| *v as u64));
    }

    if !p.no_costs {
        read_instructions(rg, n, i64s, def, &mut rows.instructions)?;
    }

    rows.weight.clear();
    let mut r = parquet::column::reader::get_typed_column_reader::<DoubleType>(
        rg.get_column_reader(col::WEIGHT)?,
    );
    while rows.weight.len() < n {
        let (records, _, _) =
            r.read_records(n - rows.weight.len(), None, None, &mut rows.weight)?;
        if records == 0 {
            break;
        }
    }
    let costs = if p.no_costs { 0 } else { n };
    if rows.ts.len() != n
        || rows.series.len() != n
        || rows.cpu_ns.len() != costs
        || rows.instructions.len() != costs
        || rows.weight.len() != n
    {
        return Err(parquet::errors::ParquetError::General(format!(
            "row group promises {n} rows but its columns hold {}, {}, {}, {}, {}",
            rows.ts.len(),
            rows.series.len(),
            rows.cpu_ns.len(),
            rows.instructions.len(),
            rows.weight.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use profwatch_model::{RequestEvent, Tenant};
    use proptest::prelude::*;

    use super::*;
    use crate::embedded::memtable::MemTable;
    use crate::stack_ids::StackIds;

    /// An events segment of 300 events in `dir`.
    fn segment(dir: &Path) -> SegmentMeta {
        let mut mt = MemTable::new(1, StackIds::fixed());
        let events: Vec<RequestEvent> = (0..300u64)
            .map(|i| RequestEvent {
                ts: 1_700_000_000_000_000_000 + i as i64,
                service: "s".into(),
                endpoint: format!("GET /{}", i % 7),
                build: "b".into(),
                dc: String::new(),
                host: format!("h{}", i % 3),
                status: 200,
                cpu_ns: i,
                instructions: None,
                wall_ns: i,
                weight: 1.0,
                labels: Default::default(),
            })
            .collect();
        mt.insert(&Tenant("t".into()), &events);
        let (keys, rows) = mt.sorted();
        let attached = Attached {
            profile: None,
            keys: Vec::new(),
            rollup: true,
        };
        write(dir, dir, 1, 1, &keys, &rows, attached).expect("write")
    }

    #[test]
    fn a_segment_reads_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = segment(dir.path());
        let mut n = 0;
        scan(&meta, Projection::default(), |rows| n += rows.len()).expect("scan");
        assert_eq!(n, 300);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// An events segment with any one byte changed, or cut short, is read or refused with
        /// an error (its footer, its rows, its rollup); the reader never panics. (At open, the
        /// file's checksum catches both first: this is the reader's own guard.)
        #[test]
        fn a_damaged_segment_is_an_error_not_a_panic(
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
            cut in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let meta = segment(dir.path());
            crate::embedded::files::damage(&meta.path, at, xor, cut);
            if let Ok(meta) = open(&meta.path, 1, 1, None) {
                let _ = scan(&meta, Projection::default(), |_| {});
                let _ = meta.rollup();
            }
        }
    }
}
