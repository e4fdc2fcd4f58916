//! A synchronous, deterministic Raft group: raft-rs's `RawNode` plus the bookkeeping Meridian
//! needs, with no I/O of its own.
//!
//! The caller drives it in two phases per round:
//!
//! 1. [`RaftGroup::start_ready`] takes raft-rs's `Ready`, adds the new log entries and hard
//!    state to a [`WriteBatch`] the caller will make durable, and returns the messages that may
//!    leave before that write (the leader's appends) and the entries already committed.
//! 2. After the batch is durable, [`RaftGroup::finish_ready`] returns the messages that
//!    acknowledge persisted state and any newly committed entries.
//!
//! [`GroupStorage`] is raft-rs's view of the log; the `Raft` column family is the durable copy
//! it is rebuilt from by [`RaftGroup::open`]. The log is compacted once applied
//! ([`RaftGroup::compact`]); a replica that needs compacted entries gets a snapshot, whose
//! state-machine part the driver builds and installs (this module handles the Raft part:
//! [`ReadyOutput::snapshot`], [`RaftGroup::offer_snapshot`]). Membership changes go through
//! joint consensus ([`RaftGroup::propose_change_members`], [`RaftGroup::apply_conf_change`]).

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, HardState, Message, Snapshot,
};
use raft::{Config, RawNode, SnapshotStatus, StateRole};

use super::storage::GroupStorage;
use super::{GroupId, ServerId};
use crate::storage::engine::{Cf, Engine, EngineError, WriteBatch};
use crate::storage::keys;

/// Raft timing, in ticks of [`TICK_INTERVAL`].
pub const ELECTION_TICKS: usize = 10;
/// A leader heartbeats every this many ticks.
pub const HEARTBEAT_TICKS: usize = 1;
/// How often the driver ticks every group.
pub const TICK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Why a group could not be opened or advanced.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("corrupt raft state for {group}: {reason}")]
    Corrupt { group: GroupId, reason: String },
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

/// What one phase of a ready round produced.
#[derive(Default)]
pub struct ReadyOutput {
    /// Messages to send to peers.
    pub messages: Vec<Message>,
    /// Entries committed by a quorum, to apply in order.
    pub committed: Vec<Entry>,
    /// A snapshot from the leader, already installed in the log state (and its Raft part in
    /// the batch): the caller replaces the state machine with its data in the same batch.
    pub snapshot: Option<Snapshot>,
    /// Phase 1's batch holds something Raft's safety rests on (new entries, a term or vote, a
    /// snapshot) and must be synced before its persisted messages go out. A batch that only
    /// moves the commit index need not be: a lower commit index is learned again from the
    /// leader, and RocksDB's write-ahead log keeps unsynced writes in order, so an applied
    /// index written later is never recovered without it.
    pub needs_sync: bool,
}

/// Election timing of a group, in ticks.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Randomized election timeouts are drawn from `[min, max)`; `max = min + 1` makes them
    /// deterministic (scenario tests).
    pub min_election_ticks: usize,
    pub max_election_ticks: usize,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: HEARTBEAT_TICKS,
            min_election_ticks: ELECTION_TICKS,
            max_election_ticks: 2 * ELECTION_TICKS,
        }
    }
}

/// One replica of one Raft group.
pub struct RaftGroup {
    id: GroupId,
    node: RawNode<GroupStorage>,
    storage: GroupStorage,
    /// A taken `Ready` waiting for its batch to become durable.
    in_flight: Option<raft::Ready>,
    /// While leader: the index of the first entry of this leader's term. The leader serves only
    /// once everything up to it is applied.
    term_start_index: Option<u64>,
}

impl RaftGroup {
    /// Opens the replica of `group` on `server`, rebuilding raft-rs's state from `engine`.
    /// `voters` is the group's initial configuration, the same on every replica.
    pub fn open(
        group: GroupId,
        server: ServerId,
        voters: &[ServerId],
        engine: &dyn Engine,
        logger: &slog::Logger,
    ) -> Result<RaftGroup, GroupError> {
        Self::open_with_timing(group, server, voters, engine, logger, Timing::default())
    }

    /// [`RaftGroup::open`] with explicit election timing.
    pub fn open_with_timing(
        group: GroupId,
        server: ServerId,
        voters: &[ServerId],
        engine: &dyn Engine,
        logger: &slog::Logger,
        timing: Timing,
    ) -> Result<RaftGroup, GroupError> {
        let corrupt = |reason: String| GroupError::Corrupt { group, reason };
        let truncated = match engine.get(Cf::Raft, &keys::truncated(group))? {
            Some(b) if b.len() == 16 => (
                keys::decode_u64(&b[..8]).unwrap_or(0),
                keys::decode_u64(&b[8..]).unwrap_or(0),
            ),
            Some(_) => return Err(corrupt("truncation point".into())),
            None => (0, 0),
        };
        let conf_state = match engine.get(Cf::Raft, &keys::conf_state(group))? {
            Some(bytes) => {
                ConfState::parse_from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?
            }
            None => ConfState::from((voters.iter().map(|s| s.0).collect::<Vec<_>>(), vec![])),
        };
        let mut entries = Vec::new();
        for item in engine.scan(
            Cf::Raft,
            &keys::entry(group, truncated.0 + 1),
            Some(&keys::entries_end(group)),
        ) {
            let (_, value) = item?;
            let entry = Entry::parse_from_bytes(&value).map_err(|e| corrupt(e.to_string()))?;
            entries.push(entry);
        }
        let hard_state = match engine.get(Cf::Raft, &keys::hard_state(group))? {
            Some(bytes) => {
                HardState::parse_from_bytes(&bytes).map_err(|e| corrupt(e.to_string()))?
            }
            None => HardState::default(),
        };
        let applied = match engine.get(Cf::Raft, &keys::applied_index(group))? {
            Some(bytes) => bytes
                .get(..8)
                .and_then(keys::decode_u64)
                .ok_or_else(|| corrupt("applied index".into()))?,
            None => 0,
        };
        let storage = GroupStorage::new(hard_state.clone(), conf_state, truncated, entries)
            .map_err(corrupt)?;
        if applied > hard_state.commit {
            return Err(corrupt(format!(
                "applied {applied} > commit {}",
                hard_state.commit
            )));
        }

        let config = Config {
            id: server.0,
            election_tick: timing.election_ticks,
            heartbeat_tick: timing.heartbeat_ticks,
            min_election_tick: timing.min_election_ticks,
            max_election_tick: timing.max_election_ticks,
            applied: applied.max(truncated.0),
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let logger = logger.new(slog::o!("group" => group.0));
        let node = RawNode::new(&config, storage.clone(), &logger)?;
        Ok(RaftGroup {
            id: group,
            node,
            storage,
            in_flight: None,
            term_start_index: None,
        })
    }

    pub fn id(&self) -> GroupId {
        self.id
    }

    /// Feeds a message from a peer.
    pub fn step(&mut self, msg: Message) -> Result<(), raft::Error> {
        self.node.step(msg)
    }

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Starts an election now (tests and bootstrap).
    pub fn campaign(&mut self) -> Result<(), raft::Error> {
        self.node.campaign()
    }

    /// Proposes `data` and returns the log index it was appended at. Fails unless leader.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, raft::Error> {
        if self.node.raft.state != StateRole::Leader {
            return Err(raft::Error::ProposalDropped);
        }
        self.node.propose(vec![], data)?;
        Ok(self.node.raft.raft_log.last_index())
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this replica knows of, if any.
    pub fn leader(&self) -> Option<ServerId> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(ServerId(id)),
        }
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The index of the first entry of this leader's term, while leader.
    pub fn term_start_index(&self) -> Option<u64> {
        self.term_start_index
    }

    pub fn has_ready(&self) -> bool {
        self.in_flight.is_none() && self.node.has_ready()
    }

    /// Phase 1: takes the ready state. New entries and the hard state go into `batch`, which the
    /// caller must make durable before calling [`RaftGroup::finish_ready`].
    pub fn start_ready(&mut self, batch: &mut WriteBatch) -> Result<ReadyOutput, GroupError> {
        let mut out = ReadyOutput::default();
        if self.in_flight.is_some() || !self.node.has_ready() {
            return Ok(out);
        }
        let mut ready = self.node.ready();
        // raft-rs's rule: entries, a snapshot, or a term or vote change.
        out.needs_sync = ready.must_sync();
        if ready.ss().is_some() {
            self.term_start_index = if self.node.raft.state == StateRole::Leader {
                Some(self.node.raft.raft_log.last_index())
            } else {
                None
            };
        }
        out.messages = ready.take_messages();
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let meta = snapshot.get_metadata();
            // The log restarts after the snapshot: every older entry goes.
            batch.delete_range(
                Cf::Raft,
                keys::entry(self.id, 0),
                keys::entries_end(self.id),
            );
            batch.put(
                Cf::Raft,
                keys::truncated(self.id),
                encode_pair(meta.index, meta.term),
            );
            batch.put(
                Cf::Raft,
                keys::conf_state(self.id),
                meta.get_conf_state()
                    .write_to_bytes()
                    .map_err(|e| self.corrupt(e))?,
            );
            self.storage.install_snapshot(&snapshot);
            out.snapshot = Some(snapshot);
        }
        out.committed = ready.take_committed_entries();
        let entries = ready.entries();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // Entries after the new tail were overwritten by a new leader: remove them too.
            let old_last = self.storage.last_index();
            for e in entries.iter() {
                batch.put(
                    Cf::Raft,
                    keys::entry(self.id, e.index),
                    e.write_to_bytes().map_err(|e| self.corrupt(e))?,
                );
            }
            if old_last > last.index {
                batch.delete_range(
                    Cf::Raft,
                    keys::entry(self.id, last.index + 1),
                    keys::entries_end(self.id),
                );
            }
            debug_assert!(first.index <= last.index);
            self.storage.append(entries).map_err(|e| self.corrupt(e))?;
        }
        if let Some(hs) = ready.hs() {
            batch.put(
                Cf::Raft,
                keys::hard_state(self.id),
                hs.write_to_bytes().map_err(|e| self.corrupt(e))?,
            );
            self.storage.set_hard_state(hs.clone());
        }
        self.in_flight = Some(ready);
        Ok(out)
    }

    /// Phase 2, after phase 1's batch is durable: returns the messages acknowledging it and any
    /// newly committed entries. A changed commit index goes into `apply_batch` (it need not be
    /// synced: a lower commit index is recovered from the leader).
    pub fn finish_ready(
        &mut self,
        apply_batch: &mut WriteBatch,
    ) -> Result<ReadyOutput, GroupError> {
        let mut out = ReadyOutput::default();
        let Some(mut ready) = self.in_flight.take() else {
            return Ok(out);
        };
        out.messages = ready.take_persisted_messages();
        // Not `advance`: that would count the ready's committed entries as applied before the caller
        // applies them, and raft-rs acts on the applied index (leaving a joint configuration).
        let mut light = self.node.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.storage.set_commit(commit);
            let hs = self.storage.hard_state();
            apply_batch.put(
                Cf::Raft,
                keys::hard_state(self.id),
                hs.write_to_bytes().map_err(|e| self.corrupt(e))?,
            );
        }
        out.messages.extend(light.take_messages());
        out.committed = light.take_committed_entries();
        Ok(out)
    }

    /// Tells raft-rs how a snapshot transfer to replica `to` ended: once delivered, the leader
    /// probes the replica; after a failure it sends another snapshot.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(to, status);
    }

    /// Compacts the log up to and including `index` (applied), in memory and in `batch`.
    pub fn compact(&mut self, index: u64, batch: &mut WriteBatch) -> Result<(), GroupError> {
        let applied = self.node.raft.raft_log.applied;
        if index > applied || index <= self.storage.truncated().0 {
            return Ok(());
        }
        let Some(term) = self.storage.term_of(index) else {
            return Ok(());
        };
        self.storage.compact(index).map_err(|e| self.corrupt(e))?;
        batch.delete_range(
            Cf::Raft,
            keys::entry(self.id, 0),
            keys::entry(self.id, index + 1),
        );
        batch.put(Cf::Raft, keys::truncated(self.id), encode_pair(index, term));
        Ok(())
    }

    /// The first index still in the log and the last applied one.
    pub fn log_span(&self) -> (u64, u64) {
        (self.storage.first_index(), self.node.raft.raft_log.applied)
    }

    /// True when raft-rs wants a snapshot to send that is not built yet.
    pub fn wants_snapshot(&self) -> bool {
        self.storage.snapshot_wanted()
    }

    /// Offers a snapshot of the state machine at the applied index, whose data is `data`;
    /// returns that index.
    pub fn offer_snapshot(&mut self, data: Vec<u8>) -> Result<u64, GroupError> {
        let applied = self.node.raft.raft_log.applied;
        let term = self
            .storage
            .term_of(applied)
            .ok_or_else(|| self.corrupt(format!("no term for applied index {applied}")))?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(self.storage.conf_state());
        self.storage.offer_snapshot(snapshot);
        Ok(applied)
    }

    /// Drops the snapshot offered last: raft-rs's next request for one is answered by a new.
    pub fn forget_snapshot(&mut self) {
        self.storage.forget_snapshot();
    }

    /// Proposes a membership change through joint consensus: `add` become voters, `remove`
    /// stop being voters; raft-rs leaves the joint configuration by itself once it applies.
    pub fn propose_change_members(
        &mut self,
        add: &[ServerId],
        remove: &[ServerId],
    ) -> Result<u64, raft::Error> {
        if self.node.raft.state != StateRole::Leader {
            return Err(raft::Error::ProposalDropped);
        }
        let mut changes = Vec::new();
        for (ids, kind) in [
            (add, ConfChangeType::AddNode),
            (remove, ConfChangeType::RemoveNode),
        ] {
            for id in ids {
                let mut c = ConfChangeSingle::default();
                c.set_change_type(kind);
                c.node_id = id.0;
                changes.push(c);
            }
        }
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        cc.set_changes(changes.into());
        self.node.propose_conf_change(vec![], cc)?;
        Ok(self.node.raft.raft_log.last_index())
    }

    /// Applies a committed configuration-change entry; persists and returns the new
    /// configuration.
    pub fn apply_conf_change(
        &mut self,
        entry: &Entry,
        batch: &mut WriteBatch,
    ) -> Result<ConfState, GroupError> {
        let cs = match entry.get_entry_type() {
            EntryType::EntryConfChangeV2 => {
                let cc =
                    ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| self.corrupt(e))?;
                self.node.apply_conf_change(&cc)?
            }
            EntryType::EntryConfChange => {
                let cc = ConfChange::parse_from_bytes(&entry.data).map_err(|e| self.corrupt(e))?;
                self.node.apply_conf_change(&cc)?
            }
            EntryType::EntryNormal => return Err(self.corrupt("not a configuration change")),
        };
        self.storage.set_conf_state(cs.clone());
        batch.put(
            Cf::Raft,
            keys::conf_state(self.id),
            cs.write_to_bytes().map_err(|e| self.corrupt(e))?,
        );
        Ok(cs)
    }

    /// The current configuration.
    pub fn conf_state(&self) -> ConfState {
        self.storage.conf_state()
    }

    /// Records that every entry returned so far has been applied.
    pub fn advance_apply(&mut self) {
        self.node.advance_apply();
    }

    /// The commit index raft-rs knows.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> GroupError {
        GroupError::Corrupt {
            group: self.id,
            reason: e.to_string(),
        }
    }
}

/// Every group created from scratch (a new table, the right half of a split) starts with its
/// log truncated at this index and term, as if a snapshot of its initial state had been
/// installed there. A replica added later has no state at all ([`write_uninitialized_state`]),
/// so it cannot catch up from the log alone: the leader sends it a snapshot, which carries
/// the data the group started with.
pub const INITIAL_INDEX: u64 = 5;

/// Writes the initial state of a replica of a group created from scratch with `voters`, whose
/// timestamps start above `max_applied_ts`. Every founding replica writes the same.
pub fn write_initial_state(
    group: GroupId,
    voters: &[ServerId],
    max_applied_ts: u64,
    batch: &mut WriteBatch,
) {
    let hs = HardState {
        term: INITIAL_INDEX,
        commit: INITIAL_INDEX,
        ..Default::default()
    };
    let cs = ConfState::from((voters.iter().map(|s| s.0).collect::<Vec<_>>(), vec![]));
    batch.put(
        Cf::Raft,
        keys::truncated(group),
        encode_pair(INITIAL_INDEX, INITIAL_INDEX),
    );
    batch.put(
        Cf::Raft,
        keys::hard_state(group),
        hs.write_to_bytes().unwrap_or_default(),
    );
    batch.put(
        Cf::Raft,
        keys::conf_state(group),
        cs.write_to_bytes().unwrap_or_default(),
    );
    batch.put(
        Cf::Raft,
        keys::applied_index(group),
        encode_pair(INITIAL_INDEX, max_applied_ts),
    );
}

/// Writes the state of a replica added to an existing group: no log and no configuration; it
/// waits for the leader's snapshot.
pub fn write_uninitialized_state(group: GroupId, batch: &mut WriteBatch) {
    batch.put(
        Cf::Raft,
        keys::conf_state(group),
        ConfState::default().write_to_bytes().unwrap_or_default(),
    );
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut v = a.to_be_bytes().to_vec();
    v.extend_from_slice(&b.to_be_bytes());
    v
}

#[cfg(test)]
mod scenario;
