//! A tablet replica's state machine as one value, for Raft snapshots: what a replica too far
//! behind (or new to the group) installs instead of replaying the log.
//!
//! It holds every MVCC version in the range (stale reads at any timestamp above the GC horizon
//! stay correct on the new replica), the transaction records, the lease, the descriptor and the
//! largest applied timestamp. Installing replaces the replica's state for its range entirely.
//! The snapshot is built in memory; ranges are expected to stay small enough for that (splits
//! keep them so).

use serde::{Deserialize, Serialize};

use super::{DecisionRecord, KeyRange, Lease, PreparedRecord, ReplicaDescriptor, TxnRecords};
use crate::storage::engine::{Cf, Engine, KvPair, WriteBatch};
use crate::storage::keys;
use crate::storage::mvcc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotData {
    pub desc: ReplicaDescriptor,
    pub max_applied_ts: u64,
    pub lease: Lease,
    pub prepared: Vec<PreparedRecord>,
    pub decisions: Vec<DecisionRecord>,
    /// Raw `Data` column family pairs of the range: every version of every key.
    pub data: Vec<KvPair>,
}

/// Every raw `Data` pair whose user key lies in `range`.
fn data_pairs(engine: &dyn Engine, range: &KeyRange) -> Result<Vec<KvPair>, String> {
    let start = mvcc::encode_user_key(&range.start);
    let end = (!range.end.is_empty()).then(|| mvcc::encode_user_key(&range.end));
    engine
        .scan(Cf::Data, &start, end.as_deref())
        .map(|item| item.map_err(|e| e.to_string()))
        .collect()
}

/// The state machine of the replica described by `desc`, encoded.
pub fn build(
    engine: &dyn Engine,
    desc: &ReplicaDescriptor,
    records: &TxnRecords,
    lease: &Lease,
    max_applied_ts: u64,
) -> Result<Vec<u8>, String> {
    let snapshot = SnapshotData {
        desc: desc.clone(),
        max_applied_ts,
        lease: lease.clone(),
        prepared: records.prepared.values().cloned().collect(),
        decisions: records.decisions.values().cloned().collect(),
        data: data_pairs(engine, &desc.range)?,
    };
    bincode::serialize(&snapshot).map_err(|e| e.to_string())
}

/// Adds to `batch` everything that replaces this server's state for the snapshot's group and
/// range with the snapshot's, up to `index`; returns the snapshot without its data.
pub fn install(
    engine: &dyn Engine,
    bytes: &[u8],
    index: u64,
    batch: &mut WriteBatch,
) -> Result<SnapshotData, String> {
    let mut snapshot: SnapshotData =
        bincode::deserialize(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
    let group = snapshot.desc.group_id();
    for (key, _) in data_pairs(engine, &snapshot.desc.range)? {
        batch.delete(Cf::Data, key);
    }
    for (key, value) in std::mem::take(&mut snapshot.data) {
        batch.put(Cf::Data, key, value);
    }
    for (start, end) in [keys::prepared_range(group), keys::decisions_range(group)] {
        batch.delete_range(Cf::Meta, start, end);
    }
    for r in &snapshot.prepared {
        batch.put(
            Cf::Meta,
            keys::prepared(group, r.txn.id),
            bincode::serialize(r).map_err(|e| e.to_string())?,
        );
    }
    for d in &snapshot.decisions {
        batch.put(
            Cf::Meta,
            keys::decision(group, d.txn),
            bincode::serialize(d).map_err(|e| e.to_string())?,
        );
    }
    batch.put(
        Cf::Raft,
        keys::lease(group),
        bincode::serialize(&snapshot.lease).map_err(|e| e.to_string())?,
    );
    let mut applied = index.to_be_bytes().to_vec();
    applied.extend_from_slice(&snapshot.max_applied_ts.to_be_bytes());
    batch.put(Cf::Raft, keys::applied_index(group), applied);
    batch.put(
        Cf::Meta,
        keys::replica(group),
        bincode::serialize(&snapshot.desc).map_err(|e| e.to_string())?,
    );
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::mem::MemEngine;
    use meridian_truetime::Timestamp;

    #[test]
    fn a_snapshot_replaces_the_range_and_nothing_else() {
        let source = MemEngine::default();
        let mut b = WriteBatch::new();
        mvcc::put_version(&mut b, b"b", Timestamp(5), Some(b"old"));
        mvcc::put_version(&mut b, b"b", Timestamp(9), Some(b"new"));
        mvcc::put_version(&mut b, b"z", Timestamp(9), Some(b"outside"));
        source.write(b, false).expect("write");
        let desc = ReplicaDescriptor {
            group: meridian_common::GroupId(7),
            range: KeyRange {
                start: b"a".to_vec(),
                end: b"m".to_vec(),
            },
            peers: [1, 2, 3].map(meridian_common::ServerId).to_vec(),
            generation: 0,
        };
        let bytes =
            build(&source, &desc, &TxnRecords::default(), &Lease::default(), 9).expect("build");

        let target = MemEngine::default();
        let mut b = WriteBatch::new();
        mvcc::put_version(&mut b, b"c", Timestamp(3), Some(b"stale"));
        mvcc::put_version(&mut b, b"y", Timestamp(3), Some(b"other range"));
        target.write(b, false).expect("write");
        let mut b = WriteBatch::new();
        let installed = install(&target, &bytes, 42, &mut b).expect("install");
        target.write(b, false).expect("write");
        assert_eq!(installed.desc, desc);
        let read = |k: &[u8], ts| {
            mvcc::get(&target, k, Timestamp(ts))
                .expect("get")
                .and_then(|v| v.value)
        };
        assert_eq!(
            read(b"b", 6),
            Some(b"old".to_vec()),
            "old versions travel too"
        );
        assert_eq!(read(b"b", 10), Some(b"new".to_vec()));
        assert_eq!(read(b"c", 10), None, "stale data in the range is gone");
        assert_eq!(read(b"y", 10), Some(b"other range".to_vec()));
        assert_eq!(
            read(b"z", 10),
            None,
            "the source's other ranges do not travel"
        );
    }
}
