//! Making a run cold: dropping the kernel's page cache (and ClickHouse's own caches).
//!
//! A "cold" figure is only as cold as this module managed to make the machine, so every drop
//! reports what it did; the caller prints that next to the figure instead of assuming it.

use std::io::Write;
use std::process::Command;

use crate::server::ClickHouse;

/// What happened when the bench tried to drop the page cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCache {
    /// `sync` then `echo 3 > /proc/sys/vm/drop_caches` succeeded.
    Dropped,
    /// Not running as root: the page cache was left as it was.
    NotRoot,
    /// Running as root, but the write failed (a container without the capability, say).
    Failed(String),
}

impl PageCache {
    pub fn dropped(&self) -> bool {
        matches!(self, PageCache::Dropped)
    }

    /// How the report states it.
    pub fn describe(&self) -> String {
        match self {
            PageCache::Dropped => "page cache dropped".to_owned(),
            PageCache::NotRoot => "page cache not dropped (not root)".to_owned(),
            PageCache::Failed(why) => format!("page cache not dropped ({why})"),
        }
    }
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes.
pub fn drop_page_cache() -> PageCache {
    if !is_root() {
        return PageCache::NotRoot;
    }
    if let Err(e) = Command::new("sync").status() {
        return PageCache::Failed(format!("sync: {e}"));
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/vm/drop_caches")
        .and_then(|mut f| f.write_all(b"3\n"));
    match written {
        Ok(()) => PageCache::Dropped,
        Err(e) => PageCache::Failed(format!("writing /proc/sys/vm/drop_caches: {e}")),
    }
}

/// Whether this process runs with effective uid 0 (read from `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Empties ClickHouse's mark and uncompressed-block caches; `None` when done, else why not.
pub fn drop_clickhouse_caches(ch: &ClickHouse) -> Option<String> {
    let errors: Vec<String> = ["SYSTEM DROP MARK CACHE", "SYSTEM DROP UNCOMPRESSED CACHE"]
        .iter()
        .filter_map(|sql| ch.exec(sql).err().map(|e| format!("{sql}: {e:#}")))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}
