//! Regression records of the embedded store: a few hundred small records, kept in memory and
//! in `regressions.json`, which every change rewrites whole (to `tmp/`, fsync, rename, fsync
//! the directory), so the file on disk is always one complete version.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use profwatch_model::regression::RegressionRecord;

use super::files::sync_dir;
use crate::StoreError;

/// The records, by (tenant, id).
#[derive(Debug)]
pub struct Regressions {
    path: PathBuf,
    tmp: PathBuf,
    records: Mutex<BTreeMap<(String, String), RegressionRecord>>,
}

impl Regressions {
    /// Loads `regressions.json` from `dir` (absent means none).
    pub fn open(dir: &Path, tmp_dir: &Path) -> Result<Regressions, StoreError> {
        let path = dir.join("regressions.json");
        let records = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<RegressionRecord> =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
                list.into_iter()
                    .map(|r| ((r.tenant.clone(), r.id.clone()), r))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        Ok(Regressions {
            path,
            tmp: tmp_dir.join("regressions.json"),
            records: Mutex::new(records),
        })
    }

    /// Inserts or replaces a record and persists the whole set before returning.
    pub fn put(&self, r: &RegressionRecord) -> Result<(), StoreError> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let key = (r.tenant.clone(), r.id.clone());
        let previous = records.insert(key.clone(), r.clone());
        if let Err(e) = self.persist(&records) {
            match previous {
                Some(p) => records.insert(key, p),
                None => records.remove(&key),
            };
            return Err(e);
        }
        Ok(())
    }

    /// A tenant's records, newest `last_seen` first.
    pub fn list(&self, tenant: &str) -> Vec<RegressionRecord> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<RegressionRecord> = records
            .values()
            .filter(|r| r.tenant == tenant)
            .cloned()
            .collect();
        v.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then_with(|| a.id.cmp(&b.id)));
        v
    }

    fn persist(
        &self,
        records: &BTreeMap<(String, String), RegressionRecord>,
    ) -> Result<(), StoreError> {
        let list: Vec<&RegressionRecord> = records.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).map_err(|e| StoreError::Corrupt {
            path: self.path.display().to_string(),
            detail: e.to_string(),
        })?;
        let mut f =
            std::fs::File::create(&self.tmp).map_err(|e| StoreError::io("create", &self.tmp, e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::io("write", &self.tmp, e))?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| StoreError::io("rename into place", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}
