//! An in-memory [`Store`] with optimistic, validated transactions and multi-version snapshots:
//! the storage the SQL tests run on, and usable by other crates' tests.
//!
//! Model: one `BTreeMap` from key to every committed version of it, oldest first, each a value
//! or tombstone tagged with its commit timestamp. Timestamps come from one clock: the wall
//! clock in ns since the Unix epoch, made strictly increasing per store, which hands them to
//! commits and to strong snapshots alike.
//!
//! - **Read-write transactions** read the latest committed version plus their own buffered
//!   writes, and record what they saw: the timestamp of every key read and the clock at every
//!   range scanned. `commit` validates under the store's lock that no key read has a newer
//!   version now and that no key in a scanned range (deleted ones included, as tombstones) was
//!   committed after the scan; if anything changed it fails with [`StoreError::Retryable`],
//!   otherwise it applies the writes atomically at a fresh timestamp. Committed transactions
//!   are therefore serializable in commit order.
//! - **Read-only transactions** ([`Store::begin_read_only`]) read one snapshot, the newest
//!   version of each key at or before their read timestamp, without recording or validating
//!   anything. The timestamp is fixed at the first read: [`ReadBound::Strong`] takes the clock's
//!   next tick (every commit so far is visible, none after), [`ReadBound::At`] the given time,
//!   [`ReadBound::ExactStaleness`] the wall clock minus the staleness, and
//!   [`ReadBound::MaxStaleness`] behaves as `Strong` (there are no lagging replicas here, so
//!   the freshest snapshot is always servable). A read at a time later than the clock bumps the
//!   clock, so no later commit can land at or below a timestamp already read; `At` a time past
//!   both the clock and the wall clock is refused at begin with
//!   [`StoreError::InvalidTimestamp`]. Writes through a read-only transaction fail at commit.
//!
//! Old versions and tombstones are never collected (there is no GC horizon), which is fine
//! for tests.
//!
//! A read-write transaction may touch any keys (the gateway commits transactions across
//! tablets with two-phase commit). Tests can make the next read-write commits fail with
//! [`MemStore::fail_next_commits`] to exercise retry paths.
//! [`Store::split_at`] only records its keys ([`MemStore::split_keys`]): tablets here are fixed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::store::{ReadBound, Store, StoreError, Transaction, FIRST_USER_TABLE_ID};

/// One committed version of a key.
#[derive(Debug, Clone)]
struct Version {
    /// The commit timestamp (ns since the epoch).
    ts: u64,
    /// The value, or `None` for a deletion.
    value: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every committed version of every key, oldest first (never empty).
    data: BTreeMap<Vec<u8>, Vec<Version>>,
    /// The latest timestamp handed out to a commit or read (ns since the epoch).
    clock: u64,
    next_table_id: u32,
    /// Commits still to fail with `Retryable` (test hook).
    fail_commits: usize,
    /// Keys passed to `split_at`.
    split_keys: BTreeSet<Vec<u8>>,
}

/// The wall clock in ns since the Unix epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Inner {
    /// A timestamp above every one handed out so far.
    fn tick(&mut self) -> u64 {
        self.clock = now_ns().max(self.clock.saturating_add(1));
        self.clock
    }

    /// The timestamp of the latest version of `key` (0 if it was never written).
    fn latest_ts(&self, key: &[u8]) -> u64 {
        self.data
            .get(key)
            .and_then(|versions| versions.last())
            .map_or(0, |v| v.ts)
    }
}

/// The value of the newest of `versions` at or before `ts` (`None` if deleted or absent).
fn visible_at(versions: &[Version], ts: u64) -> Option<&Vec<u8>> {
    versions
        .iter()
        .rev()
        .find(|v| v.ts <= ts)
        .and_then(|v| v.value.as_ref())
}

/// The latest value of `versions`.
fn latest(versions: &[Version]) -> Option<&Vec<u8>> {
    versions.last().and_then(|v| v.value.as_ref())
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

    /// Makes the next `n` read-write commits fail with [`StoreError::Retryable`].
    pub fn fail_next_commits(&self, n: usize) {
        self.lock().fail_commits = n;
    }

    /// Number of live (non-deleted) keys, for tests.
    pub fn live_keys(&self) -> usize {
        self.lock()
            .data
            .values()
            .filter(|versions| latest(versions).is_some())
            .count()
    }

    /// Every key passed to [`Store::split_at`] so far, in key order, for tests.
    pub fn split_keys(&self) -> Vec<Vec<u8>> {
        self.lock().split_keys.iter().cloned().collect()
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

    async fn begin_read_only(&self, bound: ReadBound) -> Result<Box<dyn Transaction>, StoreError> {
        if let ReadBound::At(ts) = bound {
            let horizon = now_ns().max(self.lock().clock);
            if ts > horizon {
                return Err(StoreError::InvalidTimestamp(format!(
                    "cannot read at timestamp {ts}: it is in the future (now is {horizon})"
                )));
            }
        }
        Ok(Box::new(MemSnapshot {
            store: self.clone(),
            bound,
            read_ts: None,
            wrote: false,
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

    async fn split_at(&self, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        self.lock().split_keys.extend(keys);
        Ok(())
    }
}

/// A scan recorded for validation: the range and the clock when it ran.
#[derive(Debug)]
struct ScanRecord {
    start: Vec<u8>,
    end: Vec<u8>,
    clock: u64,
}

/// A [`MemStore`] read-write transaction.
struct MemTransaction {
    /// Carried for the trait; this store validates optimistically and does not lock.
    priority: u64,
    store: MemStore,
    /// Key -> timestamp of the version seen (0 = never written).
    reads: HashMap<Vec<u8>, u64>,
    scans: Vec<ScanRecord>,
    /// Buffered writes: key -> value or deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    done: bool,
}

fn key_range(start: &[u8], end: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(start.to_vec()),
        Bound::Excluded(end.to_vec()),
    )
}

/// At most `limit` `(key, value)` pairs in `[start, end)`: the committed values `visible`
/// picks from each key's versions, shadowed by `buffered` writes, in key order.
fn merge_scan(
    inner: &Inner,
    buffered: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    start: &[u8],
    end: &[u8],
    limit: usize,
    visible: impl Fn(&[Version]) -> Option<&Vec<u8>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut merged: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut committed = inner.data.range(key_range(start, end)).peekable();
    let mut buffered = buffered.range(key_range(start, end)).peekable();
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
            let Some((ck, versions)) = committed.next() else {
                break;
            };
            if let Some(v) = visible(versions) {
                merged.push((ck.clone(), v.clone()));
            }
        }
    }
    merged
}

impl MemTransaction {
    fn check_open(&self) -> Result<(), StoreError> {
        if self.done {
            Err(StoreError::Internal("transaction already finished".into()))
        } else {
            Ok(())
        }
    }

    fn validate(&self, inner: &Inner) -> Result<(), StoreError> {
        for (key, seen) in &self.reads {
            if inner.latest_ts(key) != *seen {
                return Err(StoreError::Retryable(
                    "a key read by this transaction was changed".into(),
                ));
            }
        }
        for scan in &self.scans {
            if scan.start >= scan.end {
                continue;
            }
            if inner
                .data
                .range(key_range(&scan.start, &scan.end))
                .any(|(_, versions)| versions.last().is_some_and(|v| v.ts > scan.clock))
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
        self.reads
            .entry(key.to_vec())
            .or_insert_with(|| inner.latest_ts(key));
        Ok(inner
            .data
            .get(key)
            .and_then(|versions| latest(versions))
            .cloned())
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
        // A buffered write shadows the committed version of its key.
        let merged = merge_scan(&inner, &self.writes, start, end, limit, latest);
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
            clock: inner.clock,
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
        self.validate(&inner)?;
        if self.writes.is_empty() {
            return Ok(None);
        }
        let ts = inner.tick();
        for (key, value) in std::mem::take(&mut self.writes) {
            inner
                .data
                .entry(key)
                .or_default()
                .push(Version { ts, value });
        }
        Ok(Some(ts))
    }

    async fn rollback(&mut self) {
        self.done = true;
        self.writes.clear();
    }
}

/// A [`MemStore`] read-only transaction: reads of one snapshot.
struct MemSnapshot {
    store: MemStore,
    bound: ReadBound,
    /// The snapshot's timestamp, fixed at the first read.
    read_ts: Option<u64>,
    /// Whether `put` or `delete` was called (an error at commit).
    wrote: bool,
    done: bool,
}

impl MemSnapshot {
    /// The snapshot timestamp, choosing it on first use (see the module doc).
    fn snapshot_ts(&mut self, inner: &mut Inner) -> Result<u64, StoreError> {
        if self.done {
            return Err(StoreError::Internal("transaction already finished".into()));
        }
        if let Some(ts) = self.read_ts {
            return Ok(ts);
        }
        let ts = match self.bound {
            ReadBound::Strong | ReadBound::MaxStaleness(_) => inner.tick(),
            ReadBound::At(ts) => ts,
            ReadBound::ExactStaleness(staleness) => {
                now_ns().saturating_sub(u64::try_from(staleness.as_nanos()).unwrap_or(u64::MAX))
            }
        };
        inner.clock = inner.clock.max(ts);
        self.read_ts = Some(ts);
        Ok(ts)
    }
}

#[async_trait]
impl Transaction for MemSnapshot {
    fn priority(&self) -> u64 {
        0
    }

    fn read_ts(&self) -> Option<u64> {
        self.read_ts
    }

    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.store.clone();
        let mut inner = store.lock();
        let ts = self.snapshot_ts(&mut inner)?;
        Ok(inner
            .data
            .get(key)
            .and_then(|versions| visible_at(versions, ts))
            .cloned())
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let store = self.store.clone();
        let mut inner = store.lock();
        let ts = self.snapshot_ts(&mut inner)?;
        if start >= end {
            return Ok(Vec::new());
        }
        let limit = limit.unwrap_or(usize::MAX);
        let nothing_buffered = BTreeMap::new();
        Ok(merge_scan(
            &inner,
            &nothing_buffered,
            start,
            end,
            limit,
            |versions| visible_at(versions, ts),
        ))
    }

    fn put(&mut self, _key: Vec<u8>, _value: Vec<u8>) {
        self.wrote = true;
    }

    fn delete(&mut self, _key: Vec<u8>) {
        self.wrote = true;
    }

    async fn commit(&mut self) -> Result<Option<u64>, StoreError> {
        if self.done {
            return Err(StoreError::Internal("transaction already finished".into()));
        }
        self.done = true;
        if self.wrote {
            return Err(StoreError::Internal(
                "write through a read-only transaction".into(),
            ));
        }
        Ok(None)
    }

    async fn rollback(&mut self) {
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::table_prefix;

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
    async fn transactions_may_span_tablets() {
        let store = MemStore::new();
        let mut t = store.begin(None).await.unwrap();
        t.get(&k(1, b"catalog")).await.unwrap();
        t.put(k(100, b"row"), b"v".to_vec());
        t.put(k(101, b"row"), b"w".to_vec());
        assert!(t.commit().await.is_ok());
    }

    async fn put_committed(store: &MemStore, key: Vec<u8>, value: Option<&[u8]>) -> u64 {
        let mut t = store.begin(None).await.unwrap();
        match value {
            Some(v) => t.put(key, v.to_vec()),
            None => t.delete(key),
        }
        t.commit().await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn read_only_transactions_read_one_snapshot() {
        let store = MemStore::new();
        let first = put_committed(&store, k(100, b"a"), Some(b"1")).await;

        let mut ro = store.begin_read_only(ReadBound::Strong).await.unwrap();
        assert_eq!(ro.read_ts(), None);
        assert_eq!(ro.get(&k(100, b"a")).await.unwrap(), Some(b"1".to_vec()));
        let read_ts = ro.read_ts().unwrap();
        assert!(read_ts >= first);

        // Later commits, deletions included, are invisible to it, and land above its time.
        let second = put_committed(&store, k(100, b"a"), Some(b"2")).await;
        put_committed(&store, k(100, b"b"), Some(b"3")).await;
        let deleted = put_committed(&store, k(100, b"a"), None).await;
        assert!(second > read_ts);
        assert_eq!(ro.get(&k(100, b"a")).await.unwrap(), Some(b"1".to_vec()));
        let rows = ro.scan(&k(100, b""), &k(101, b""), None).await.unwrap();
        assert_eq!(rows, vec![(k(100, b"a"), b"1".to_vec())]);
        assert_eq!(ro.read_ts(), Some(read_ts));
        assert_eq!(ro.commit().await.unwrap(), None);

        // A new strong snapshot sees everything; exact times see the past.
        let mut now = store.begin_read_only(ReadBound::Strong).await.unwrap();
        let rows = now.scan(&k(100, b""), &k(101, b""), None).await.unwrap();
        assert_eq!(rows, vec![(k(100, b"b"), b"3".to_vec())]);
        for (ts, expected) in [
            (first - 1, None),
            (first, Some(b"1".to_vec())),
            (second, Some(b"2".to_vec())),
            (deleted - 1, Some(b"2".to_vec())),
            (deleted, None),
        ] {
            let mut at = store.begin_read_only(ReadBound::At(ts)).await.unwrap();
            assert_eq!(at.get(&k(100, b"a")).await.unwrap(), expected, "at {ts}");
            assert_eq!(at.read_ts(), Some(ts));
        }
        let mut stale = store
            .begin_read_only(ReadBound::ExactStaleness(std::time::Duration::from_secs(
                10,
            )))
            .await
            .unwrap();
        assert_eq!(stale.get(&k(100, b"b")).await.unwrap(), None);
        assert!(stale.read_ts().unwrap() < first);
        let mut bounded = store
            .begin_read_only(ReadBound::MaxStaleness(std::time::Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(
            bounded.get(&k(100, b"b")).await.unwrap(),
            Some(b"3".to_vec())
        );
    }

    #[tokio::test]
    async fn read_only_transactions_refuse_the_future_and_writes() {
        let store = MemStore::new();
        let future = now_ns() + 3_600_000_000_000;
        assert!(matches!(
            store.begin_read_only(ReadBound::At(future)).await,
            Err(StoreError::InvalidTimestamp(_))
        ));

        let mut ro = store.begin_read_only(ReadBound::Strong).await.unwrap();
        ro.put(k(100, b"x"), b"1".to_vec());
        assert!(matches!(ro.commit().await, Err(StoreError::Internal(_))));
        assert_eq!(store.live_keys(), 0);

        // A read-only transaction never conflicts, and its commit does not use up injected
        // failures.
        let mut ro = store.begin_read_only(ReadBound::Strong).await.unwrap();
        ro.get(&k(100, b"x")).await.unwrap();
        put_committed(&store, k(100, b"x"), Some(b"1")).await;
        store.fail_next_commits(1);
        assert_eq!(ro.commit().await.unwrap(), None);
        let mut t = store.begin(None).await.unwrap();
        t.put(k(100, b"y"), b"2".to_vec());
        assert!(matches!(t.commit().await, Err(StoreError::Retryable(_))));
    }

    #[tokio::test]
    async fn reading_at_a_time_ahead_of_the_clock_keeps_later_commits_above_it() {
        let store = MemStore::new();
        let ahead = now_ns() + 1_000;
        // Allowed once the wall clock has passed it.
        while now_ns() < ahead {
            std::thread::yield_now();
        }
        let mut at = store.begin_read_only(ReadBound::At(ahead)).await.unwrap();
        assert_eq!(at.get(&k(100, b"a")).await.unwrap(), None);
        let ts = put_committed(&store, k(100, b"a"), Some(b"1")).await;
        assert!(ts > ahead);
        assert_eq!(at.get(&k(100, b"a")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn split_at_records_keys() {
        let store = MemStore::new();
        store
            .split_at(vec![k(100, b"m"), k(100, b"c")])
            .await
            .unwrap();
        store.split_at(vec![k(100, b"c")]).await.unwrap();
        assert_eq!(store.split_keys(), vec![k(100, b"c"), k(100, b"m")]);
    }
}
