//! Tablets: a contiguous key range replicated by one Raft group, and the transaction logic its
//! leader runs.
//!
//! Commits are validated optimistically at the group's leader (STYLE.md rule 5: the logic here
//! is pure functions over the engine, the lock table and the request; the driver schedules it):
//!
//! 1. A transaction reads at the leader, which returns with every scan an `observed_ts`: every
//!    commit applied when the scan ran has a timestamp `<= observed_ts`.
//! 2. At commit, the leader checks under its single driver thread that no key the transaction
//!    writes is locked by an in-flight commit, that no in-flight commit holds a key in any range
//!    the transaction read, and that no version newer than the range's `observed_ts` exists in
//!    any range it read. If all hold, nothing it read has changed: the transaction is
//!    serializable at its commit timestamp.
//! 3. The leader picks the commit timestamp `s = max(TT.now().latest, last assigned + 1)`, locks
//!    the written keys, and proposes the commit through Raft. When the entry is applied the
//!    locks are released and the proposer is told `s`; it then waits until `TT.after(s)`
//!    (commit wait) before acknowledging.
//!
//! Commit timestamps are assigned in log order and are strictly increasing per group, so the
//! apply order is the timestamp order.
//!
//! Deliberately not here yet: multi-group (2PC) commits, wound-wait locking, read-only snapshot
//! transactions and leases (the transactions issue).

pub mod locks;

use meridian_truetime::Timestamp;
use serde::{Deserialize, Serialize};

use crate::raft::GroupId;
use crate::storage::engine::{Engine, EngineError, WriteBatch};
use crate::storage::mvcc;

/// A key range `[start, end)`; an empty `end` means unbounded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// True if `[start, end)` (end empty = unbounded) lies inside this range.
    pub fn covers(&self, start: &[u8], end: &[u8]) -> bool {
        if start < self.start.as_slice() {
            return false;
        }
        match (self.end.is_empty(), end.is_empty()) {
            (true, _) => true,
            (false, true) => false,
            (false, false) => end <= self.end.as_slice(),
        }
    }
}

/// What a hosted replica is: its group, range and peers. Persisted in the `Meta` CF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDescriptor {
    pub group: u64,
    pub range: KeyRange,
    pub peers: Vec<u64>,
}

impl ReplicaDescriptor {
    pub fn group_id(&self) -> GroupId {
        GroupId(self.group)
    }
}

/// One mutation of a commit: a value, or `None` for a deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A range a transaction read, and what the read observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub observed_ts: Timestamp,
}

/// A request to commit a single-group transaction.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub reads: Vec<ReadRange>,
    pub mutations: Vec<Mutation>,
}

/// A command replicated through a tablet's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Apply `mutations` at commit timestamp `ts`. `proposal` identifies the proposer's waiter.
    Commit {
        proposal: u64,
        ts: u64,
        mutations: Vec<Mutation>,
    },
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        bincode::serialize(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        bincode::deserialize(bytes).map_err(|e| e.to_string())
    }
}

/// Why a commit was refused before it was proposed. Each is safe to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("write-write conflict on a key being committed by another transaction")]
    WriteLocked,
    #[error("a range this transaction read is being written by another transaction")]
    ReadLocked,
    #[error("a row this transaction read changed after it was read (version {found} > observed {observed})")]
    ReadChanged { found: u64, observed: u64 },
    #[error("key outside the tablet's range")]
    OutOfRange,
    #[error("storage: {0}")]
    Engine(String),
}

impl From<EngineError> for ValidationError {
    fn from(e: EngineError) -> Self {
        ValidationError::Engine(e.0)
    }
}

/// Checks that `request` may commit now: its keys are in `range`, nothing it writes or read is
/// locked by an in-flight commit, and nothing it read has a newer version than it observed.
pub fn validate(
    engine: &dyn Engine,
    range: &KeyRange,
    locks: &locks::LockTable,
    request: &CommitRequest,
) -> Result<(), ValidationError> {
    for m in &request.mutations {
        if !range.contains(&m.key) {
            return Err(ValidationError::OutOfRange);
        }
        if locks.is_locked(&m.key) {
            return Err(ValidationError::WriteLocked);
        }
    }
    for r in &request.reads {
        if !range.covers(&r.start, &r.end) {
            return Err(ValidationError::OutOfRange);
        }
        if locks.any_locked_in(&r.start, &r.end) {
            return Err(ValidationError::ReadLocked);
        }
        if let Some(newest) = mvcc::newest_version_ts_in_range(engine, &r.start, &r.end)? {
            if newest > r.observed_ts {
                return Err(ValidationError::ReadChanged {
                    found: newest.0,
                    observed: r.observed_ts.0,
                });
            }
        }
    }
    Ok(())
}

/// Adds the effects of a committed command to `batch`.
pub fn apply(batch: &mut WriteBatch, command: &Command) {
    match command {
        Command::Commit { ts, mutations, .. } => {
            for m in mutations {
                mvcc::put_version(batch, &m.key, Timestamp(*ts), m.value.as_deref());
            }
        }
    }
}
