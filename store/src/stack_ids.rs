//! Stack ids, in both stores: samples refer to their stack's frames by a 128-bit id. The id is
//! SipHash-1-3, keyed by the store's own secret, over the tenant and the frames, each
//! length-prefixed. The embedded store keeps its key in the data directory (`stack.key`: 16
//! random bytes made at the first open, kept for good); ClickHouse in its `stack_key` table
//! (`clickhouse/stack_key.rs`), shared by every collector of the database. Without the key
//! nobody can make two stacks share an id, so no tenant can craft a stack that takes the place
//! of another tenant's frames (an unkeyed FNV hash allowed that); the tenant in the input keeps
//! even equal stacks of two tenants apart.
//!
//! In the embedded store, a memtable compares the frames of every stack it already holds under an id: an accidental
//! collision (about one in 2^128 per pair) is re-keyed with the next probe value and counted,
//! never merged. Stacks in different files are not compared (a file stores its own frames;
//! a query or compaction takes an id's frames from the first file that has them, which the
//! odds make safe). Profile files written before this hold 64-bit FNV ids and no high half:
//! they read as ids below 2^64, which a keyed id reaches with odds of one in 2^64.

use std::fmt;
use std::hash::Hasher;
use std::io::Write;
use std::path::Path;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::embedded::files::sync_dir;
use crate::StoreError;

/// The key's file in the data directory.
pub const KEY_FILE: &str = "stack.key";

/// Ids of stacks, keyed by the data directory's secret.
#[derive(Clone, Copy)]
pub struct StackIds {
    k0: u64,
    k1: u64,
    /// Tests only: every stack's id is its probe value, so all of them collide at first.
    #[cfg(test)]
    degenerate: bool,
}

/// The key never appears in a log line or a panic message.
impl fmt::Debug for StackIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StackIds { .. }")
    }
}

impl StackIds {
    /// The key of the data directory `dir`, made (durably, via `tmp_dir`) when it has none.
    pub fn open(dir: &Path, tmp_dir: &Path) -> Result<StackIds, StoreError> {
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => StackIds::from_bytes(&bytes).ok_or_else(|| StoreError::Corrupt {
                path: path.display().to_string(),
                detail: format!("a stack key is 16 bytes, this file has {}", bytes.len()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = StackIds::new_key()
                    .map_err(|e| StoreError::io("draw a stack key for", &path, e))?;
                let tmp = tmp_dir.join(KEY_FILE);
                let mut f =
                    std::fs::File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
                f.write_all(&key)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| StoreError::io("write", &tmp, e))?;
                drop(f);
                std::fs::rename(&tmp, &path)
                    .map_err(|e| StoreError::io("rename into place", &path, e))?;
                sync_dir(dir)?;
                Ok(StackIds::from_key(key))
            }
            Err(e) => Err(StoreError::io("read", &path, e)),
        }
    }

    /// The ids under a 16-byte key; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<StackIds> {
        Some(StackIds::from_key(bytes.try_into().ok()?))
    }

    /// 16 random bytes for a new key.
    pub fn new_key() -> Result<[u8; 16], std::io::Error> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(key)
    }

    fn from_key(key: [u8; 16]) -> StackIds {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&key[..8]);
        k1.copy_from_slice(&key[8..]);
        StackIds {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
            #[cfg(test)]
            degenerate: false,
        }
    }

    /// The id of `frames` of `tenant`; `probe` 0 first, then 1, 2, ... past collisions.
    pub fn id(&self, tenant: &str, frames: &[String], probe: u32) -> u128 {
        #[cfg(test)]
        if self.degenerate {
            return u128::from(probe);
        }
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u64(tenant.len() as u64);
        h.write(tenant.as_bytes());
        h.write_u64(frames.len() as u64);
        for f in frames {
            h.write_u64(f.len() as u64);
            h.write(f.as_bytes());
        }
        h.write_u32(probe);
        h.finish128().as_u128()
    }

    /// Ids for tests that need collisions: every stack of every tenant starts at id 0.
    #[cfg(test)]
    pub fn colliding() -> StackIds {
        StackIds {
            degenerate: true,
            ..StackIds::from_key([0; 16])
        }
    }

    /// Ids under a fixed key, for tests.
    #[cfg(test)]
    pub fn fixed() -> StackIds {
        StackIds::from_key([7; 16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_directory_keeps_its_key_and_another_gets_its_own() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let stack = frames(&["main", "serve"]);
        let first = StackIds::open(a.path(), a.path()).expect("key");
        let again = StackIds::open(a.path(), a.path()).expect("key");
        let other = StackIds::open(b.path(), b.path()).expect("key");
        assert_eq!(first.id("t", &stack, 0), again.id("t", &stack, 0));
        assert_ne!(first.id("t", &stack, 0), other.id("t", &stack, 0));
        assert_eq!(
            std::fs::read(a.path().join(KEY_FILE))
                .expect("key file")
                .len(),
            16
        );
        assert!(!format!("{first:?}").contains(&first.k0.to_string()));
    }

    #[test]
    fn the_id_depends_on_the_tenant_the_frames_their_boundaries_and_the_probe() {
        let ids = StackIds::fixed();
        let base = ids.id("t", &frames(&["ab", "c"]), 0);
        assert_ne!(base, ids.id("u", &frames(&["ab", "c"]), 0));
        assert_ne!(base, ids.id("t", &frames(&["a", "bc"]), 0));
        assert_ne!(base, ids.id("t", &frames(&["abc"]), 0));
        assert_ne!(base, ids.id("t", &frames(&["ab", "c"]), 1));
        assert_ne!(ids.id("", &frames(&["t"]), 0), ids.id("t", &[], 0));
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_an_error_that_names_it() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join(KEY_FILE), b"short").expect("write");
        let e = StackIds::open(d.path(), d.path()).expect_err("refused");
        assert!(e.to_string().contains(KEY_FILE), "{e}");
    }
}
