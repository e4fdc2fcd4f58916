//! A read-write transaction driven by the KV client (DESIGN.md, Transactions).
//!
//! Reads go to tablet leaders as they happen and take shared locks on the spans they cover
//! (wound-wait at the leader); each leader answers with the epoch its locks are held under, and
//! an epoch that changes mid-transaction means the locks were lost (leader change, idle
//! timeout): the transaction aborts. Writes are buffered here and merged into the
//! transaction's own reads.
//!
//! At commit:
//! - nothing written: each group validates and releases its locks ([`pb::FinishOp`]); the reads
//!   were serializable at the moment the first validation ran, when every lock was still held;
//! - one group involved: its leader locks the writes, commits through Raft and releases
//!   ([`pb::CommitOp`]), with no two-phase commit;
//! - several groups: two-phase commit with the first written group as coordinator: (1)
//!   exclusive locks on every write at every written group, so that once any participant has
//!   prepared the transaction never waits again and waits for prepared transactions cannot
//!   form a cycle; (2) every other participant logs a prepare record and answers its prepare
//!   timestamp; (3) the coordinator picks `s` above all of them, logs the decision with its own
//!   writes, commit-waits and answers; it then tells participants in the background.
//!
//! A failure before (3) rolls back every participant. A failure of (3) whose outcome is unknown
//! is reported as ambiguous and left to the participants, which ask the coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use meridian_common::{limits, GroupId};
use meridian_proto as pb;

use crate::error::Error;
use crate::router::{Route, Router};

/// Rows fetched per scan RPC.
const PAGE_ROWS: usize = 1000;

/// What the transaction holds at one group.
#[derive(Debug, Clone)]
struct GroupState {
    route: Route,
    /// The epoch of its locks there (0 = none yet).
    epoch: u64,
    /// Spans it read (shared locks).
    reads: Vec<pb::KeySpan>,
}

/// A transaction's buffered state.
pub struct ReadWriteTxn {
    router: Arc<Router>,
    meta: pb::TxnMeta,
    /// Buffered writes: `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Buffered writes that are inserts: their keys must have no live version at commit.
    inserts: BTreeSet<Vec<u8>>,
    /// Bytes of keys and values in `writes`.
    write_bytes: usize,
    /// Groups where it holds locks.
    groups: BTreeMap<GroupId, GroupState>,
    finished: bool,
}

/// Nanoseconds since the Unix epoch: a new transaction's priority.
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl ReadWriteTxn {
    /// A transaction with `priority` (a retry's original one), or a fresh priority.
    pub fn new(router: Arc<Router>, priority: Option<u64>) -> ReadWriteTxn {
        ReadWriteTxn {
            router,
            meta: pb::TxnMeta {
                id: rand::random::<u64>() | 1,
                priority: priority.unwrap_or_else(now_ns),
            },
            writes: BTreeMap::new(),
            inserts: BTreeSet::new(),
            write_bytes: 0,
            groups: BTreeMap::new(),
            finished: false,
        }
    }

    /// Buffered writes in `[start, end)` (empty end = unbounded).
    fn buffered_in<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)> + 'a {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        self.writes
            .range::<[u8], _>((Bound::Included(start), upper))
    }

    /// Records the epoch a leader answered; a changed epoch means the locks were lost.
    fn note_epoch(&mut self, route: &Route, epoch: u64) -> Result<&mut GroupState, Error> {
        let state = self
            .groups
            .entry(route.group)
            .or_insert_with(|| GroupState {
                route: route.clone(),
                epoch: 0,
                reads: Vec::new(),
            });
        if state.epoch != 0 && epoch != state.epoch {
            return Err(Error::Aborted(format!(
                "the transaction's locks at tablet {} were lost (leader change or idle timeout)",
                route.group
            )));
        }
        state.epoch = epoch;
        Ok(state)
    }

    /// Keeps the router's heartbeats up to date with where this transaction holds locks.
    fn track(&self) {
        let groups = self
            .groups
            .values()
            .map(|s| (s.route.clone(), s.epoch))
            .collect();
        Router::track_txn(&self.router, self.meta, groups);
    }

    fn request(&self, group: GroupId, epoch: u64, op: pb::txn_request::Op) -> pb::TxnRequest {
        pb::TxnRequest {
            group_id: group.0,
            txn: Some(self.meta),
            lock_epoch: epoch,
            op: Some(op),
        }
    }

    /// Rolls back at every group where the transaction may hold locks or a prepare record.
    async fn abort_everywhere(&self, groups: &[(Route, u64)]) {
        let calls = groups.iter().map(|(route, epoch)| {
            let req = self.request(
                route.group,
                *epoch,
                pb::txn_request::Op::Finish(pb::FinishOp { abort: true }),
            );
            let router = self.router.clone();
            async move {
                if let Err(e) = router.txn_step(route, req).await {
                    tracing::debug!(group = route.group.0, error = %e, "rollback");
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    /// Two-phase commit over `by_group` (each written group's mutations) and the groups that
    /// were only read.
    async fn two_phase_commit(
        &mut self,
        mut by_group: BTreeMap<GroupId, (Route, Vec<pb::Mutation>)>,
    ) -> Result<u64, Error> {
        let Some(coordinator) = by_group.keys().next().copied() else {
            return Err(Error::Internal("two-phase commit without writes".into()));
        };
        // (1) Exclusive locks on every write, at every written group.
        let lock_calls = by_group.iter().map(|(group, (route, ms))| {
            let epoch = self.groups.get(group).map_or(0, |s| s.epoch);
            let req = self.request(
                *group,
                epoch,
                pb::txn_request::Op::Lock(pb::LockOp {
                    keys: ms.iter().map(|m| m.key.clone()).collect(),
                }),
            );
            let router = self.router.clone();
            async move { (route.clone(), router.txn_step(route, req).await) }
        });
        let locked = futures::future::join_all(lock_calls).await;
        let mut failure = None;
        for (route, result) in locked {
            match result {
                Ok(resp) => {
                    if let Err(e) = self.note_epoch(&route, resp.lock_epoch) {
                        failure.get_or_insert(e);
                    }
                }
                Err(e) => {
                    self.groups.entry(route.group).or_insert(GroupState {
                        route: route.clone(),
                        epoch: 0,
                        reads: Vec::new(),
                    });
                    failure.get_or_insert(e);
                }
            }
        }
        let everyone: Vec<(Route, u64)> = self
            .groups
            .values()
            .map(|s| (s.route.clone(), s.epoch))
            .collect();
        if let Some(e) = failure {
            self.abort_everywhere(&everyone).await;
            return Err(e);
        }
        // (2) Every participant but the coordinator prepares.
        let participants: Vec<u64> = self
            .groups
            .keys()
            .filter(|g| **g != coordinator)
            .map(|g| g.0)
            .collect();
        let prepare_calls =
            self.groups
                .iter()
                .filter(|(g, _)| **g != coordinator)
                .map(|(group, state)| {
                    let mutations = by_group
                        .get(group)
                        .map(|(_, ms)| ms.clone())
                        .unwrap_or_default();
                    let req = self.request(
                        *group,
                        state.epoch,
                        pb::txn_request::Op::Prepare(pb::PrepareOp {
                            reads: state.reads.clone(),
                            mutations,
                            coordinator_group: coordinator.0,
                            participant_groups: participants.clone(),
                        }),
                    );
                    let route = state.route.clone();
                    let router = self.router.clone();
                    async move { router.txn_step(&route, req).await }
                });
        let prepared = futures::future::join_all(prepare_calls).await;
        let mut min_ts = 0;
        for result in prepared {
            match result {
                Ok(resp) => min_ts = min_ts.max(resp.ts),
                Err(e) => {
                    self.abort_everywhere(&everyone).await;
                    return Err(e);
                }
            }
        }
        // (3) The coordinator decides.
        let Some((route, mutations)) = by_group.remove(&coordinator) else {
            return Err(Error::Internal("coordinator lost its writes".into()));
        };
        let epoch = self.groups.get(&coordinator).map_or(0, |s| s.epoch);
        let req = self.request(
            coordinator,
            epoch,
            pb::txn_request::Op::Decide(pb::DecideOp {
                mutations,
                participant_groups: participants,
                min_ts,
            }),
        );
        match self.router.txn_step(&route, req).await {
            Ok(resp) => Ok(resp.ts),
            Err(e @ (Error::Aborted(_) | Error::KeyExists { .. })) => {
                // The coordinator logged an abort: the prepared participants can go now.
                self.abort_everywhere(&everyone).await;
                Err(e)
            }
            // Unknown outcome: the participants ask the coordinator.
            Err(e) => Err(e),
        }
    }
}

/// The value of exactly `key` among the rows a point read (a scan of `[key, successor)`)
/// returned.
pub(crate) fn value_at(rows: Vec<(Vec<u8>, Vec<u8>)>, key: &[u8]) -> Option<Vec<u8>> {
    rows.into_iter()
        .find(|(k, _)| k.as_slice() == key)
        .map(|(_, v)| v)
}

/// The smallest key after `key`.
pub(crate) fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

fn before_end(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

fn to_pb(key: Vec<u8>, value: Option<Vec<u8>>, insert: bool) -> pb::Mutation {
    match value {
        Some(value) => pb::Mutation {
            key,
            value,
            delete: false,
            must_be_absent: insert,
        },
        None => pb::Mutation {
            key,
            value: Vec::new(),
            delete: true,
            must_be_absent: insert,
        },
    }
}

impl ReadWriteTxn {
    /// The wound-wait priority.
    pub fn priority(&self) -> u64 {
        self.meta.priority
    }

    /// A cluster-unique id ([`crate::unique_ids`]), reserved outside this transaction: it
    /// stays unique whether this transaction commits or not.
    pub async fn unique_id(&self) -> Result<i64, Error> {
        crate::Client::with_router(self.router.clone())
            .unique_id()
            .await
    }

    /// The value at `key`, as this transaction sees it (its own writes included); takes a
    /// shared lock on it.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        let rows = self.scan(key, &key_successor(key), Some(1)).await?;
        Ok(value_at(rows, key))
    }

    /// Rows in `[start, end)` (empty end = unbounded), merged with this transaction's own
    /// writes, at most `limit`; takes shared locks on the spans read.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        if self.finished {
            return Err(Error::Internal("transaction already finished".into()));
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut cursor = start.to_vec();
        while before_end(&cursor, end) {
            let want = limit.map_or(PAGE_ROWS, |l| {
                l.saturating_sub(out.len()).clamp(1, PAGE_ROWS)
            });
            let (route, resp): (Route, pb::ScanResponse) = self
                .router
                .scan_tablet(&cursor, end, want as u32, Some(self.meta))
                .await?;
            let piece_end = route.range.clip_end(end);
            let state = self.note_epoch(&route, resp.lock_epoch)?;
            // The shared lock covers the whole requested piece, even if the page stopped early.
            state.reads.push(pb::KeySpan {
                start: cursor.clone(),
                end: piece_end.clone(),
            });
            self.track();
            let covered_end = if resp.resume_key.is_empty() {
                piece_end.clone()
            } else {
                resp.resume_key.clone()
            };
            // Merge the stored rows with this transaction's own writes in the covered range.
            let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
                resp.rows.into_iter().map(|r| (r.key, r.value)).collect();
            for (k, v) in self.buffered_in(&cursor, &covered_end) {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
            out.extend(merged);
            if let Some(l) = limit {
                if out.len() >= l {
                    out.truncate(l);
                    break;
                }
            }
            if covered_end.is_empty() {
                break; // the scan reached the end of the keyspace
            }
            cursor = covered_end;
        }
        Ok(out)
    }

    /// Buffers a write of `value` at `key` until commit. Fails with
    /// [`Error::LimitExceeded`], buffering nothing, past the [`limits`].
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        self.buffer(key, Some(value))
    }

    /// Buffers an insert: a write of `value` at `key` that commits only if `key` has no live
    /// version then. The check costs no read now: the leader makes it when it locks the key
    /// for the commit, and the commit fails with [`Error::KeyExists`] (writing nothing) if the
    /// key is live. A key this transaction already wrote fails at once; one it deleted is
    /// simply written again.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), Error> {
        match self.writes.get(&key) {
            Some(Some(_)) => Err(Error::KeyExists { key }),
            Some(None) => self.buffer(key, Some(value)),
            None => {
                self.buffer(key.clone(), Some(value))?;
                self.inserts.insert(key);
                Ok(())
            }
        }
    }

    /// Buffers a deletion of `key` until commit. A key this transaction inserted stays
    /// checked: it must still be absent at commit, or the deletion would remove a row the
    /// transaction never saw.
    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), Error> {
        self.buffer(key, None)
    }

    /// Adds one write to the buffer if the key, the value and the whole commit stay within
    /// the [`limits`].
    fn buffer(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), Error> {
        limits::check_write(&key, value.as_deref()).map_err(Error::LimitExceeded)?;
        let size =
            |key: &[u8], value: &Option<Vec<u8>>| key.len() + value.as_ref().map_or(0, Vec::len);
        let replaced = self.writes.get(&key).map(|old| size(&key, old));
        let writes = self.writes.len() + usize::from(replaced.is_none());
        let bytes = self.write_bytes - replaced.unwrap_or(0) + size(&key, &value);
        limits::check_commit(writes, bytes).map_err(Error::LimitExceeded)?;
        self.write_bytes = bytes;
        self.writes.insert(key, value);
        Ok(())
    }

    /// Commits; the commit timestamp (ns since the Unix epoch) if anything was written.
    pub async fn commit(&mut self) -> Result<Option<u64>, Error> {
        if self.finished {
            return Err(Error::Internal("transaction already finished".into()));
        }
        self.finished = true;
        let outcome = self.finish_commit().await;
        self.router.untrack_txn(self.meta.id);
        outcome
    }

    /// Discards the buffered writes and releases every lock.
    pub async fn rollback(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.router.untrack_txn(self.meta.id);
        self.writes.clear();
        self.inserts.clear();
        let everyone: Vec<(Route, u64)> = self
            .groups
            .values()
            .map(|s| (s.route.clone(), s.epoch))
            .collect();
        self.abort_everywhere(&everyone).await;
    }
}

impl ReadWriteTxn {
    /// The commit itself (see the module doc for the three ways it goes).
    async fn finish_commit(&mut self) -> Result<Option<u64>, Error> {
        let mut by_group: BTreeMap<GroupId, (Route, Vec<pb::Mutation>)> = BTreeMap::new();
        let inserts = std::mem::take(&mut self.inserts);
        self.write_bytes = 0;
        for (key, value) in std::mem::take(&mut self.writes) {
            let route = self.router.route(&key).await?;
            let insert = inserts.contains(&key);
            by_group
                .entry(route.group)
                .or_insert_with(|| (route, Vec::new()))
                .1
                .push(to_pb(key, value, insert));
        }
        let involved: BTreeSet<GroupId> =
            by_group.keys().chain(self.groups.keys()).copied().collect();
        if by_group.is_empty() {
            // Read only: validate and release everywhere.
            let calls = self.groups.values().map(|s| {
                let req = self.request(
                    s.route.group,
                    s.epoch,
                    pb::txn_request::Op::Finish(pb::FinishOp { abort: false }),
                );
                let route = s.route.clone();
                let router = self.router.clone();
                async move { router.txn_step(&route, req).await }
            });
            for result in futures::future::join_all(calls).await {
                result?;
            }
            return Ok(None);
        }
        if involved.len() == 1 {
            let Some((group, (route, mutations))) = by_group.into_iter().next() else {
                return Ok(None);
            };
            let epoch = self.groups.get(&group).map_or(0, |s| s.epoch);
            let req = self.request(
                group,
                epoch,
                pb::txn_request::Op::Commit(pb::CommitOp { mutations }),
            );
            let resp = self.router.txn_step(&route, req).await?;
            return Ok(Some(resp.ts));
        }
        self.two_phase_commit(by_group).await.map(Some)
    }
}

impl Drop for ReadWriteTxn {
    /// A transaction dropped without commit or rollback (its session went away) releases its
    /// locks in the background rather than holding them until the idle timeout.
    fn drop(&mut self) {
        self.router.untrack_txn(self.meta.id);
        if self.finished || self.groups.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let router = self.router.clone();
        let meta = self.meta;
        let groups: Vec<(Route, u64)> = self
            .groups
            .values()
            .map(|s| (s.route.clone(), s.epoch))
            .collect();
        runtime.spawn(async move {
            for (route, epoch) in groups {
                let req = pb::TxnRequest {
                    group_id: route.group.0,
                    txn: Some(meta),
                    lock_epoch: epoch,
                    op: Some(pb::txn_request::Op::Finish(pb::FinishOp { abort: true })),
                };
                let _ = router.txn_step(&route, req).await;
            }
        });
    }
}
