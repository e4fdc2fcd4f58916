//! Tablets: a contiguous key range replicated by one Raft group, and the transaction state its
//! replicas keep.
//!
//! Read-write transactions lock at the group's leader (see [`lock_table`]: shared locks on the
//! spans they read, exclusive locks on the keys they write, wound-wait) and commit in one of two
//! ways (DESIGN.md, Transactions):
//!
//! - **One group**: the leader takes the write locks, picks `s = max(TT.now().latest, last
//!   assigned + 1)` and replicates [`Command::Commit`]; once applied and `TT.after(s)`, the
//!   locks are released.
//! - **Several groups (two-phase commit)**: every participant but the coordinator replicates a
//!   [`Command::Prepare`] with its prepare timestamp, which leaves a [`PreparedRecord`] in the
//!   replicated state; the coordinator picks `s` above every prepare timestamp and replicates
//!   [`Command::Decide`], which applies its own writes and leaves a [`DecisionRecord`]; after
//!   commit wait each participant replicates [`Command::Resolve`], which applies the prepared
//!   writes at `s` (or drops them) and removes the record; last, [`Command::Forget`] drops the
//!   decision.
//!
//! This module holds the replicated half: the commands, the records they leave, and
//! [`apply`], a pure function of the records and the command. Applying is deterministic and
//! idempotent per transaction, so every replica (and a new leader recovering from its log)
//! reaches the same outcome: a `Decide` to commit that finds an abort decision already logged
//! is refused, an abort that finds a commit is a no-op, a `Resolve` without a prepare record
//! does nothing.
//!
//! Timestamps are assigned by the leader in log order and are strictly increasing per group,
//! except a `Resolve`'s, which is above the transaction's prepare timestamp; readers account
//! for that with the prepared records. So a replica that has applied an entry with timestamp
//! `t` (a commit, a prepare, or a [`Command::CloseTs`] an idle leader proposes) has every
//! write at or below `t` except those of transactions it holds prepared: its safe time is
//! `min(max applied timestamp, smallest prepare timestamp in doubt - 1)`.

pub mod lock_table;
pub mod reads;
pub mod snapshot;
pub mod steps;

use meridian_truetime::Timestamp;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use meridian_common::{GroupId, ServerId};

use crate::storage::engine::{Cf, Engine, WriteBatch};
use crate::storage::keys;
use crate::storage::mvcc;

pub use meridian_common::KeyRange;

/// What a hosted replica is: its group, range and peers. Persisted in the `Meta` CF.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaDescriptor {
    pub group: GroupId,
    pub range: KeyRange,
    pub peers: Vec<ServerId>,
    /// Bumped by every split of this group: a write proposed under an older generation is
    /// refused when it applies, since the locks and range it was checked against are gone.
    #[serde(default)]
    pub generation: u64,
}

impl ReplicaDescriptor {
    pub fn group_id(&self) -> GroupId {
        self.group
    }

    /// A descriptor sent by the placement driver or a peer (generation 0: a new replica).
    pub fn from_pb(d: meridian_proto::ReplicaDescriptor) -> ReplicaDescriptor {
        ReplicaDescriptor {
            group: GroupId(d.group_id),
            range: KeyRange::new(d.start, d.end),
            peers: d.replicas.into_iter().map(ServerId).collect(),
            generation: 0,
        }
    }

    /// The descriptor as the wire carries it.
    pub fn to_pb(&self) -> meridian_proto::ReplicaDescriptor {
        meridian_proto::ReplicaDescriptor {
            group_id: self.group.0,
            start: self.range.start.clone(),
            end: self.range.end.clone(),
            replicas: self.peers.iter().map(|p| p.0).collect(),
            bootstrap: false,
        }
    }
}

/// The first of `keys` that has a live version (not a tombstone) in `engine`, if any: an
/// insert's condition, checked by the leader while the keys are exclusively locked, so nothing
/// can commit a version of them between the check and the insert's own commit.
pub fn first_live_key(
    engine: &dyn Engine,
    keys: &[Vec<u8>],
) -> Result<Option<Vec<u8>>, crate::storage::engine::EngineError> {
    for key in keys {
        if let Some(version) = mvcc::get(engine, key, Timestamp::MAX)? {
            if version.value.is_some() {
                return Ok(Some(key.clone()));
            }
        }
    }
    Ok(None)
}

/// One mutation of a commit: a value, or `None` for a deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A transaction's identity and wound-wait priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    pub id: u64,
    /// Smaller = older = wins conflicts.
    pub priority: u64,
}

impl TxnMeta {
    pub fn lock_priority(&self) -> lock_table::Priority {
        lock_table::Priority {
            ts: self.priority,
            txn: self.id,
        }
    }
}

/// What a participant logged when it prepared: enough for any later leader to restore the
/// transaction's locks, block safe time below its prepare timestamp, ask the coordinator for
/// the outcome and apply it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedRecord {
    pub txn: TxnMeta,
    pub prepare_ts: u64,
    pub coordinator: u64,
    pub participants: Vec<u64>,
    /// The spans the transaction read here (shared locks to restore).
    pub reads: Vec<KeyRange>,
    pub mutations: Vec<Mutation>,
}

/// What a coordinator logged when it decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub txn: u64,
    pub commit: bool,
    /// The commit timestamp (0 for an abort).
    pub ts: u64,
    /// Participants still to be told (the coordinator excluded).
    pub participants: Vec<u64>,
    /// Wall-clock ms when decided; abort decisions are forgotten after a while.
    pub decided_at_ms: u64,
}

/// The transaction records of one replica, mirrored in memory from the `Meta` CF.
#[derive(Clone, Debug, Default)]
pub struct TxnRecords {
    pub prepared: BTreeMap<u64, PreparedRecord>,
    pub decisions: BTreeMap<u64, DecisionRecord>,
}

impl TxnRecords {
    /// Loads `group`'s records from the engine.
    pub fn load(engine: &dyn Engine, group: GroupId) -> Result<TxnRecords, String> {
        let mut records = TxnRecords::default();
        let (start, end) = keys::prepared_range(group);
        for item in engine.scan(Cf::Meta, &start, Some(&end)) {
            let (_, v) = item.map_err(|e| e.to_string())?;
            let r: PreparedRecord = bincode::deserialize(&v)
                .map_err(|e| format!("corrupt prepare record in {group}: {e}"))?;
            records.prepared.insert(r.txn.id, r);
        }
        let (start, end) = keys::decisions_range(group);
        for item in engine.scan(Cf::Meta, &start, Some(&end)) {
            let (_, v) = item.map_err(|e| e.to_string())?;
            let r: DecisionRecord = bincode::deserialize(&v)
                .map_err(|e| format!("corrupt decision record in {group}: {e}"))?;
            records.decisions.insert(r.txn, r);
        }
        Ok(records)
    }

    /// The smallest prepare timestamp of a transaction with writes still in doubt
    /// (`u64::MAX` when nothing is): reads below it are safe, the `t_safe_tm` of DESIGN.md.
    pub fn min_prepare_ts(&self) -> u64 {
        self.prepared
            .values()
            .filter(|r| !r.mutations.is_empty())
            .map(|r| r.prepare_ts)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// A group's leader lease, as last applied (the `Lease` command). A leader serves only while it
/// holds the lease: `holder` is itself, `term` its current term, `TT.before(expiration)`, and
/// `TT.after(start_after)` (the previous lease's expiration, so two leases never overlap in
/// true time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The server holding it (0 = nobody: released).
    pub holder: u64,
    pub term: u64,
    pub expiration: u64,
    pub start_after: u64,
}

/// A command replicated through a tablet's Raft log. `proposal` identifies the proposer's
/// waiter on the leader that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A single-group commit: apply `mutations` at `ts`.
    Commit {
        proposal: u64,
        generation: u64,
        ts: u64,
        mutations: Vec<Mutation>,
    },
    /// Two-phase commit, participant: the transaction is prepared at `record.prepare_ts`.
    Prepare {
        proposal: u64,
        generation: u64,
        record: PreparedRecord,
    },
    /// Two-phase commit, coordinator: the outcome. A commit applies the coordinator's own
    /// `mutations` at `ts`.
    Decide {
        proposal: u64,
        generation: u64,
        txn: u64,
        commit: bool,
        ts: u64,
        mutations: Vec<Mutation>,
        participants: Vec<u64>,
        decided_at_ms: u64,
    },
    /// Two-phase commit, participant: apply (or drop) the prepared writes.
    Resolve {
        proposal: u64,
        txn: u64,
        commit: bool,
        ts: u64,
    },
    /// Two-phase commit, coordinator: drop the decision record.
    Forget { proposal: u64, txn: u64 },
    /// No write: the leader promises every later entry a timestamp above `ts`, so replicas can
    /// serve snapshot reads up to `ts` on a group with no traffic.
    CloseTs { proposal: u64, ts: u64 },
    /// The leader lease changes hands or is extended (or released: holder 0).
    Lease { proposal: u64, lease: Lease },
    /// Split the range at `at`: this group keeps the left part, new group `new_group` (same
    /// replicas) takes the right.
    Split {
        proposal: u64,
        at: Vec<u8>,
        new_group: GroupId,
        /// The proposing leader's timestamp floor (assigned and promised to readers): the new
        /// group's timestamps start above it.
        floor: u64,
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

    pub fn proposal(&self) -> u64 {
        match self {
            Command::Commit { proposal, .. }
            | Command::Prepare { proposal, .. }
            | Command::Decide { proposal, .. }
            | Command::Resolve { proposal, .. }
            | Command::Forget { proposal, .. }
            | Command::CloseTs { proposal, .. }
            | Command::Split { proposal, .. }
            | Command::Lease { proposal, .. } => *proposal,
        }
    }
}

/// What applying a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Writes applied at `ts` (a commit, a commit decision, a commit resolution).
    Committed { ts: u64 },
    /// A prepare record was written.
    Prepared { ts: u64 },
    /// The transaction is aborted here (an abort decision or resolution, or a commit decision
    /// refused because an abort was already logged).
    Aborted,
    /// Nothing more to do (a repeated resolution or prepare, a forget).
    Noop,
    /// A closed timestamp.
    Closed { ts: u64 },
    /// A new lease (the caller keeps it with the replica's state).
    Lease(Lease),
    /// The range was split: this replica is now `left`, and `right` is a new replica here.
    Split {
        left: ReplicaDescriptor,
        right: ReplicaDescriptor,
    },
    /// The command was refused on every replica alike (a write outside the range after a
    /// split, a split that cannot happen now).
    Refused(String),
}

/// Adds the effects of `command` to `batch` and `records`. Deterministic: every replica applying
/// the same log reaches the same state.
///
/// Writes are checked against the range at apply time, not only when proposed: a commit
/// proposed before a split but ordered after it in the log would otherwise write keys the
/// group no longer owns.
pub fn apply(
    desc: &ReplicaDescriptor,
    records: &mut TxnRecords,
    batch: &mut WriteBatch,
    command: &Command,
) -> Applied {
    let group = desc.group_id();
    let stale = |generation: &u64| *generation != desc.generation;
    match command {
        Command::Commit { generation, .. }
        | Command::Prepare { generation, .. }
        | Command::Decide {
            generation,
            commit: true,
            ..
        } if stale(generation) => {
            return Applied::Refused("the tablet's range changed (split)".into())
        }
        _ => {}
    }
    // Belt and braces: the generation already covers writes proposed before a split.
    let outside = |mutations: &[Mutation]| !all_in_range(&desc.range, mutations);
    match command {
        Command::Commit { mutations, .. }
        | Command::Prepare {
            record: PreparedRecord { mutations, .. },
            ..
        }
        | Command::Decide { mutations, .. }
            if outside(mutations) =>
        {
            return Applied::Refused("the tablet's range changed (split)".into())
        }
        Command::Prepare { record, .. }
            if !record
                .reads
                .iter()
                .all(|r| desc.range.covers(&r.start, &r.end)) =>
        {
            return Applied::Refused("the tablet's range changed (split)".into())
        }
        _ => {}
    }
    match command {
        Command::Split { at, new_group, .. } => split(desc, records, batch, at, *new_group),
        Command::Commit { ts, mutations, .. } => {
            write_mutations(batch, mutations, *ts);
            Applied::Committed { ts: *ts }
        }
        Command::Prepare { record, .. } => {
            if records.prepared.contains_key(&record.txn.id) {
                return Applied::Noop;
            }
            let ts = record.prepare_ts;
            batch.put(
                Cf::Meta,
                keys::prepared(group, record.txn.id),
                bincode::serialize(record).unwrap_or_default(),
            );
            records.prepared.insert(record.txn.id, record.clone());
            Applied::Prepared { ts }
        }
        Command::Decide {
            txn,
            commit,
            ts,
            mutations,
            participants,
            decided_at_ms,
            ..
        } => {
            if let Some(existing) = records.decisions.get(txn) {
                return if existing.commit {
                    Applied::Committed { ts: existing.ts }
                } else {
                    Applied::Aborted
                };
            }
            let record = DecisionRecord {
                txn: *txn,
                commit: *commit,
                ts: if *commit { *ts } else { 0 },
                participants: participants.clone(),
                decided_at_ms: *decided_at_ms,
            };
            batch.put(
                Cf::Meta,
                keys::decision(group, *txn),
                bincode::serialize(&record).unwrap_or_default(),
            );
            records.decisions.insert(*txn, record);
            if *commit {
                write_mutations(batch, mutations, *ts);
                Applied::Committed { ts: *ts }
            } else {
                Applied::Aborted
            }
        }
        Command::Resolve {
            txn, commit, ts, ..
        } => {
            let Some(record) = records.prepared.remove(txn) else {
                return Applied::Noop;
            };
            batch.delete(Cf::Meta, keys::prepared(group, *txn));
            if *commit {
                write_mutations(batch, &record.mutations, *ts);
                Applied::Committed { ts: *ts }
            } else {
                Applied::Aborted
            }
        }
        Command::CloseTs { ts, .. } => Applied::Closed { ts: *ts },
        Command::Lease { lease, .. } => {
            batch.put(
                Cf::Raft,
                keys::lease(group),
                bincode::serialize(lease).unwrap_or_default(),
            );
            Applied::Lease(lease.clone())
        }
        Command::Forget { txn, .. } => {
            if records.decisions.remove(txn).is_none() {
                return Applied::Noop;
            }
            batch.delete(Cf::Meta, keys::decision(group, *txn));
            Applied::Noop
        }
    }
}

fn split(
    desc: &ReplicaDescriptor,
    records: &TxnRecords,
    batch: &mut WriteBatch,
    at: &[u8],
    new_group: GroupId,
) -> Applied {
    if desc.range.end.as_slice() == at {
        return Applied::Noop; // already split here
    }
    if at <= desc.range.start.as_slice() || !desc.range.contains(at) {
        return Applied::Refused("the split key is not inside the tablet's range".into());
    }
    if new_group == desc.group {
        return Applied::Refused("a split needs a new group id".into());
    }
    let right_range = KeyRange {
        start: at.to_vec(),
        end: desc.range.end.clone(),
    };
    let in_doubt = records.prepared.values().any(|r| {
        r.mutations.iter().any(|m| right_range.contains(&m.key))
            || r.reads.iter().any(|s| ranges_overlap(s, &right_range))
    });
    if in_doubt {
        return Applied::Refused(
            "a transaction prepared in the part being split off is still in doubt".into(),
        );
    }
    let left = ReplicaDescriptor {
        group: desc.group,
        range: KeyRange {
            start: desc.range.start.clone(),
            end: at.to_vec(),
        },
        peers: desc.peers.clone(),
        generation: desc.generation + 1,
    };
    let right = ReplicaDescriptor {
        group: new_group,
        range: right_range,
        peers: desc.peers.clone(),
        generation: 0,
    };
    for d in [&left, &right] {
        batch.put(
            Cf::Meta,
            keys::replica(d.group_id()),
            bincode::serialize(d).unwrap_or_default(),
        );
    }
    Applied::Split { left, right }
}

/// True if two ranges (empty end = unbounded) share a key.
pub fn ranges_overlap(a: &KeyRange, b: &KeyRange) -> bool {
    let a_before_b_ends = b.end.is_empty() || a.start < b.end;
    let b_before_a_ends = a.end.is_empty() || b.start < a.end;
    a_before_b_ends && b_before_a_ends
}

fn write_mutations(batch: &mut WriteBatch, mutations: &[Mutation], ts: u64) {
    for m in mutations {
        mvcc::put_version(batch, &m.key, Timestamp(ts), m.value.as_deref());
    }
}

/// True if every mutation's key lies in `range`.
pub fn all_in_range(range: &KeyRange, mutations: &[Mutation]) -> bool {
    mutations.iter().all(|m| range.contains(&m.key))
}

#[cfg(test)]
mod scenario;
