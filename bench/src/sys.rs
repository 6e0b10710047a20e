//! Facts about the machine and CPU accounting from `/proc`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Map, Value};

/// What the report says about the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_gib: mem_kib / (1024.0 * 1024.0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "nproc": self.nproc,
            "cpu_model": self.cpu_model,
            "mem_total_gib": round(self.mem_total_gib, 1),
            "kernel": self.kernel,
        })
    }
}

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on every Linux in practice).
const TICKS: f64 = 100.0;

/// CPU seconds (user + system) a process used so far, `None` when it cannot be read.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS)
}

/// (busy, total) CPU seconds of the whole machine, from `/proc/stat`.
pub fn machine_cpu_secs() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some(((total - idle) / TICKS, total / TICKS))
}

/// CPU seconds of every process now, by pid, with its command name.
fn all_processes() -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in rd.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        if let Some(cpu) = process_cpu_secs(pid) {
            out.insert(pid, (comm, cpu));
        }
    }
    out
}

/// CPU use over an interval: of the server, of this process, of the machine, of the others.
#[derive(Debug, Clone)]
pub struct CpuMark {
    server_pid: u32,
    server: Option<f64>,
    me: Option<f64>,
    machine: Option<(f64, f64)>,
    processes: HashMap<u32, (String, f64)>,
}

impl CpuMark {
    pub fn now(server_pid: u32) -> CpuMark {
        CpuMark {
            server_pid,
            server: process_cpu_secs(server_pid),
            me: process_cpu_secs(std::process::id()),
            machine: machine_cpu_secs(),
            processes: all_processes(),
        }
    }

    /// The processes other than the server and this one that used the most CPU since `self`,
    /// as (command, average cores), at most 3, ignoring those under 0.05 cores.
    pub fn others_until(&self, later: &CpuMark, secs: f64) -> Vec<(String, f64)> {
        let me = std::process::id();
        let mut v: Vec<(String, f64)> = later
            .processes
            .iter()
            .filter(|(pid, _)| **pid != me && **pid != self.server_pid)
            .map(|(pid, (comm, cpu))| {
                let before = self.processes.get(pid).map_or(0.0, |(_, c)| *c);
                (format!("{comm}[{pid}]"), (cpu - before) / secs.max(1e-9))
            })
            .filter(|(_, cores)| *cores >= 0.05)
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v.truncate(3);
        v
    }

    /// Cores used on average between `self` and `later`, over `secs` of wall time.
    pub fn cores_until(&self, later: &CpuMark, secs: f64) -> Value {
        let per = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if secs > 0.0 => Some(round((b - a) / secs, 2)),
            _ => None,
        };
        let machine = match (self.machine, later.machine) {
            (Some((b0, _)), Some((b1, _))) if secs > 0.0 => Some(round((b1 - b0) / secs, 2)),
            _ => None,
        };
        let others: Map<String, Value> = self
            .others_until(later, secs)
            .into_iter()
            .map(|(n, c)| (n, json!(round(c, 2))))
            .collect();
        let server = per(self.server, later.server);
        let me = per(self.me, later.me);
        let rest = match (machine, server, me) {
            (Some(m), Some(s), Some(c)) => Some(round((m - s - c).max(0.0), 2)),
            _ => None,
        };
        json!({
            "profwatch_server": server,
            "bench_client": me,
            "machine_busy": machine,
            "everything_else": rest,
            "top_other_processes": others,
        })
    }
}

/// Total bytes of the regular files under `dir`, and how they split over its top-level entries.
pub fn dir_size(dir: &Path) -> anyhow::Result<(u64, Vec<(String, u64)>)> {
    fn walk(p: &Path) -> anyhow::Result<u64> {
        let meta = std::fs::symlink_metadata(p)
            .map_err(|e| anyhow::anyhow!("stat {}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut sum = 0;
            for entry in
                std::fs::read_dir(p).map_err(|e| anyhow::anyhow!("list {}: {e}", p.display()))?
            {
                let entry = entry.map_err(|e| anyhow::anyhow!("list {}: {e}", p.display()))?;
                sum += walk(&entry.path())?;
            }
            Ok(sum)
        } else if meta.is_file() {
            Ok(meta.len())
        } else {
            Ok(0)
        }
    }
    let mut parts = Vec::new();
    let mut total = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("list {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("list {}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let n = walk(&entry.path())?;
        total += n;
        parts.push((entry.file_name().to_string_lossy().into_owned(), n));
    }
    Ok((total, parts))
}

/// Counts the files directly under `dir` whose names end with `ext`.
pub fn count_files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(ext))
                .count()
        })
        .unwrap_or(0)
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg` ("?" when unreadable).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// Free bytes on the file system holding `dir`, from `df -Pk`.
pub fn free_disk_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Free space on the file system holding `dir`, e.g. "3.2 GB".
pub fn free_disk(dir: &Path) -> Option<String> {
    free_disk_bytes(dir).map(|b| format!("{:.1} GB", b as f64 / 1e9))
}

/// The median of sorted values (NaN when there are none).
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // Howard Hinnant's civil_from_days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Compressed bytes per column over the Parquet files directly in `dir` whose names start with
/// `prefix` (`seg-`: event segments; profile segments are `prof-`), and
/// what the files hold besides column data (footers with their metadata, magic). Read from
/// the footers alone.
pub fn parquet_columns(dir: &Path, prefix: &str) -> anyhow::Result<(Vec<(String, u64)>, u64)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let mut by_column: Vec<(String, u64)> = Vec::new();
    let mut other = 0u64;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "parquet")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    files.sort();
    for path in files {
        let file = std::fs::File::open(&path)
            .map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?;
        let len = file.metadata()?.len();
        let reader = SerializedFileReader::new(file)
            .map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        let mut data = 0u64;
        for rg in reader.metadata().row_groups() {
            for c in rg.columns() {
                let name = c.column_path().string();
                let bytes = c.compressed_size().max(0) as u64;
                data += bytes;
                match by_column.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, b)) => *b += bytes,
                    None => by_column.push((name, bytes)),
                }
            }
        }
        other += len.saturating_sub(data);
    }
    Ok((by_column, other))
}
