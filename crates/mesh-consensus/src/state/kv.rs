//! A plain key-value map, used by the consensus benchmark to commit writes
//! that carry no mesh meaning. Bounded in total bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApplyError;

/// Most key plus value bytes the store may hold.
pub const KV_TOTAL_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    total_bytes: usize,
}

impl Kv {
    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Key plus value bytes stored.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Sets `key`; returns the previous value.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, ApplyError> {
        let old_bytes = self.entries.get(key).map_or(0, |v| key.len() + v.len());
        let new_total = self.total_bytes - old_bytes + key.len() + value.len();
        if new_total > KV_TOTAL_BYTES_MAX {
            return Err(ApplyError::KvFull {
                max_bytes: KV_TOTAL_BYTES_MAX,
            });
        }
        self.total_bytes = new_total;
        Ok(self.entries.insert(key.to_vec(), value.to_vec()))
    }

    /// Deletes `key`; returns the previous value (deleting a missing key is a no-op).
    pub(crate) fn delete(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let old = self.entries.remove(key)?;
        self.total_bytes -= key.len() + old.len();
        Some(old)
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let counted = self
            .entries
            .iter()
            .fold(0usize, |acc, (k, v)| acc.saturating_add(k.len() + v.len()));
        if counted != self.total_bytes || counted > KV_TOTAL_BYTES_MAX {
            return Err(format!(
                "key-value store records {} bytes but holds {counted}",
                self.total_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn put_delete_track_bytes() {
        let mut kv = Kv::default();
        assert_eq!(kv.put(b"k", b"v1").unwrap(), None);
        assert_eq!(kv.put(b"k", b"v22").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(kv.total_bytes(), 4);
        assert_eq!(kv.get(b"k"), Some(&b"v22"[..]));
        assert_eq!(kv.delete(b"k"), Some(b"v22".to_vec()));
        assert_eq!(kv.delete(b"k"), None);
        assert_eq!(kv.total_bytes(), 0);
        kv.check_invariants().unwrap();
    }
}
