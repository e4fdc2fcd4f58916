//! A read-write transaction driven by the gateway.
//!
//! Reads go to tablet leaders as they happen and are recorded with the `observed_ts` each scan
//! returned; writes are buffered here and merged into the transaction's own reads. At commit the
//! read ranges and the writes go to the one group involved, whose leader validates that nothing
//! read has changed and commits through Raft (see `crate::tablet`). A transaction that only
//! read commits trivially.
//!
//! Not yet: transactions whose writes or reads span several groups get
//! `StoreError::NotSupported` at commit until two-phase commit lands, and reads of an explicit
//! transaction are not a single snapshot across tablets.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use meridian_proto as pb;
use meridian_sql::store::{StoreError, Transaction};

use super::{Gateway, Route};
use crate::raft::GroupId;

/// Rows fetched per scan RPC.
const PAGE_ROWS: usize = 1000;

/// A transaction's buffered state.
pub struct GatewayTxn {
    gateway: Arc<Gateway>,
    /// Buffered writes: `None` deletes.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Ranges read, per group.
    reads: Vec<(GroupId, pb::ReadRange)>,
    finished: bool,
}

impl GatewayTxn {
    pub fn new(gateway: Arc<Gateway>) -> GatewayTxn {
        GatewayTxn {
            gateway,
            writes: BTreeMap::new(),
            reads: Vec::new(),
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
}

/// The smallest key after `key`.
fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

fn before_end(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

#[async_trait::async_trait]
impl Transaction for GatewayTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        let rows = self.scan(key, &key_successor(key), Some(1)).await?;
        Ok(rows
            .into_iter()
            .find(|(k, _)| k.as_slice() == key)
            .map(|(_, v)| v))
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut cursor = start.to_vec();
        while before_end(&cursor, end) {
            let want = limit.map_or(PAGE_ROWS, |l| {
                l.saturating_sub(out.len()).clamp(1, PAGE_ROWS)
            });
            let (route, resp): (Route, pb::ScanResponse) =
                self.gateway.scan_tablet(&cursor, end, want as u32).await?;
            let piece_end = super::clip_end(&route, end);
            let covered_end = if resp.resume_key.is_empty() {
                piece_end.clone()
            } else {
                resp.resume_key.clone()
            };
            self.reads.push((
                route.group,
                pb::ReadRange {
                    start: cursor.clone(),
                    end: covered_end.clone(),
                    observed_ts: resp.observed_ts,
                },
            ));
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

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    async fn commit(&mut self) -> Result<Option<u64>, StoreError> {
        if self.finished {
            return Err(StoreError::Internal("transaction already finished".into()));
        }
        self.finished = true;
        if self.writes.is_empty() {
            return Ok(None);
        }
        let mut groups = BTreeSet::new();
        let mut route = None;
        for key in self.writes.keys() {
            let r = self.gateway.route(key).await?;
            groups.insert(r.group);
            route.get_or_insert(r);
        }
        for (g, _) in &self.reads {
            groups.insert(*g);
        }
        let Some(route) = route else { return Ok(None) };
        if groups.len() > 1 {
            return Err(StoreError::NotSupported(format!(
                "this transaction touches {} tablets; transactions across tablets (two-phase commit) are not built yet",
                groups.len()
            )));
        }
        let request = pb::CommitRequest {
            group_id: route.group.0,
            read_ranges: self.reads.iter().map(|(_, r)| r.clone()).collect(),
            mutations: std::mem::take(&mut self.writes)
                .into_iter()
                .map(|(key, value)| match value {
                    Some(value) => pb::Mutation {
                        key,
                        value,
                        delete: false,
                    },
                    None => pb::Mutation {
                        key,
                        value: Vec::new(),
                        delete: true,
                    },
                })
                .collect(),
        };
        let ts = self.gateway.commit_group(&route, request).await?;
        Ok(Some(ts))
    }

    async fn rollback(&mut self) {
        self.finished = true;
        self.writes.clear();
        self.reads.clear();
    }
}
