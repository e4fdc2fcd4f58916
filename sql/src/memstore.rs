//! An in-memory [`Store`] with optimistic, validated transactions: the storage the SQL tests run
//! on, and usable by other crates' tests.
//!
//! Model: one `BTreeMap` from key to its latest version `(value or tombstone, version)`, where
//! the version is a global counter bumped by every commit. Reads see the latest committed data
//! plus the transaction's own buffered writes, and record what they saw: the version of every
//! key read and every range scanned. `commit` validates under the store's lock that no key read
//! has a different version now and that no key in a scanned range (deleted ones included, as
//! tombstones) was committed after the scan; if anything changed it fails with
//! [`StoreError::Retryable`], otherwise it applies the writes atomically. Committed
//! transactions are therefore serializable in commit order. Tombstones are never collected,
//! which is fine for tests.
//!
//! Like the spanserver's gateway (until 2PC exists), a transaction whose reads and writes touch
//! more than one tablet fails at commit with [`StoreError::NotSupported`]: each user table is
//! its own tablet and all system tables (ids below [`FIRST_USER_TABLE_ID`]) share one. Tests can
//! turn that off with [`MemStore::allow_multi_tablet`] and can make the next commits fail with
//! [`MemStore::fail_next_commits`] to exercise retry paths.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::store::{table_prefix, Store, StoreError, Transaction, FIRST_USER_TABLE_ID};

#[derive(Debug, Clone)]
struct Versioned {
    value: Option<Vec<u8>>,
    version: u64,
}

#[derive(Debug, Default)]
struct Inner {
    data: BTreeMap<Vec<u8>, Versioned>,
    /// The version of the latest commit.
    version: u64,
    /// The latest commit timestamp handed out (ns since the epoch).
    last_commit_ts: u64,
    next_table_id: u32,
    /// Commits still to fail with `Retryable` (test hook).
    fail_commits: usize,
    allow_multi_tablet: bool,
}

/// The in-memory store. Cloning gives another handle to the same data.
#[derive(Debug, Clone)]
pub struct MemStore {
    inner: Arc<Mutex<Inner>>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store whose first table id is [`FIRST_USER_TABLE_ID`].
    pub fn new() -> MemStore {
        MemStore {
            inner: Arc::new(Mutex::new(Inner {
                next_table_id: FIRST_USER_TABLE_ID,
                ..Inner::default()
            })),
        }
    }

    /// Lets transactions span tablets (the real gateway cannot yet).
    pub fn allow_multi_tablet(&self, allow: bool) {
        self.lock().allow_multi_tablet = allow;
    }

    /// Makes the next `n` commits fail with [`StoreError::Retryable`].
    pub fn fail_next_commits(&self, n: usize) {
        self.lock().fail_commits = n;
    }

    /// Number of live (non-deleted) keys, for tests.
    pub fn live_keys(&self) -> usize {
        self.lock()
            .data
            .values()
            .filter(|v| v.value.is_some())
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated (commit applies
        // writes after validation with no fallible step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemStore {
    async fn begin(&self, priority: Option<u64>) -> Result<Box<dyn Transaction>, StoreError> {
        Ok(Box::new(MemTransaction {
            priority: priority.unwrap_or(0),
            store: self.clone(),
            reads: HashMap::new(),
            scans: Vec::new(),
            writes: BTreeMap::new(),
            done: false,
        }))
    }

    async fn create_table_range(&self) -> Result<u32, StoreError> {
        let mut inner = self.lock();
        let id = inner.next_table_id;
        inner.next_table_id = id
            .checked_add(1)
            .ok_or_else(|| StoreError::Internal("table ids exhausted".into()))?;
        Ok(id)
    }
}

/// A scan recorded for validation: the range and the store version it saw.
#[derive(Debug)]
struct ScanRecord {
    start: Vec<u8>,
    end: Vec<u8>,
    version: u64,
}

/// A [`MemStore`] transaction.
struct MemTransaction {
    /// Carried for the trait; this store validates optimistically and does not lock.
    priority: u64,
    store: MemStore,
    /// Key -> version seen (0 = absent).
    reads: HashMap<Vec<u8>, u64>,
    scans: Vec<ScanRecord>,
    /// Buffered writes: key -> value or deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    done: bool,
}

/// The tablet a key belongs to: its table id for user tables, 0 for the system tablet.
fn tablet_of(key: &[u8]) -> u32 {
    let mut id = [0u8; 4];
    for (slot, b) in id.iter_mut().zip(key) {
        *slot = *b;
    }
    let id = u32::from_be_bytes(id);
    if id < FIRST_USER_TABLE_ID {
        0
    } else {
        id
    }
}

impl MemTransaction {
    fn check_open(&self) -> Result<(), StoreError> {
        if self.done {
            Err(StoreError::Internal("transaction already finished".into()))
        } else {
            Ok(())
        }
    }

    fn tablets(&self) -> BTreeSet<u32> {
        let mut tablets = BTreeSet::new();
        tablets.extend(self.reads.keys().map(|k| tablet_of(k)));
        tablets.extend(self.writes.keys().map(|k| tablet_of(k)));
        for scan in &self.scans {
            let first = tablet_of(&scan.start);
            tablets.insert(first);
            let first_end = if first == 0 {
                table_prefix(FIRST_USER_TABLE_ID)
            } else {
                table_prefix(first.saturating_add(1))
            };
            if scan.end > first_end {
                tablets.insert(tablet_of(&scan.end));
            }
        }
        tablets
    }

    fn validate(&self, inner: &Inner) -> Result<(), StoreError> {
        for (key, seen) in &self.reads {
            let now = inner.data.get(key).map_or(0, |v| v.version);
            if now != *seen {
                return Err(StoreError::Retryable(
                    "a key read by this transaction was changed".into(),
                ));
            }
        }
        for scan in &self.scans {
            if scan.start >= scan.end {
                continue;
            }
            let range = (
                Bound::Included(scan.start.clone()),
                Bound::Excluded(scan.end.clone()),
            );
            if inner
                .data
                .range(range)
                .any(|(_, v)| v.version > scan.version)
            {
                return Err(StoreError::Retryable(
                    "a range scanned by this transaction was changed".into(),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Transaction for MemTransaction {
    fn priority(&self) -> u64 {
        self.priority
    }

    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_open()?;
        if let Some(buffered) = self.writes.get(key) {
            return Ok(buffered.clone());
        }
        let inner = self.store.lock();
        let found = inner.data.get(key);
        self.reads
            .entry(key.to_vec())
            .or_insert_with(|| found.map_or(0, |v| v.version));
        Ok(found.and_then(|v| v.value.clone()))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.check_open()?;
        if start >= end {
            return Ok(Vec::new());
        }
        let limit = limit.unwrap_or(usize::MAX);
        let inner = self.store.lock();
        let range = || {
            (
                Bound::Included(start.to_vec()),
                Bound::Excluded(end.to_vec()),
            )
        };
        // Merge committed data with this transaction's buffered writes, in key order; a
        // buffered write shadows the committed version of its key.
        let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut committed = inner.data.range(range()).peekable();
        let mut buffered = self.writes.range(range()).peekable();
        while merged.len() < limit {
            let take_buffered = match (committed.peek(), buffered.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some((ck, _)), Some((bk, _))) => bk <= ck,
            };
            if take_buffered {
                let Some((bk, bv)) = buffered.next() else {
                    break;
                };
                if committed.peek().is_some_and(|(ck, _)| *ck == bk) {
                    committed.next();
                }
                if let Some(v) = bv {
                    merged.push((bk.clone(), v.clone()));
                }
            } else {
                let Some((ck, cv)) = committed.next() else {
                    break;
                };
                if let Some(v) = &cv.value {
                    merged.push((ck.clone(), v.clone()));
                }
            }
        }
        // Record the part of the range the caller has seen: up to and including the last key
        // returned if the page is full, else the whole range.
        let seen_end = if merged.len() >= limit {
            merged.last().map(|(k, _)| {
                let mut e = k.clone();
                e.push(0);
                e
            })
        } else {
            None
        };
        self.scans.push(ScanRecord {
            start: start.to_vec(),
            end: seen_end.unwrap_or_else(|| end.to_vec()),
            version: inner.version,
        });
        Ok(merged)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    async fn commit(&mut self) -> Result<Option<u64>, StoreError> {
        self.check_open()?;
        self.done = true;
        let mut inner = self.store.lock();
        if inner.fail_commits > 0 {
            inner.fail_commits -= 1;
            return Err(StoreError::Retryable("injected conflict".into()));
        }
        if !inner.allow_multi_tablet && self.tablets().len() > 1 {
            return Err(StoreError::NotSupported(
                "transactions spanning more than one tablet (2PC)".into(),
            ));
        }
        self.validate(&inner)?;
        if self.writes.is_empty() {
            return Ok(None);
        }
        inner.version += 1;
        let version = inner.version;
        for (key, value) in std::mem::take(&mut self.writes) {
            inner.data.insert(key, Versioned { value, version });
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let ts = now.max(inner.last_commit_ts + 1);
        inner.last_commit_ts = ts;
        Ok(Some(ts))
    }

    async fn rollback(&mut self) {
        self.done = true;
        self.writes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(table: u32, rest: &[u8]) -> Vec<u8> {
        let mut key = table_prefix(table);
        key.extend_from_slice(rest);
        key
    }

    #[tokio::test]
    async fn read_your_writes_and_scan_merge() {
        let store = MemStore::new();
        let mut t = store.begin(None).await.unwrap();
        t.put(k(100, b"a"), b"1".to_vec());
        t.put(k(100, b"c"), b"3".to_vec());
        t.commit().await.unwrap();

        let mut t = store.begin(None).await.unwrap();
        t.put(k(100, b"b"), b"2".to_vec());
        t.delete(k(100, b"c"));
        t.put(k(100, b"d"), b"4".to_vec());
        let rows = t.scan(&k(100, b""), &k(101, b""), None).await.unwrap();
        let keys: Vec<_> = rows.iter().map(|(key, _)| key[4..].to_vec()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]);
        let page = t.scan(&k(100, b""), &k(101, b""), Some(2)).await.unwrap();
        assert_eq!(page.len(), 2);
        assert_eq!(t.get(&k(100, b"c")).await.unwrap(), None);
        assert!(t.commit().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn conflicting_read_fails_at_commit() {
        let store = MemStore::new();
        let mut t1 = store.begin(None).await.unwrap();
        let mut t2 = store.begin(None).await.unwrap();
        assert_eq!(t1.get(&k(100, b"x")).await.unwrap(), None);
        t2.put(k(100, b"x"), b"2".to_vec());
        t2.commit().await.unwrap();
        t1.put(k(100, b"y"), b"1".to_vec());
        assert!(matches!(t1.commit().await, Err(StoreError::Retryable(_))));
    }

    #[tokio::test]
    async fn phantom_in_scanned_range_fails_at_commit() {
        let store = MemStore::new();
        let mut t1 = store.begin(None).await.unwrap();
        t1.scan(&k(100, b""), &k(101, b""), None).await.unwrap();
        let mut t2 = store.begin(None).await.unwrap();
        t2.put(k(100, b"new"), b"v".to_vec());
        t2.commit().await.unwrap();
        t1.put(k(100, b"other"), b"1".to_vec());
        assert!(matches!(t1.commit().await, Err(StoreError::Retryable(_))));
    }

    #[tokio::test]
    async fn multi_tablet_transactions_are_refused() {
        let store = MemStore::new();
        let mut t = store.begin(None).await.unwrap();
        t.get(&k(1, b"catalog")).await.unwrap();
        t.put(k(100, b"row"), b"v".to_vec());
        assert!(matches!(t.commit().await, Err(StoreError::NotSupported(_))));

        let mut t = store.begin(None).await.unwrap();
        t.scan(&k(100, b""), &k(101, b""), None).await.unwrap();
        t.put(k(100, b"row"), b"v".to_vec());
        assert!(t.commit().await.is_ok());
    }
}
