//! raft-rs's view of one group's log: the in-memory copy of what the `Raft` column family holds
//! durably, plus the snapshot a leader hands to a replica too far behind for the log.
//!
//! The log keeps entries after `truncated` (the index and term of the last entry compacted away,
//! or of the last snapshot installed). Compaction drops entries the state machine has applied;
//! a replica that needs them gets a snapshot of the state machine instead.
//!
//! Snapshots are built off raft-rs's call stack: when raft-rs asks for one, [`GroupStorage`]
//! answers "temporarily unavailable" and raises a flag; the driver then builds the snapshot at
//! its applied index (between rounds, when the engine holds exactly that state) and hands it
//! in with [`GroupStorage::offer_snapshot`], and raft-rs's next request gets it.

use std::sync::Arc;

use parking_lot::RwLock;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The log state behind the lock.
#[derive(Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the last entry no longer in `entries`.
    truncated: (u64, u64),
    /// Entries `truncated.0 + 1 ..`.
    entries: Vec<Entry>,
    /// The newest snapshot built for a lagging replica.
    snapshot: Option<Snapshot>,
    /// raft-rs asked for a snapshot newer than `snapshot`.
    snapshot_wanted: bool,
}

impl Core {
    fn first_index(&self) -> u64 {
        self.truncated.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }
}

/// A cheaply cloneable handle on one group's log.
#[derive(Clone, Default)]
pub struct GroupStorage {
    core: Arc<RwLock<Core>>,
}

impl GroupStorage {
    /// The storage as recovered from disk.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        truncated: (u64, u64),
        entries: Vec<Entry>,
    ) -> Result<GroupStorage, String> {
        if let Some(first) = entries.first() {
            if first.index != truncated.0 + 1 {
                return Err(format!(
                    "log starts at {} after truncation at {}",
                    first.index, truncated.0
                ));
            }
        }
        if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return Err("log has a gap".into());
        }
        Ok(GroupStorage {
            core: Arc::new(RwLock::new(Core {
                hard_state,
                conf_state,
                truncated,
                entries,
                snapshot: None,
                snapshot_wanted: false,
            })),
        })
    }

    /// Appends `entries`, replacing any existing ones from the first new index on.
    pub fn append(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut core = self.core.write();
        if first.index < core.first_index() || first.index > core.last_index() + 1 {
            return Err(format!(
                "append at {} to a log of [{}, {}]",
                first.index,
                core.first_index(),
                core.last_index()
            ));
        }
        let keep = (first.index - core.first_index()) as usize;
        core.entries.truncate(keep);
        core.entries.extend_from_slice(entries);
        Ok(())
    }

    pub fn set_hard_state(&self, hs: HardState) {
        self.core.write().hard_state = hs;
    }

    pub fn hard_state(&self) -> HardState {
        self.core.read().hard_state.clone()
    }

    pub fn set_commit(&self, commit: u64) {
        self.core.write().hard_state.commit = commit;
    }

    pub fn set_conf_state(&self, cs: ConfState) {
        self.core.write().conf_state = cs;
    }

    pub fn conf_state(&self) -> ConfState {
        self.core.read().conf_state.clone()
    }

    pub fn first_index(&self) -> u64 {
        self.core.read().first_index()
    }

    pub fn last_index(&self) -> u64 {
        self.core.read().last_index()
    }

    /// The last compacted (or snapshotted) index and its term.
    pub fn truncated(&self) -> (u64, u64) {
        self.core.read().truncated
    }

    /// The term of entry `index`, if it is in the log or is the truncation point.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        let core = self.core.read();
        if index == core.truncated.0 {
            return Some(core.truncated.1);
        }
        if index < core.first_index() || index > core.last_index() {
            return None;
        }
        core.entries
            .get((index - core.first_index()) as usize)
            .map(|e| e.term)
    }

    /// Drops entries up to and including `index` (which must be applied).
    pub fn compact(&self, index: u64) -> Result<(), String> {
        let term = self
            .term_of(index)
            .ok_or_else(|| format!("cannot compact to {index}: not in the log"))?;
        let mut core = self.core.write();
        if index < core.first_index() {
            return Ok(());
        }
        let drop = ((index + 1 - core.first_index()) as usize).min(core.entries.len());
        core.entries.drain(..drop);
        core.truncated = (index, term);
        Ok(())
    }

    /// Installs a received snapshot's metadata: the log restarts after it.
    pub fn install_snapshot(&self, snapshot: &Snapshot) {
        let meta = snapshot.get_metadata();
        let mut core = self.core.write();
        core.entries.clear();
        core.truncated = (meta.index, meta.term);
        core.conf_state = meta.get_conf_state().clone();
        core.hard_state.commit = core.hard_state.commit.max(meta.index);
        core.hard_state.term = core.hard_state.term.max(meta.term);
    }

    /// True once raft-rs has asked for a snapshot that is not built yet.
    pub fn snapshot_wanted(&self) -> bool {
        self.core.read().snapshot_wanted
    }

    /// Drops the offered snapshot.
    pub fn forget_snapshot(&self) {
        self.core.write().snapshot = None;
    }

    /// Makes `snapshot` the one raft-rs gets when it next asks.
    pub fn offer_snapshot(&self, snapshot: Snapshot) {
        let mut core = self.core.write();
        core.snapshot = Some(snapshot);
        core.snapshot_wanted = false;
    }
}

fn store_error(e: StorageError) -> raft::Error {
    raft::Error::Store(e)
}

impl raft::Storage for GroupStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.read();
        Ok(RaftState::new(
            core.hard_state.clone(),
            core.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.read();
        if low < core.first_index() {
            return Err(store_error(StorageError::Compacted));
        }
        if high > core.last_index() + 1 || low > high {
            return Err(store_error(StorageError::Unavailable));
        }
        let offset = core.first_index();
        let mut out = Vec::new();
        let mut size = 0u64;
        let max = max_size.into().unwrap_or(u64::MAX);
        for e in &core.entries[(low - offset) as usize..(high - offset) as usize] {
            size += protobuf::Message::compute_size(e) as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core.read();
        if idx == core.truncated.0 {
            return Ok(core.truncated.1);
        }
        if idx < core.first_index() {
            return Err(store_error(StorageError::Compacted));
        }
        if idx > core.last_index() {
            return Err(store_error(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - core.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.read().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut core = self.core.write();
        if let Some(s) = &core.snapshot {
            if s.get_metadata().index >= request_index && s.get_metadata().index >= core.truncated.0
            {
                return Ok(s.clone());
            }
        }
        core.snapshot_wanted = true;
        Err(store_error(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_compact_and_snapshot_requests() {
        let s = GroupStorage::new(HardState::default(), ConfState::default(), (0, 0), vec![])
            .expect("new");
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
            .expect("append");
        s.append(&[entry(3, 3), entry(4, 3)]).expect("overwrite");
        assert_eq!((s.first_index(), s.last_index()), (1, 4));
        assert_eq!(s.term(3).ok(), Some(3));
        s.compact(2).expect("compact");
        assert_eq!(s.first_index(), 3);
        assert_eq!(
            s.term(2).ok(),
            Some(1),
            "the truncation point keeps its term"
        );
        assert!(s.term(1).is_err());
        assert!(s
            .entries(1, 3, None, GetEntriesContext::empty(false))
            .is_err());
        assert!(
            s.append(&[entry(1, 1)]).is_err(),
            "cannot append below the log"
        );
        assert!(s.append(&[entry(9, 3)]).is_err(), "cannot leave a gap");

        assert!(s.snapshot(4, 2).is_err());
        assert!(s.snapshot_wanted());
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 4;
        snap.mut_metadata().term = 3;
        s.offer_snapshot(snap);
        assert!(!s.snapshot_wanted());
        assert_eq!(
            s.snapshot(4, 2).map(|s| s.get_metadata().index).ok(),
            Some(4)
        );
    }
}
