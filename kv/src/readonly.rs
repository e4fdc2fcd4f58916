//! A read-only transaction: lock-free reads of one snapshot.
//!
//! The snapshot timestamp is fixed at the first read, from the [`ReadBound`]:
//! - `Strong`: `TT.now().latest` at the gateway. Every transaction acknowledged before this one
//!   began has a timestamp below it (its commit wait ended before the acknowledgement), so the
//!   snapshot includes it: external consistency without locks.
//! - `At(t)`, `ExactStaleness(d)`: `t`, or `TT.now().latest - d`.
//! - `MaxStaleness(d)`: the freshest timestamp the nearest replica can serve without waiting,
//!   if no older than `d`; else a strong read at the leader.
//!
//! Stale reads go to the nearest replica whose safe time covers the timestamp (one in this
//! gateway's zone first, the leader otherwise); strong reads go to the leader, which can serve
//! a fresh timestamp at once. Either way a read-only transaction never waits for a lock and
//! never blocks a writer; it only waits for transactions prepared below its timestamp to
//! resolve.

use std::sync::Arc;

use crate::error::Error;
use crate::router::Router;
use crate::ReadBound;

/// Rows fetched per scan RPC.
const PAGE_ROWS: u32 = 1000;

/// A read-only transaction (see the module doc).
pub struct ReadOnlyTxn {
    router: Arc<Router>,
    bound: ReadBound,
    read_ts: Option<u64>,
}

impl ReadOnlyTxn {
    pub fn new(router: Arc<Router>, bound: ReadBound) -> ReadOnlyTxn {
        ReadOnlyTxn {
            router,
            bound,
            read_ts: None,
        }
    }

    /// The timestamp to read at, and the staleness bound if it is still to be chosen by a
    /// replica.
    fn choose(&self) -> (u64, Option<std::time::Duration>) {
        if let Some(ts) = self.read_ts {
            return (ts, None);
        }
        let now = self.router.tt.now();
        match self.bound {
            ReadBound::Strong => (now.latest.0, None),
            ReadBound::At(ts) => (ts, None),
            ReadBound::ExactStaleness(d) => {
                (now.latest.0.saturating_sub(d.as_nanos() as u64), None)
            }
            ReadBound::MaxStaleness(d) => (0, Some(d)),
        }
    }
}

impl ReadOnlyTxn {
    /// The snapshot's timestamp, once the first read chose it.
    pub fn read_ts(&self) -> Option<u64> {
        self.read_ts
    }

    /// The value at `key` in the snapshot.
    pub async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let rows = self
            .scan(key, &crate::txn::key_successor(key), Some(1))
            .await?;
        Ok(crate::txn::value_at(rows, key))
    }

    /// Rows of the snapshot in `[start, end)` (empty end = unbounded), at most `limit`.
    pub async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        let mut cursor = start.to_vec();
        while end.is_empty() || cursor.as_slice() < end {
            let want = limit.map_or(PAGE_ROWS, |l| {
                (l.saturating_sub(out.len()) as u32).clamp(1, PAGE_ROWS)
            });
            let (read_ts, staleness) = self.choose();
            let nearby = !matches!(self.bound, ReadBound::Strong);
            let (route, resp) = self
                .router
                .scan_snapshot(&cursor, end, want, read_ts, staleness, nearby)
                .await?;
            if resp.read_ts == 0 {
                return Err(Error::Internal(
                    "a snapshot read came back without its timestamp".into(),
                ));
            }
            match self.read_ts {
                None => self.read_ts = Some(resp.read_ts),
                Some(ts) if ts != resp.read_ts => {
                    return Err(Error::Internal(format!(
                        "snapshot read at {} answered at {ts}",
                        resp.read_ts
                    )))
                }
                Some(_) => {}
            }
            out.extend(resp.rows.into_iter().map(|r| (r.key, r.value)));
            if let Some(l) = limit {
                if out.len() >= l {
                    out.truncate(l);
                    break;
                }
            }
            let next = if resp.resume_key.is_empty() {
                route.range.clip_end(end)
            } else {
                resp.resume_key
            };
            if next.is_empty() {
                break;
            }
            cursor = next;
        }
        Ok(out)
    }
}
