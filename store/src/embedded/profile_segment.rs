//! Profile segment files: `prof-<lo>-<hi>.parquet`, the stack samples of WAL generations
//! `lo..=hi`, written beside (and always before) the events segment of the same range, which is
//! the commit point: a profile file without its events file is an interrupted flush and is
//! removed on open.
//!
//! Columns: `ts`, `series`, `stack` (the low 64 bits of the stack's id), `samples`, `cpu_ns`,
//! `frames` (a JSON array of strings), which is set only on the first row of each distinct
//! stack, so every stack is stored once per file, and `stack_hi` (the id's high 64 bits; files
//! written before 128-bit ids lack it and read as 0). The series dictionary and time bounds
//! are in the footer.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::files::{
    guarded, parse_range_file_name, pq, put_in_place, range_file_name, read_i32, read_i64,
    time_bounds, writer_settings, Footer, KEY_MAX_TS, KEY_MIN_TS,
};
use super::function_rollup::{self, FunctionRollup};
use super::memtable::{SampleRows, SeriesKey, Stacks};
use crate::StoreError;

const SCHEMA: &str = "message profwatch_profile_segment {
  required int64 ts;
  required int32 series;
  required int64 stack;
  required int64 samples;
  required int64 cpu_ns;
  optional binary frames (UTF8);
  required int64 stack_hi;
}";
const ROW_GROUP: usize = 256 * 1024;
/// The column of the ids' high halves (absent in files written before 128-bit ids).
const STACK_HI: usize = 6;

/// What is known about a profile segment from its footer.
#[derive(Debug)]
pub struct ProfileMeta {
    pub path: PathBuf,
    pub rows: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub series: Vec<Arc<SeriesKey>>,
    /// The function rollup, once computed: `Some(None)` when it is not worth keeping.
    functions: OnceLock<Option<Arc<FunctionRollup>>>,
}

impl ProfileMeta {
    /// The segment's function rollup (`function_rollup.rs`): the one built when the segment
    /// was written, else built now from the file and kept. `None` when it is not worth keeping,
    /// or when the file cannot be read (not remembered: the caller reads the samples and meets
    /// the error itself).
    pub fn function_rollup(&self) -> Option<Arc<FunctionRollup>> {
        if let Some(r) = self.functions.get() {
            return r.clone();
        }
        let mut b = function_rollup::Builder::new(&self.series);
        let mut stacks = Stacks::new();
        let all = |_: u128| true;
        scan(self, |rows| b.push(rows), Some((&all, &mut stacks))).ok()?;
        let built = b.finish(&stacks).map(Arc::new);
        self.functions.get_or_init(|| built).clone()
    }
}

pub fn file_name(lo: u64, hi: u64) -> String {
    range_file_name("prof", lo, hi)
}

pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    parse_range_file_name("prof", name)
}

/// Writes samples (any order) with the frames of their stacks, durably, via `tmp_dir`; with
/// `rollup`, builds the function rollup from them too.
#[allow(clippy::too_many_arguments)]
pub fn write(
    dir: &Path,
    tmp_dir: &Path,
    lo: u64,
    hi: u64,
    series: &[Arc<SeriesKey>],
    rows: &SampleRows,
    stacks: &Stacks,
    rollup: bool,
) -> Result<ProfileMeta, StoreError> {
    let name = file_name(lo, hi);
    let tmp = tmp_dir.join(&name);
    let path = dir.join(&name);
    let (min_ts, max_ts) = time_bounds(&rows.ts);
    let (builder, footer) = writer_settings(&name, &tmp, series, min_ts, max_ts)?;
    let schema = Arc::new(parse_message_type(SCHEMA).map_err(|e| pq(&tmp, e))?);
    let props = Arc::new(builder.set_key_value_metadata(Some(footer)).build());
    let file = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    let mut writer = SerializedFileWriter::new(file, schema, props).map_err(|e| pq(&tmp, e))?;
    let mut seen: HashSet<u128> = HashSet::new();
    let mut start = 0;
    loop {
        let end = (start + ROW_GROUP).min(rows.len());
        write_group(&mut writer, rows, start, end, stacks, &mut seen).map_err(|e| pq(&tmp, e))?;
        start = end;
        if start >= rows.len() {
            break;
        }
    }
    put_in_place(writer, &tmp, &path)?;
    let functions = OnceLock::new();
    if rollup {
        let mut b = function_rollup::Builder::new(series);
        b.push(rows);
        let _ = functions.set(b.finish(stacks).map(Arc::new));
    }
    Ok(ProfileMeta {
        path,
        rows: rows.len() as u64,
        min_ts,
        max_ts,
        series: series.to_vec(),
        functions,
    })
}

fn write_group(
    writer: &mut SerializedFileWriter<File>,
    rows: &SampleRows,
    start: usize,
    end: usize,
    stacks: &Stacks,
    seen: &mut HashSet<u128>,
) -> parquet::errors::Result<()> {
    let r = start..end;
    let series: Vec<i32> = rows.series[r.clone()].iter().map(|v| *v as i32).collect();
    let stack: Vec<i64> = rows.stack[r.clone()]
        .iter()
        .map(|v| *v as u64 as i64)
        .collect();
    let stack_hi: Vec<i64> = rows.stack[r.clone()]
        .iter()
        .map(|v| (*v >> 64) as u64 as i64)
        .collect();
    let samples: Vec<i64> = rows.samples[r.clone()].iter().map(|v| *v as i64).collect();
    let cpu: Vec<i64> = rows.cpu_ns[r.clone()].iter().map(|v| *v as i64).collect();
    let mut frames = Vec::new();
    let mut frames_def = Vec::with_capacity(end - start);
    for h in &rows.stack[r.clone()] {
        if seen.insert(*h) {
            let f = stacks.get(h).map(|f| f.as_ref()).unwrap_or(&[]);
            let json = serde_json::to_vec(f).unwrap_or_else(|_| b"[]".to_vec());
            frames.push(ByteArray::from(json));
            frames_def.push(1i16);
        } else {
            frames_def.push(0);
        }
    }
    let mut rg = writer.next_row_group()?;
    let mut i = 0;
    while let Some(mut c) = rg.next_column()? {
        match i {
            0 => {
                c.typed::<Int64Type>()
                    .write_batch(&rows.ts[r.clone()], None, None)?;
            }
            1 => {
                c.typed::<Int32Type>().write_batch(&series, None, None)?;
            }
            2 => {
                c.typed::<Int64Type>().write_batch(&stack, None, None)?;
            }
            3 => {
                c.typed::<Int64Type>().write_batch(&samples, None, None)?;
            }
            4 => {
                c.typed::<Int64Type>().write_batch(&cpu, None, None)?;
            }
            5 => {
                c.typed::<ByteArrayType>()
                    .write_batch(&frames, Some(&frames_def), None)?;
            }
            _ => {
                c.typed::<Int64Type>().write_batch(&stack_hi, None, None)?;
            }
        }
        c.close()?;
        i += 1;
    }
    rg.close()?;
    Ok(())
}

/// Reads a profile segment's footer.
pub fn open(path: &Path) -> Result<ProfileMeta, StoreError> {
    let f = Footer::read(path)?;
    Ok(ProfileMeta {
        path: path.to_owned(),
        rows: f.rows,
        min_ts: f.parse(KEY_MIN_TS)?,
        max_ts: f.parse(KEY_MAX_TS)?,
        series: f.series()?,
        functions: OnceLock::new(),
    })
}

/// Which stacks' frames a scan collects, and where it puts them.
pub type FrameSink<'a> = (
    &'a dyn Fn(u128) -> bool,
    &'a mut HashMap<u128, Arc<[String]>>,
);

/// Reads the sample columns row group by row group. With `want_frames`, also collects the
/// frames of every stack for which `want_frames` returns true.
pub fn scan(
    meta: &ProfileMeta,
    f: impl FnMut(&SampleRows),
    want_frames: Option<FrameSink<'_>>,
) -> Result<(), StoreError> {
    guarded(&meta.path, || scan_unguarded(meta, f, want_frames))
}

fn scan_unguarded(
    meta: &ProfileMeta,
    mut f: impl FnMut(&SampleRows),
    mut want_frames: Option<FrameSink<'_>>,
) -> Result<(), StoreError> {
    let path = &meta.path;
    let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| pq(path, e))?;
    let mut rows = SampleRows::default();
    let mut i64s = Vec::new();
    let mut i32s = Vec::new();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(|e| pq(path, e))?;
        let n = rg.metadata().num_rows().max(0) as usize;
        let rg = rg.as_ref();
        read_samples(rg, n, &mut rows, &mut i64s, &mut i32s)
            .and_then(|()| match want_frames.as_mut() {
                Some((want, out)) => read_frames(rg, n, &rows.stack, want, out),
                None => Ok(()),
            })
            .and_then(|()| check_lengths(&rows, n))
            .map_err(|e| pq(path, e))?;
        f(&rows);
    }
    Ok(())
}

/// Reads the sample columns of one row group into `rows`.
fn read_samples(
    rg: &dyn RowGroupReader,
    n: usize,
    rows: &mut SampleRows,
    i64s: &mut Vec<i64>,
    i32s: &mut Vec<i32>,
) -> parquet::errors::Result<()> {
    read_i64(rg, 0, n, &mut rows.ts)?;
    read_i32(rg, 1, n, i32s)?;
    rows.series.clear();
    rows.series.extend(i32s.iter().map(|v| *v as u32));
    read_i64(rg, 2, n, i64s)?;
    rows.stack.clear();
    rows.stack
        .extend(i64s.iter().map(|v| u128::from(*v as u64)));
    if rg.num_columns() > STACK_HI {
        read_i64(rg, STACK_HI, n, i64s)?;
        if i64s.len() != n {
            return Err(parquet::errors::ParquetError::General(format!(
                "row group promises {n} rows but stack_hi has {}",
                i64s.len()
            )));
        }
        for (id, hi) in rows.stack.iter_mut().zip(i64s.iter()) {
            *id |= u128::from(*hi as u64) << 64;
        }
    }
    read_i64(rg, 3, n, i64s)?;
    rows.samples.clear();
    rows.samples.extend(i64s.iter().map(|v| *v as u64));
    read_i64(rg, 4, n, i64s)?;
    rows.cpu_ns.clear();
    rows.cpu_ns.extend(i64s.iter().map(|v| *v as u64));
    Ok(())
}

/// Adds to `out` the frames of one row group's stacks (`stack`, by row) that `want` asks for
/// and `out` lacks.
fn read_frames(
    rg: &dyn RowGroupReader,
    n: usize,
    stack: &[u128],
    want: &dyn Fn(u128) -> bool,
    out: &mut HashMap<u128, Arc<[String]>>,
) -> parquet::errors::Result<()> {
    let mut def = Vec::with_capacity(n);
    let mut values: Vec<ByteArray> = Vec::new();
    let mut r =
        parquet::column::reader::get_typed_column_reader::<ByteArrayType>(rg.get_column_reader(5)?);
    while def.len() < n {
        let (records, _, _) = r.read_records(n - def.len(), Some(&mut def), None, &mut values)?;
        if records == 0 {
            break;
        }
    }
    let mut v = values.iter();
    for (i, d) in def.iter().enumerate() {
        if *d == 0 {
            continue;
        }
        let Some(bytes) = v.next() else { break };
        let h = stack.get(i).copied().unwrap_or(0);
        if want(h) && !out.contains_key(&h) {
            let frames: Vec<String> = serde_json::from_slice(bytes.data()).map_err(|e| {
                parquet::errors::ParquetError::General(format!("frames of stack {h:x}: {e}"))
            })?;
            out.insert(h, Arc::from(frames.into_boxed_slice()));
        }
    }
    Ok(())
}

fn check_lengths(rows: &SampleRows, n: usize) -> parquet::errors::Result<()> {
    if rows.series.len() != n
        || rows.stack.len() != n
        || rows.samples.len() != n
        || rows.cpu_ns.len() != n
    {
        return Err(parquet::errors::ParquetError::General(format!(
            "row group promises {n} rows but its columns disagree"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
    use profwatch_model::Tenant;
    use proptest::prelude::*;

    use super::*;
    use crate::embedded::memtable::{sort_samples, MemTable};
    use crate::stack_ids::StackIds;

    /// A profile segment of 30 stacks in `dir`.
    fn segment(dir: &Path) -> ProfileMeta {
        let mut mt = MemTable::new(1, StackIds::fixed());
        let batch = ProfileBatch {
            ts: 1_000,
            labels: SampleLabels {
                service: "svc".into(),
                ..Default::default()
            },
            samples: (0..30u64)
                .map(|k| StackSample {
                    frames: vec!["main".into(), format!("f{k}")],
                    samples: k + 1,
                    cpu_ns: k,
                })
                .collect(),
        };
        mt.insert_profiles(&Tenant("t".into()), &[batch]);
        write(
            dir,
            dir,
            1,
            1,
            &mt.dict.keys,
            &sort_samples(&mt.samples),
            &mt.stacks,
            true,
        )
        .expect("write")
    }

    /// Every row and stack of a file, or the error reading it gave.
    fn read_all(meta: &ProfileMeta) -> Result<(u64, usize), StoreError> {
        let mut samples = 0u64;
        let mut stacks = HashMap::new();
        let all = |_: u128| true;
        scan(
            meta,
            |rows| samples += rows.samples.iter().sum::<u64>(),
            Some((&all, &mut stacks)),
        )?;
        Ok((samples, stacks.len()))
    }

    #[test]
    fn a_segment_reads_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = segment(dir.path());
        assert_eq!(read_all(&meta).expect("scan"), ((1..=30).sum(), 30));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A profile segment with any one byte changed, or cut short, is read or refused with
        /// an error; the reader never panics. (At open, the file's checksum catches both
        /// first: this is the reader's own guard.)
        #[test]
        fn a_damaged_segment_is_an_error_not_a_panic(
            at in any::<prop::sample::Index>(),
            xor in 1u8..=255,
            cut in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let meta = segment(dir.path());
            crate::embedded::files::damage(&meta.path, at, xor, cut);
            if let Ok(meta) = open(&meta.path) {
                let _ = read_all(&meta);
            }
        }
    }
}
