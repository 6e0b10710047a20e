//! What every file the embedded store writes has in common.
//!
//! - [`sync_dir`] makes the creates, renames and deletes in a directory durable; callers sync
//!   where a crash must not undo one.
//! - A Parquet file (an events or a profile segment) is written under `tmp/` with zstd level 1
//!   and a footer holding the series dictionary and the time bounds, then fsynced; its checksum
//!   (`<name>.crc32`: CRC32 and length) is written beside its final name, durably, and only then
//!   is the file renamed into place. So a data file in place is complete and has its checksum;
//!   a checksum without its data file is the leftover of a write that did not finish.
//! - Reading: the footer of either kind, and the integer columns both kinds share.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;

use super::faults;
use super::memtable::SeriesKey;
use crate::StoreError;

/// The series dictionary as JSON, zstd-compressed, base64 (footer values are strings). Parquet
/// does not compress its footer, and the dictionary is the biggest thing in it: on the bench's
/// `ingest` data (215k series in 1M rows) 31 MB of JSON, 31 bytes per event against 18 for all
/// the columns; compressed, 1.0 bytes per event.
const KEY_SERIES_ZSTD: &str = "profwatch.series.zst";
/// The series dictionary as plain JSON: what segments written before `KEY_SERIES_ZSTD` have
/// (read, never written).
const KEY_SERIES: &str = "profwatch.series";
/// Level 1: on that dictionary smaller than level 3 and about as small as 6, at a fraction of
/// the flush time.
const SERIES_ZSTD_LEVEL: i32 = 1;
pub(super) const KEY_MIN_TS: &str = "profwatch.min_ts";
pub(super) const KEY_MAX_TS: &str = "profwatch.max_ts";

pub(super) fn mkdir(p: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(p).map_err(|e| StoreError::io("create directory", p, e))
}

/// The names in `dir`, sorted.
pub(super) fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The name of the `kind` file (`seg` or `prof`) of WAL generations `lo..=hi`.
pub(super) fn range_file_name(kind: &str, lo: u64, hi: u64) -> String {
    format!("{kind}-{lo:012}-{hi:012}.parquet")
}

/// The generations `lo..=hi` of a [`range_file_name`] of `kind`.
pub(super) fn parse_range_file_name(kind: &str, name: &str) -> Option<(u64, u64)> {
    let core = name
        .strip_prefix(kind)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?;
    let (lo, hi) = core.split_once('-')?;
    Some((lo.parse().ok()?, hi.parse().ok()?))
}

/// Fsyncs a directory so that creates, renames and deletes in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
}

/// Appended to a segment file's name for the file that holds its checksum.
pub const CHECKSUM_SUFFIX: &str = ".crc32";

fn checksum_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(CHECKSUM_SUFFIX);
    PathBuf::from(name)
}

fn crc_of(path: &Path) -> Result<(u32, u64), StoreError> {
    let mut f = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n =
            std::io::Read::read(&mut f, &mut buf).map_err(|e| StoreError::io("read", path, e))?;
        if n == 0 {
            return Ok((hasher.finalize(), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// Writes the checksum of the finished file `tmp` beside its final `path`, durably, before
/// the data file is renamed into place (so a data file in place always has its checksum).
fn write_checksum(tmp: &Path, path: &Path) -> Result<(), StoreError> {
    let (crc, len) = crc_of(tmp)?;
    let mut tmp_sum = tmp.as_os_str().to_owned();
    tmp_sum.push(CHECKSUM_SUFFIX);
    let tmp_sum = PathBuf::from(tmp_sum);
    let written = File::create(&tmp_sum).and_then(|mut f| {
        std::io::Write::write_all(&mut f, format!("{crc:08x} {len}\n").as_bytes())?;
        f.sync_all()
    });
    written.map_err(|e| StoreError::io("write", &tmp_sum, e))?;
    let sum = checksum_path(path);
    std::fs::rename(&tmp_sum, &sum).map_err(|e| StoreError::io("rename into place", &sum, e))
}

/// Checks a segment file against its checksum. A file without one (written before checksums
/// existed) passes unverified; a missing data file passes (profile files are optional).
pub fn verify(path: &Path) -> Result<(), StoreError> {
    let sum = checksum_path(path);
    let Ok(text) = std::fs::read_to_string(&sum) else {
        return Ok(());
    };
    if !path.exists() {
        return Ok(());
    }
    let bad = |detail: String| StoreError::Corrupt {
        path: path.display().to_string(),
        detail,
    };
    let (want_crc, want_len) = text
        .split_once(' ')
        .and_then(|(c, l)| {
            Some((
                u32::from_str_radix(c, 16).ok()?,
                l.trim().parse::<u64>().ok()?,
            ))
        })
        .ok_or_else(|| bad(format!("unreadable checksum file {}", sum.display())))?;
    let (crc, len) = crc_of(path)?;
    if (crc, len) != (want_crc, want_len) {
        return Err(bad(format!(
            "checksum {crc:08x} over {len} bytes; written as {want_crc:08x} over {want_len}"
        )));
    }
    Ok(())
}

/// Removes segment files and their checksums; files already gone are fine.
pub fn remove_files(paths: &[&Path]) -> Result<(), StoreError> {
    for p in paths
        .iter()
        .flat_map(|p| [p.to_path_buf(), checksum_path(p)])
    {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("remove", &p, e)),
        }
    }
    Ok(())
}

/// Moves segment files (and their checksums) that exist into `dir`, keeping their names.
pub fn quarantine(paths: &[&Path], dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
    for p in paths
        .iter()
        .flat_map(|p| [p.to_path_buf(), checksum_path(p)])
    {
        let Some(name) = p.file_name() else { continue };
        if p.exists() {
            let to = dir.join(name);
            std::fs::rename(&p, &to).map_err(|e| StoreError::io("move to quarantine", &p, e))?;
        }
    }
    sync_dir(dir)
}

/// The smallest and largest time of a file's rows (0 and 0 when it has none).
pub(super) fn time_bounds(ts: &[i64]) -> (i64, i64) {
    let min = ts.iter().copied().min().unwrap_or(0);
    let max = ts.iter().copied().max().unwrap_or(0);
    (min, max)
}

/// What every segment file (events and profiles) is written with: zstd level 1, and the footer
/// entries they share (the series dictionary and the time bounds), to which a kind may add.
pub(super) fn writer_settings(
    name: &str,
    tmp: &Path,
    series: &[Arc<SeriesKey>],
    min_ts: i64,
    max_ts: i64,
) -> Result<(WriterPropertiesBuilder, Vec<KeyValue>), StoreError> {
    let plain: Vec<&SeriesKey> = series.iter().map(Arc::as_ref).collect();
    let series_json = serde_json::to_vec(&plain).map_err(|e| StoreError::Corrupt {
        path: name.to_owned(),
        detail: e.to_string(),
    })?;
    let series_zstd = zstd::bulk::compress(&series_json, SERIES_ZSTD_LEVEL)
        .map_err(|e| StoreError::io("compress the series dictionary of", tmp, e))?;
    let builder = WriterProperties::builder().set_compression(Compression::ZSTD(
        ZstdLevel::try_new(1).map_err(|e| pq(tmp, e))?,
    ));
    let footer = vec![
        KeyValue::new(KEY_SERIES_ZSTD.to_owned(), BASE64.encode(series_zstd)),
        KeyValue::new(KEY_MIN_TS.to_owned(), min_ts.to_string()),
        KeyValue::new(KEY_MAX_TS.to_owned(), max_ts.to_string()),
    ];
    Ok((builder, footer))
}

/// Closes a written file, fsyncs it and renames it from `tmp` to `path`; returns its size.
/// (Syncing the directory is the caller's: the events file is a flush's commit point.)
pub(super) fn put_in_place(
    writer: SerializedFileWriter<File>,
    tmp: &Path,
    path: &Path,
) -> Result<u64, StoreError> {
    let file = writer.into_inner().map_err(|e| pq(tmp, e))?;
    faults::check("segment-sync", tmp)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io("fsync", tmp, e))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    drop(file);
    write_checksum(tmp, path)?;
    faults::check("segment-rename", path)
        .and_then(|()| std::fs::rename(tmp, path))
        .map_err(|e| StoreError::io("rename into place", path, e))?;
    Ok(bytes)
}

/// Runs `read` of the Parquet file `path`, turning a panic of the Parquet reader into the
/// file's `Corrupt` error. The reader asserts on some damaged footers (a negative column offset,
/// found by the segment property tests): a damaged file must not take a query thread, or the
/// process, down with it.
pub(super) fn guarded<T>(
    path: &Path,
    read: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(StoreError::Corrupt {
            path: path.display().to_string(),
            detail: format!("the Parquet reader failed: {why}"),
        })
    })
}

pub(super) fn pq(path: &Path, e: parquet::errors::ParquetError) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// What a segment file's footer says: row count, size, and our key-value metadata (series
/// dictionary, time bounds, idempotency keys). Shared by event and profile segments.
#[derive(Debug)]
pub(super) struct Footer {
    path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub kv: HashMap<String, String>,
}

impl Footer {
    pub fn read(path: &Path) -> Result<Footer, StoreError> {
        guarded(path, || Footer::read_unguarded(path))
    }

    fn read_unguarded(path: &Path) -> Result<Footer, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io("open", path, e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let reader = SerializedFileReader::new(file).map_err(|e| pq(path, e))?;
        let meta = reader.metadata().file_metadata();
        let kv = meta
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e.key.clone(), e.value.clone()?)))
            .collect();
        Ok(Footer {
            path: path.to_owned(),
            rows: meta.num_rows().max(0) as u64,
            bytes,
            kv,
        })
    }

    pub fn bad(&self, what: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.display().to_string(),
            detail: format!("bad or missing {what} in the footer"),
        }
    }

    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T, StoreError> {
        self.kv
            .get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.bad(key))
    }

    /// The series dictionary, in file order (compressed, or plain in older files).
    pub fn series(&self) -> Result<Vec<Arc<SeriesKey>>, StoreError> {
        let keys: Vec<SeriesKey> = match self.kv.get(KEY_SERIES_ZSTD) {
            Some(v) => {
                let bad = || self.bad(KEY_SERIES_ZSTD);
                let compressed = BASE64.decode(v).map_err(|_| bad())?;
                let json = zstd::stream::decode_all(compressed.as_slice()).map_err(|_| bad())?;
                serde_json::from_slice(&json).map_err(|_| bad())?
            }
            None => {
                let v = self
                    .kv
                    .get(KEY_SERIES)
                    .ok_or_else(|| self.bad(KEY_SERIES))?;
                serde_json::from_str(v).map_err(|_| self.bad(KEY_SERIES))?
            }
        };
        Ok(keys.into_iter().map(Arc::new).collect())
    }
}

pub(super) fn read_i64(
    rg: &dyn RowGroupReader,
    col: usize,
    n: usize,
    out: &mut Vec<i64>,
) -> parquet::errors::Result<()> {
    out.clear();
    let mut r =
        parquet::column::reader::get_typed_column_reader::<Int64Type>(rg.get_column_reader(col)?);
    while out.len() < n {
        let (records, _, _) = r.read_records(n - out.len(), None, None, out)?;
        if records == 0 {
            break;
        }
    }
    Ok(())
}

pub(super) fn read_i32(
    rg: &dyn RowGroupReader,
    col: usize,
    n: usize,
    out: &mut Vec<i32>,
) -> parquet::errors::Result<()> {
    out.clear();
    let mut r =
        parquet::column::reader::get_typed_column_reader::<Int32Type>(rg.get_column_reader(col)?);
    while out.len() < n {
        let (records, _, _) = r.read_records(n - out.len(), None, None, out)?;
        if records == 0 {
            break;
        }
    }
    Ok(())
}

/// Damages the file at `path` as the segment property tests do: byte `at` XORed with `xor`, or
/// the file cut short there.
#[cfg(test)]
pub(super) fn damage(path: &Path, at: proptest::sample::Index, xor: u8, cut: bool) {
    let mut bytes = std::fs::read(path).expect("read");
    let i = at.index(bytes.len());
    if cut {
        bytes.truncate(i);
    } else {
        bytes[i] ^= xor;
    }
    std::fs::write(path, &bytes).expect("damage");
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::schema::parser::parse_message_type;

    fn key(host: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            tenant: "t".into(),
            service: "s".into(),
            endpoint: "GET /x".into(),
            build: "b1".into(),
            dc: "dc".into(),
            host: host.into(),
            labels: vec![("flag".into(), "on".into())],
        })
    }

    /// A one-column file with these footer entries.
    fn file_with(path: &Path, kv: Vec<KeyValue>, builder: WriterPropertiesBuilder) {
        let schema =
            Arc::new(parse_message_type("message m { required int64 v; }").expect("schema"));
        let props = Arc::new(builder.set_key_value_metadata(Some(kv)).build());
        let mut w = SerializedFileWriter::new(File::create(path).expect("create"), schema, props)
            .expect("writer");
        let mut rg = w.next_row_group().expect("row group");
        let mut c = rg.next_column().expect("column").expect("a column");
        c.typed::<Int64Type>()
            .write_batch(&[1, 2], None, None)
            .expect("write");
        c.close().expect("close column");
        rg.close().expect("close row group");
        w.close().expect("close file");
    }

    #[test]
    fn the_series_dictionary_reads_back_compressed_and_from_older_plain_footers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let series: Vec<_> = (0..500).map(|i| key(&format!("web-{i:03}"))).collect();

        let new = dir.path().join("new.parquet");
        let (builder, kv) = writer_settings("new.parquet", &new, &series, 1, 2).expect("settings");
        assert!(kv.iter().any(|e| e.key == KEY_SERIES_ZSTD));
        assert!(
            kv.iter().all(|e| e.key != KEY_SERIES),
            "plain JSON is no longer written"
        );
        file_with(&new, kv, builder);
        let footer = Footer::read(&new).expect("footer");
        assert_eq!(footer.series().expect("series"), series);
        let plain: Vec<&SeriesKey> = series.iter().map(Arc::as_ref).collect();
        let json = serde_json::to_string(&plain).expect("json");
        assert!(
            footer.kv[KEY_SERIES_ZSTD].len() * 5 < json.len(),
            "compressed: {} of {} bytes",
            footer.kv[KEY_SERIES_ZSTD].len(),
            json.len()
        );

        // A segment written before the compressed dictionary.
        let old = dir.path().join("old.parquet");
        let kv = vec![KeyValue::new(KEY_SERIES.to_owned(), json)];
        file_with(&old, kv, WriterProperties::builder());
        assert_eq!(
            Footer::read(&old)
                .expect("footer")
                .series()
                .expect("series"),
            series
        );

        // Damage is an error naming the file, not a panic.
        let bad = dir.path().join("bad.parquet");
        let kv = vec![KeyValue::new(
            KEY_SERIES_ZSTD.to_owned(),
            "not base64!".to_owned(),
        )];
        file_with(&bad, kv, WriterProperties::builder());
        let err = Footer::read(&bad)
            .expect("footer")
            .series()
            .expect_err("a bad dictionary")
            .to_string();
        assert!(
            err.contains("bad.parquet") && err.contains(KEY_SERIES_ZSTD),
            "{err}"
        );
    }
}
