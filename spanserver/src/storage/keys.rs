//! Key layout of the `Raft` and `Meta` column families.
//!
//! `Raft` CF, per group (`g` = group id, 8 bytes big-endian):
//! - `g 0x01 index(8)` → a raft-rs `Entry`, protobuf-encoded;
//! - `g 0x02` → the group's `HardState`;
//! - `g 0x03` → the applied index and the largest commit timestamp applied (8 bytes big-endian
//!   each), written atomically with the applied entries' effects;
//! - `g 0x04` → the group's leader lease as last applied (`tablet::Lease`);
//! - `g 0x05` → index and term (8 bytes big-endian each) of the last log entry compacted away or
//!   replaced by a snapshot: the log resumes after it;
//! - `g 0x06` → the group's configuration (a raft-rs `ConfState`) as of the applied index, once
//!   it differs from the initial voters (membership changes, snapshots).
//!
//! `Meta` CF:
//! - `0x01 g` → the replica's descriptor (range and peers), one per hosted replica;
//! - `0x02 g txn(8)` → a two-phase commit participant's prepare record (`PreparedRecord`);
//! - `0x03 g txn(8)` → a two-phase commit coordinator's decision (`DecisionRecord`).
//!
//! Transaction records are written in the same batch as the applied entries that create them.

use meridian_common::GroupId;

const ENTRY: u8 = 0x01;
const HARD_STATE: u8 = 0x02;
const APPLIED: u8 = 0x03;
const LEASE: u8 = 0x04;
const TRUNCATED: u8 = 0x05;
const CONF_STATE: u8 = 0x06;
const REPLICA: u8 = 0x01;
const PREPARED: u8 = 0x02;
const DECISION: u8 = 0x03;

fn group_prefix(group: GroupId, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.extend_from_slice(&group.0.to_be_bytes());
    k.push(kind);
    k
}

/// The key of entry `index` in `group`'s log.
pub fn entry(group: GroupId, index: u64) -> Vec<u8> {
    let mut k = group_prefix(group, ENTRY);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The first key after every entry of `group`'s log.
pub fn entries_end(group: GroupId) -> Vec<u8> {
    group_prefix(group, ENTRY + 1)
}

pub fn hard_state(group: GroupId) -> Vec<u8> {
    group_prefix(group, HARD_STATE)
}

pub fn applied_index(group: GroupId) -> Vec<u8> {
    group_prefix(group, APPLIED)
}

pub fn lease(group: GroupId) -> Vec<u8> {
    group_prefix(group, LEASE)
}

pub fn truncated(group: GroupId) -> Vec<u8> {
    group_prefix(group, TRUNCATED)
}

pub fn conf_state(group: GroupId) -> Vec<u8> {
    group_prefix(group, CONF_STATE)
}

/// Every key of `group` in the `Raft` column family.
pub fn group_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    let start = group.0.to_be_bytes().to_vec();
    let end = match group.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 9],
    };
    (start, end)
}

/// The key of a hosted replica's descriptor in the `Meta` CF.
pub fn replica(group: GroupId) -> Vec<u8> {
    let mut k = vec![REPLICA];
    k.extend_from_slice(&group.0.to_be_bytes());
    k
}

/// The range of every replica descriptor key.
pub fn replicas_range() -> (Vec<u8>, Vec<u8>) {
    (vec![REPLICA], vec![REPLICA + 1])
}

fn txn_record(kind: u8, group: GroupId, txn: u64) -> Vec<u8> {
    let mut k = vec![kind];
    k.extend_from_slice(&group.0.to_be_bytes());
    k.extend_from_slice(&txn.to_be_bytes());
    k
}

fn txn_records_range(kind: u8, group: GroupId) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![kind];
    start.extend_from_slice(&group.0.to_be_bytes());
    let mut end = start.clone();
    end.extend_from_slice(&[0xff; 9]);
    (start, end)
}

/// The key of `txn`'s prepare record in `group`.
pub fn prepared(group: GroupId, txn: u64) -> Vec<u8> {
    txn_record(PREPARED, group, txn)
}

pub fn prepared_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    txn_records_range(PREPARED, group)
}

/// The key of `txn`'s decision record in coordinator `group`.
pub fn decision(group: GroupId, txn: u64) -> Vec<u8> {
    txn_record(DECISION, group, txn)
}

pub fn decisions_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    txn_records_range(DECISION, group)
}

/// Decodes an 8-byte big-endian integer stored by this module.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}
