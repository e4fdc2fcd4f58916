//! The lock table of a tablet leader: which keys in-flight commits are writing.
//!
//! A lock is taken when a commit is proposed and released when its entry is applied (or the
//! proposal is known to have failed, or the replica stops being leader). It lives only in the
//! leader's memory: a new leader starts with an empty table, which is safe because it serves
//! nothing until it has applied every entry of earlier terms.
//!
//! This is the skeleton's per-key exclusive lock; shared locks, range locks held across a
//! transaction and wound-wait arrive with the transactions issue.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Keys locked by in-flight commits, each with the proposal holding it.
#[derive(Debug, Default)]
pub struct LockTable {
    locks: BTreeMap<Vec<u8>, u64>,
}

impl LockTable {
    pub fn is_locked(&self, key: &[u8]) -> bool {
        self.locks.contains_key(key)
    }

    /// True if any key in `[start, end)` (empty end = unbounded) is locked.
    pub fn any_locked_in(&self, start: &[u8], end: &[u8]) -> bool {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        self.locks
            .range::<[u8], _>((Bound::Included(start), upper))
            .next()
            .is_some()
    }

    /// Locks `keys` for `proposal`.
    pub fn lock(&mut self, keys: impl IntoIterator<Item = Vec<u8>>, proposal: u64) {
        for k in keys {
            self.locks.insert(k, proposal);
        }
    }

    /// Releases every lock `proposal` holds on `keys`.
    pub fn release(&mut self, keys: &[Vec<u8>], proposal: u64) {
        for k in keys {
            if self.locks.get(k) == Some(&proposal) {
                self.locks.remove(k);
            }
        }
    }

    /// Releases everything (on losing leadership).
    pub fn clear(&mut self) {
        self.locks.clear();
    }

    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_see_locks() {
        let mut t = LockTable::default();
        t.lock([b"b".to_vec()], 7);
        assert!(t.is_locked(b"b"));
        assert!(t.any_locked_in(b"a", b"c"));
        assert!(!t.any_locked_in(b"c", b""));
        assert!(t.any_locked_in(b"b", b""));
        assert!(!t.any_locked_in(b"a", b"b"));
        t.release(&[b"b".to_vec()], 8);
        assert!(
            t.is_locked(b"b"),
            "another proposal cannot release the lock"
        );
        t.release(&[b"b".to_vec()], 7);
        assert!(t.is_empty());
    }
}
