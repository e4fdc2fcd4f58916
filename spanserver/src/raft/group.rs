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
//! The in-memory `MemStorage` is raft-rs's view of the log; the `Raft` column family is the
//! durable copy it is rebuilt from by [`RaftGroup::open`].

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

use super::keys;
use super::{GroupId, ServerId};
use crate::storage::engine::{Cf, Engine, EngineError, WriteBatch};

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
    node: RawNode<MemStorage>,
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
        let voter_ids: Vec<u64> = voters.iter().map(|s| s.0).collect();
        let storage = MemStorage::new_with_conf_state(ConfState::from((voter_ids, vec![])));

        let mut entries = Vec::new();
        for item in engine.scan(
            Cf::Raft,
            &keys::entry(group, 0),
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
        {
            let mut core = storage.wl();
            core.append(&entries)?;
            core.set_hardstate(hard_state.clone());
        }
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
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        config.validate()?;
        let logger = logger.new(slog::o!("group" => group.0));
        let node = RawNode::new(&config, storage, &logger)?;
        Ok(RaftGroup {
            id: group,
            node,
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
        if ready.ss().is_some() {
            self.term_start_index = if self.node.raft.state == StateRole::Leader {
                Some(self.node.raft.raft_log.last_index())
            } else {
                None
            };
        }
        out.messages = ready.take_messages();
        if !ready.snapshot().is_empty() {
            // Snapshots are never produced: the log is never compacted (see the module doc).
            return Err(GroupError::Corrupt {
                group: self.id,
                reason: "received a snapshot, which this version cannot install".into(),
            });
        }
        out.committed = ready.take_committed_entries();
        let entries = ready.entries();
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // Entries after the new tail were overwritten by a new leader: remove them too.
            let old_last =
                raft::Storage::last_index(self.node.store()).map_err(GroupError::Raft)?;
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
            self.node.mut_store().wl().append(entries)?;
        }
        if let Some(hs) = ready.hs() {
            batch.put(
                Cf::Raft,
                keys::hard_state(self.id),
                hs.write_to_bytes().map_err(|e| self.corrupt(e))?,
            );
            self.node.mut_store().wl().set_hardstate(hs.clone());
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
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut store = self.node.mut_store().wl();
            store.mut_hard_state().set_commit(commit);
            let hs = store.hard_state().clone();
            drop(store);
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

#[cfg(test)]
mod scenario;
