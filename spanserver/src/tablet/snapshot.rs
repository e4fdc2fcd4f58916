//! A tablet replica's state machine as one value, for Raft snapshots: what a replica too far
//! behind (or new to the group) installs instead of replaying the log.
//!
//! It holds every MVCC version in the range (stale reads at any timestamp above the GC horizon
//! stay correct on the new replica), the transaction records, the lease, the descriptor and the
//! largest applied timestamp. Installing replaces the replica's state for its range entirely.
//!
//! A leader never builds the whole value. [`capture`] runs on the driver thread and costs what
//! the transaction records cost: it encodes the small part (the *header*, [`SnapshotData`] with
//! no data pairs), which raft-rs carries in its snapshot message, and takes an engine view
//! ([`EngineView`]) at the applied index. The data pairs are read from that view off the driver
//! thread, while the transport streams them ([`StreamedSnapshot`], chunks of about
//! [`CHUNK_BYTES`]), so the leader's other groups go on committing and no message nears the gRPC
//! size limit. The receiving server puts header and chunks back together ([`Assembler`]) and
//! installs the whole in one atomic batch ([`install`]), so a replica never holds half a
//! snapshot; [`MAX_SNAPSHOT_BYTES`] bounds what that batch may hold.

use serde::{Deserialize, Serialize};

use super::{DecisionRecord, KeyRange, Lease, PreparedRecord, ReplicaDescriptor, TxnRecords};
use crate::raft::transport::SnapshotSource;
use crate::storage::engine::{Cf, Engine, EngineView, WriteBatch};
use crate::storage::keys;
use crate::storage::mvcc;

/// About how many bytes of data pairs one streamed chunk holds (a single larger pair goes alone).
pub const CHUNK_BYTES: usize = 1 << 20;

/// The most data a replica accepts in one snapshot. Installation is one atomic write batch, held
/// in memory; ranges are split long before they reach this.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;

/// The small part of a snapshot: everything but the data pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotData {
    pub desc: ReplicaDescriptor,
    pub max_applied_ts: u64,
    pub lease: Lease,
    pub prepared: Vec<PreparedRecord>,
    pub decisions: Vec<DecisionRecord>,
}

// A whole snapshot, as `install` reads it, is the header's length (u32, big-endian), the header
// (bincode), then the range's raw `Data` pairs, each as key length (u32), key, value length
// (u32), value. A streamed chunk is a run of such pairs. Raw pairs are copied, never re-encoded,
// between the leader's engine and the receiver's write batch.

/// Appends one pair in the snapshot's pair encoding.
fn encode_pair(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    for part in [key, value] {
        // Keys and values are bounded far below 4 GiB (`meridian_common::limits`).
        buf.extend_from_slice(&(part.len() as u32).to_be_bytes());
        buf.extend_from_slice(part);
    }
}

/// The pairs of a run encoded by [`encode_pair`]; an error where the bytes end mid-pair.
fn decode_pairs(mut bytes: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), String>> {
    fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        let (part, rest) = (rest.len() >= len).then(|| rest.split_at(len))?;
        *bytes = rest;
        Some(part)
    }
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let pair = part(&mut bytes).zip(part(&mut bytes));
        if pair.is_none() {
            bytes = &[];
        }
        Some(pair.ok_or_else(|| "a snapshot's data ends mid-pair".to_string()))
    })
}

/// The `Data` column family bounds of `range`'s user keys.
fn data_bounds(range: &KeyRange) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = mvcc::encode_user_key(&range.start);
    let end = (!range.end.is_empty()).then(|| mvcc::encode_user_key(&range.end));
    (start, end)
}

/// Every raw `Data` key whose user key lies in `range`.
fn data_keys(engine: &dyn Engine, range: &KeyRange) -> Result<Vec<Vec<u8>>, String> {
    let (start, end) = data_bounds(range);
    engine
        .scan(Cf::Data, &start, end.as_deref())
        .map(|item| item.map(|(k, _)| k).map_err(|e| e.to_string()))
        .collect()
}

/// The state machine of the replica described by `desc`, as of now: its encoded header, and
/// the source its data streams from. Cheap: the data is not read here.
pub fn capture(
    engine: std::sync::Arc<dyn Engine>,
    desc: &ReplicaDescriptor,
    records: &TxnRecords,
    lease: &Lease,
    max_applied_ts: u64,
) -> Result<(Vec<u8>, StreamedSnapshot), String> {
    let header = SnapshotData {
        desc: desc.clone(),
        max_applied_ts,
        lease: lease.clone(),
        prepared: records.prepared.values().cloned().collect(),
        decisions: records.decisions.values().cloned().collect(),
    };
    let header = bincode::serialize(&header).map_err(|e| e.to_string())?;
    let source = StreamedSnapshot {
        view: engine.view(),
        range: desc.range.clone(),
    };
    Ok((header, source))
}

/// A captured snapshot's data pairs, read from an engine view.
pub struct StreamedSnapshot {
    view: Box<dyn EngineView>,
    range: KeyRange,
}

impl SnapshotSource for StreamedSnapshot {
    fn chunks(&self) -> Box<dyn Iterator<Item = Result<Vec<u8>, String>> + Send + '_> {
        let (start, end) = data_bounds(&self.range);
        let mut pairs = self.view.scan(Cf::Data, &start, end.as_deref());
        Box::new(std::iter::from_fn(move || {
            let mut chunk = Vec::new();
            while chunk.len() < CHUNK_BYTES {
                match pairs.next() {
                    Some(Ok((k, v))) => encode_pair(&mut chunk, &k, &v),
                    Some(Err(e)) => return Some(Err(e.to_string())),
                    None => break,
                }
            }
            (!chunk.is_empty()).then_some(Ok(chunk))
        }))
    }
}

/// Puts a streamed snapshot back together on the receiving server: the header from the Raft
/// message, then each chunk as it arrives. Refuses a malformed chunk, pairs outside the
/// header's range and more than [`MAX_SNAPSHOT_BYTES`] of data.
pub struct Assembler {
    whole: Vec<u8>,
    start: Vec<u8>,
    end: Option<Vec<u8>>,
    header_len: usize,
}

impl Assembler {
    /// Starts from an encoded header (the data of raft-rs's snapshot message).
    pub fn new(header: &[u8]) -> Result<Assembler, String> {
        let decoded: SnapshotData =
            bincode::deserialize(header).map_err(|e| format!("undecodable snapshot: {e}"))?;
        let (start, end) = data_bounds(&decoded.desc.range);
        let len = u32::try_from(header.len()).map_err(|_| "an oversized snapshot header")?;
        let mut whole = len.to_be_bytes().to_vec();
        whole.extend_from_slice(header);
        Ok(Assembler {
            header_len: whole.len(),
            whole,
            start,
            end,
        })
    }

    /// Adds one encoded chunk.
    pub fn add(&mut self, chunk: &[u8]) -> Result<(), String> {
        if self.whole.len() - self.header_len + chunk.len() > MAX_SNAPSHOT_BYTES {
            return Err(format!(
                "the snapshot exceeds {MAX_SNAPSHOT_BYTES} bytes of data"
            ));
        }
        for pair in decode_pairs(chunk) {
            let (key, _) = pair?;
            let inside =
                key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end);
            if !inside {
                return Err("a snapshot chunk holds a key outside the tablet's range".into());
            }
        }
        self.whole.extend_from_slice(chunk);
        Ok(())
    }

    /// The whole snapshot, as [`install`] reads it.
    pub fn finish(self) -> Vec<u8> {
        self.whole
    }
}

/// Splits a whole snapshot into its header and its run of pairs.
fn split(bytes: &[u8]) -> Result<(SnapshotData, &[u8]), String> {
    let undecodable = || "undecodable snapshot: too short".to_string();
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(undecodable)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(undecodable());
    }
    let (header, pairs) = rest.split_at(len);
    let header = bincode::deserialize(header).map_err(|e| format!("undecodable snapshot: {e}"))?;
    Ok((header, pairs))
}

/// Adds to `batch` everything that replaces this server's state for the snapshot's group and
/// range with the snapshot's, up to `index`; returns the snapshot's header.
pub fn install(
    engine: &dyn Engine,
    bytes: &[u8],
    index: u64,
    batch: &mut WriteBatch,
) -> Result<SnapshotData, String> {
    let (snapshot, pairs) = split(bytes)?;
    let group = snapshot.desc.group_id();
    for key in data_keys(engine, &snapshot.desc.range)? {
        batch.delete(Cf::Data, key);
    }
    for pair in decode_pairs(pairs) {
        let (key, value) = pair?;
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
        let (header, streamed) = capture(
            std::sync::Arc::new(source.clone()),
            &desc,
            &TxnRecords::default(),
            &Lease::default(),
            9,
        )
        .expect("capture");
        // Written after the capture: not part of the snapshot.
        let mut b = WriteBatch::new();
        mvcc::put_version(&mut b, b"d", Timestamp(11), Some(b"later"));
        source.write(b, false).expect("write");
        let mut assembler = Assembler::new(&header).expect("header");
        for chunk in streamed.chunks() {
            assembler.add(&chunk.expect("chunk")).expect("add");
        }
        let bytes = assembler.finish();

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
        assert_eq!(
            read(b"d", 12),
            None,
            "writes after the capture do not travel"
        );
        assert_eq!(read(b"y", 10), Some(b"other range".to_vec()));
        assert_eq!(
            read(b"z", 10),
            None,
            "the source's other ranges do not travel"
        );
    }

    fn range_desc(start: &[u8], end: &[u8]) -> ReplicaDescriptor {
        ReplicaDescriptor {
            group: meridian_common::GroupId(3),
            range: KeyRange {
                start: start.to_vec(),
                end: end.to_vec(),
            },
            peers: [1, 2, 3].map(meridian_common::ServerId).to_vec(),
            generation: 0,
        }
    }

    #[test]
    fn data_streams_in_bounded_chunks_and_reassembles_whole() {
        let source = MemEngine::default();
        let value = vec![7u8; 100 << 10];
        let mut b = WriteBatch::new();
        for i in 0..40u32 {
            mvcc::put_version(&mut b, &i.to_be_bytes(), Timestamp(5), Some(&value));
        }
        source.write(b, false).expect("write");
        let desc = range_desc(b"", b"");
        let (header, streamed) = capture(
            std::sync::Arc::new(source),
            &desc,
            &TxnRecords::default(),
            &Lease::default(),
            5,
        )
        .expect("capture");
        let chunks: Vec<Vec<u8>> = streamed.chunks().map(|c| c.expect("chunk")).collect();
        assert!(chunks.len() >= 4, "4 MB of data in {} chunks", chunks.len());
        for c in &chunks {
            assert!(
                c.len() <= CHUNK_BYTES + value.len() + 64,
                "chunk of {}",
                c.len()
            );
        }
        let mut assembler = Assembler::new(&header).expect("header");
        for c in &chunks {
            assembler.add(c).expect("add");
        }
        let whole = assembler.finish();
        let (_, pairs) = split(&whole).expect("split");
        assert_eq!(decode_pairs(pairs).count(), 40);
    }

    #[test]
    fn the_receiver_refuses_foreign_keys_and_malformed_chunks() {
        let desc = range_desc(b"a", b"m");
        let (header, _) = capture(
            std::sync::Arc::new(MemEngine::default()),
            &desc,
            &TxnRecords::default(),
            &Lease::default(),
            1,
        )
        .expect("capture");
        let mut assembler = Assembler::new(&header).expect("header");
        let run = |key: &[u8]| {
            let mut chunk = Vec::new();
            encode_pair(&mut chunk, &mvcc::encode_user_key(key), b"v");
            chunk
        };
        assembler.add(&run(b"c")).expect("a key in the range");
        assert!(assembler.add(&run(b"x")).is_err());
        let cut = run(b"c");
        assert!(assembler.add(&cut[..cut.len() - 1]).is_err());
        assert!(assembler.add(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
        assert!(Assembler::new(b"").is_err());
    }
}
